"""``summarize``: every registered metric, per (task, method), with bootstrap CIs.

Which metrics exist, what each takes and which options it accepts come from the registry
(:data:`calibench.metrics.registry.METRICS`); ``METRICS`` and ``metric_function`` are re-exported here.
``summarize_inputs`` is the same for one group's arrays already in memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from calibench.errors import CalibenchError
from calibench.metrics import intervals
from calibench.metrics._validate import as_n_bins, top_label
from calibench.metrics.binning import check_binning
from calibench.metrics.bootstrap import metric_kernel
from calibench.metrics.registry import METRICS, MetricSpec, group_inputs, metric_function, padded_probs
from calibench.metrics.resample import Layout, replicate_all
from calibench.records import COLUMNS, normalize

__all__ = ["METRICS", "SUMMARY_COLUMNS", "metric_function", "summarize", "summarize_inputs"]

SUMMARY_COLUMNS: tuple[str, ...] = ("task", "method", "metric", "estimate", "low", "high", "n")


def _check_options(n_bins: Any, binning: Any, n_resamples: Any, level: Any) -> tuple[int, str, int]:
    n_bins = as_n_bins(n_bins)
    binning = check_binning(binning)
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 0:
        raise CalibenchError(f"n_resamples must be a non-negative integer, got {n_resamples!r}")
    if not 0.0 < level < 1.0:
        raise CalibenchError(f"level must be in (0, 1), got {level!r}")
    return n_bins, binning, int(n_resamples)


def summarize_inputs(
    inputs: Mapping[str, tuple[Any, ...] | None],
    *,
    n_bins: int = 10,
    binning: str = "width",
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    no_bootstrap: Collection[str] = (),
    ci: str = intervals.DEFAULT_CI,
) -> list[dict[str, Any]]:
    """Every applicable metric of one group, from its inputs by kind (``registry.group_inputs``).

    Returns ``{"metric", "estimate", "low", "high", "widened"}`` per metric, in ``METRICS`` order
    (``ci`` and ``widened`` as in :mod:`calibench.metrics.intervals`). The group is
    sorted once and every metric's replicates come from one stream of resample chunks (the same for
    every metric), so the bootstrap of all metrics together costs a few passes over the items per
    resample. The draws are ``resample_positions(n, n_resamples, seed)`` in the group's sorted order
    (``replicate_all(..., paired=False)``): a group's CIs need no pairing with another group's, and
    positions are counted without a gather. ``bootstrap_ci`` draws items (``resample_indices``), so its
    CIs differ from these by bootstrap noise only.
    """
    n_bins, binning, n_resamples = _check_options(n_bins, binning, n_resamples, level)
    ci = intervals.check_ci(ci)
    chosen = [(name, spec, metric_function(name, n_bins=n_bins, binning=binning)) for name, spec in METRICS.items()
              if inputs.get(spec.kind) is not None]
    results = {name: {"metric": name, "estimate": float(fn(*inputs[spec.kind])), "low": math.nan, "high": math.nan,
                      "widened": False} for name, spec, fn in chosen}
    resampled = [(name, spec, fn) for name, spec, fn in chosen if n_resamples > 0 and name not in no_bootstrap]
    if resampled:
        plan = ResamplingPlan(inputs, [(spec, fn) for _, spec, fn in resampled])
        replicates = replicate_all(plan.layout, n_resamples, seed, plan.kernels, paired=False)
        for (name, _, fn), arrays, reps in zip(resampled, plan.arrays, replicates, strict=True):
            accel = intervals.jackknife_acceleration(fn, arrays) if ci == "bca" else 0.0
            found = intervals.interval(reps, results[name]["estimate"], level, ci, accel)
            results[name].update(low=found.low, high=found.high, widened=found.widened)
    return list(results.values())


class ResamplingPlan:
    """One group's items sorted once (``layout``) and each metric's chunk kernel on it.

    ``arrays``: the inputs each metric is computed from (top-label ones validated, as the kernels see
    them). Shared by ``summarize_inputs`` and ``compare``, which resamples two runs' plans together.
    """

    def __init__(self, inputs: Mapping[str, tuple[Any, ...] | None],
                 metrics: list[tuple[MetricSpec, Callable[..., float]]]) -> None:
        top = inputs.get("top")
        if top is None:
            raise CalibenchError("summarize needs the confidence and correct of every item")
        validated = top_label(*top)
        self.layout = Layout.for_top(*validated)
        self.arrays: list[tuple[Any, ...]] = []
        for spec, _ in metrics:
            arrays = validated if spec.kind == "top" else inputs[spec.kind]
            if arrays is None:
                raise CalibenchError(f"no {spec.kind} inputs for a metric that needs them")
            self.arrays.append(arrays)
        self.kernels = [metric_kernel(fn, arrays, self.layout) for (_, fn), arrays in zip(metrics, self.arrays,
                                                                                           strict=True)]


def summarize(
    records: pd.DataFrame,
    *,
    n_bins: int = 10,
    binning: str = "width",
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    no_bootstrap: Collection[str] = (),
    ci: str = intervals.DEFAULT_CI,
) -> pd.DataFrame:
    """Every applicable metric per (task, method) with bootstrap CIs over items (BCa by default).

    Returns one row per (task, method) x metric with columns ``task, method, metric, estimate, low,
    high, n`` (groups in order of first appearance, metrics in ``METRICS`` order). Class-wise metrics
    (sce, brier, nll) appear only for groups whose every row has probs and a label; items with fewer
    options than others are zero-padded (``registry.padded_probs``). ``n_resamples=0`` skips the bootstrap (low and high are NaN); so does naming a metric in
    ``no_bootstrap`` (for callers that want only the estimate of an expensive metric). A metric that is undefined
    for a group (auroc when every item is correct) has a NaN estimate. ``ci`` is "bca" or "percentile"
    (:mod:`calibench.metrics.intervals`); the rows whose BCa interval was widened to reach the estimate
    are listed in ``result.attrs["widened"]`` as (task, method, metric).
    """
    n_bins, binning, n_resamples = _check_options(n_bins, binning, n_resamples, level)
    if not set(COLUMNS) <= set(records.columns):
        records = normalize(records, source="<records>")
    if len(records) == 0:
        raise CalibenchError("records is empty")
    rows: list[dict[str, Any]] = []
    widened: list[tuple[str, str, str]] = []
    for (task, method), group in _task_method_groups(records):
        inputs = group_inputs(group, padded_probs(group))
        for result in summarize_inputs(inputs, n_bins=n_bins, binning=binning, n_resamples=n_resamples, seed=seed,
                                       level=level, no_bootstrap=no_bootstrap, ci=ci):
            if result.pop("widened"):
                widened.append((str(task), str(method), str(result["metric"])))
            rows.append({"task": task, "method": method, **result, "n": len(group)})
    out = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    out.attrs["widened"] = widened
    return out


def _task_method_groups(records: pd.DataFrame) -> Iterator[tuple[tuple[Any, Any], pd.DataFrame]]:
    """(task, method) groups in order of first appearance. One file usually holds one task x method:
    then the frame itself is the group, not a copy of every column (a groupby sorts a copy)."""
    task, method = records["task"], records["method"]
    if (task == task.iloc[0]).all() and (method == method.iloc[0]).all():
        yield (task.iloc[0], method.iloc[0]), records
        return
    yield from records.groupby(["task", "method"], sort=False)
