"""``summarize``: every registered metric, per (task, method), with bootstrap CIs.

Which metrics exist, what each takes and which options it accepts come from the registry
(:data:`calibench.metrics.registry.METRICS`); ``METRICS`` and ``metric_function`` are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import numpy as np
import pandas as pd

from calibench.errors import CalibenchError
from calibench.metrics._validate import as_n_bins
from calibench.metrics.binning import check_binning
from calibench.metrics.bootstrap import bootstrap_ci
from calibench.metrics.registry import METRICS, group_inputs, metric_function
from calibench.records import COLUMNS, normalize, probs_matrix

__all__ = ["METRICS", "SUMMARY_COLUMNS", "metric_function", "summarize"]

SUMMARY_COLUMNS: tuple[str, ...] = ("task", "method", "metric", "estimate", "low", "high", "n")


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
        inputs = group_inputs(group, probs_matrix(group))
        for name, spec in METRICS.items():
            arrays = inputs[spec.kind]
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
