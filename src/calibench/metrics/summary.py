"""The metric registry and ``summarize``: every metric, per (task, method), with bootstrap CIs.

``METRICS`` maps a metric name to ``(function, kind)``; the kind says which record columns the
function takes, so callers (``summarize``, the CLI, ``paired_delta`` with a metric name) never
special-case a metric:

- ``"correct"``: ``f(correct)``
- ``"top"``: ``f(confidence, correct)`` (top-label; every record has these)
- ``"probs"``: ``f(probs, labels)`` (class-wise; only where every record of a group has probs and a
  label over the same number of classes)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection
from typing import Any

import numpy as np
import pandas as pd

from calibench.errors import CalibenchError
from calibench.metrics._validate import as_n_bins
from calibench.metrics.binning import check_binning
from calibench.metrics.bootstrap import bootstrap_ci
from calibench.metrics.calibration import ace, ece, mce, rmsce, sce
from calibench.metrics.scores import accuracy, aurc, auroc, brier, brier_top, nll
from calibench.metrics.smooth import smooth_ece
from calibench.records import COLUMNS, normalize, probs_matrix

METRICS: dict[str, tuple[Callable[..., float], str]] = {
    "accuracy": (accuracy, "correct"),
    "ece": (ece, "top"),
    "ace": (ace, "top"),
    "mce": (mce, "top"),
    "rmsce": (rmsce, "top"),
    "sce": (sce, "probs"),
    "brier": (brier, "probs"),
    "brier_top": (brier_top, "top"),
    "nll": (nll, "probs"),
    "auroc": (auroc, "top"),
    "aurc": (aurc, "top"),
    "smooth_ece": (smooth_ece, "top"),
}

# Which options each binned metric accepts (ace is always equal-mass, sce always equal-width).
_BIN_OPTIONS: dict[str, tuple[str, ...]] = {
    "ece": ("n_bins", "binning"),
    "mce": ("n_bins", "binning"),
    "rmsce": ("n_bins", "binning"),
    "ace": ("n_bins",),
    "sce": ("n_bins",),
}

SUMMARY_COLUMNS: tuple[str, ...] = ("task", "method", "metric", "estimate", "low", "high", "n")


def metric_function(name: str, *, n_bins: int = 10, binning: str = "width") -> Callable[..., float]:
    """The registered metric ``name`` with the binning options it accepts bound."""
    if name not in METRICS:
        raise CalibenchError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    fn = METRICS[name][0]
    options = {"n_bins": n_bins, "binning": binning}
    bound = {key: options[key] for key in _BIN_OPTIONS.get(name, ())}
    return functools.partial(fn, **bound) if bound else fn


def _arrays(
    kind: str, group: pd.DataFrame, probs: tuple[np.ndarray, np.ndarray] | None
) -> tuple[Any, ...] | None:
    """The inputs a metric of ``kind`` takes from a group, or None where the group lacks them."""
    if kind == "correct":
        return (group["correct"].to_numpy(),)
    if kind == "top":
        return group["confidence"].to_numpy(dtype=np.float64), group["correct"].to_numpy()
    return probs


def summarize(
    records: pd.DataFrame,
    *,
    n_bins: int = 10,
    binning: str = "width",
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    no_bootstrap: Collection[str] = (),
) -> pd.DataFrame:
    """Every applicable metric per (task, method) with percentile-bootstrap CIs over items.

    Returns one row per (task, method) x metric with columns ``task, method, metric, estimate, low,
    high, n`` (groups in order of first appearance, metrics in ``METRICS`` order). Class-wise metrics
    (sce, brier, nll) appear only for groups whose every row has probs and a label with one class
    count. ``n_resamples=0`` skips the bootstrap (low and high are NaN); so does naming a metric in
    ``no_bootstrap`` (for callers that want only the estimate of an expensive metric). A metric that is undefined
    for a group (auroc when every item is correct) has a NaN estimate.
    """
    n_bins = as_n_bins(n_bins)
    binning = check_binning(binning)
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 0:
        raise CalibenchError(f"n_resamples must be a non-negative integer, got {n_resamples!r}")
    if not 0.0 < level < 1.0:
        raise CalibenchError(f"level must be in (0, 1), got {level!r}")
    if not set(COLUMNS) <= set(records.columns):
        records = normalize(records, source="<records>")
    if len(records) == 0:
        raise CalibenchError("records is empty")
    rows: list[dict[str, Any]] = []
    for (task, method), group in records.groupby(["task", "method"], sort=False):
        probs = probs_matrix(group)
        for name, (_, kind) in METRICS.items():
            arrays = _arrays(kind, group, probs)
            if arrays is None:
                continue
            fn = metric_function(name, n_bins=n_bins, binning=binning)
            if n_resamples == 0 or name in no_bootstrap:
                estimate, low, high = fn(*arrays), math.nan, math.nan
            else:
                ci = bootstrap_ci(fn, *arrays, n_resamples=int(n_resamples), level=level, seed=seed)
                estimate, low, high = ci.estimate, ci.low, ci.high
            rows.append(
                {
                    "task": task,
                    "method": method,
                    "metric": name,
                    "estimate": float(estimate),
                    "low": float(low),
                    "high": float(high),
                    "n": len(group),
                }
            )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
