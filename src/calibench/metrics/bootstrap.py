"""Bootstrap uncertainty: percentile CIs over items and paired deltas between two runs.

A metric on a few hundred items is noisy; comparing a base and an aligned model on the same items is
far less noisy if the resampling is paired (the same item indices for both runs). Everything here is
deterministic given ``seed``.

Resampling (``calibench.metrics.resample``): ``resample_indices(n, n_resamples, seed)`` draws the item
indices of all resamples from one ``numpy.random.default_rng(seed)`` in bounded row chunks, so the same
``(n, n_resamples, seed)`` always gives the same resamples. A registered metric (a name, its function,
a ``functools.partial`` of it, or a ``MetricSpec``) gets its vectorised replicates from the registry
(``MetricSpec.replicates``, see ``calibench.metrics.replicates``); any other callable, or options the
vectorised path does not handle, runs once per resample. Resamples where the metric is undefined
(NaN, e.g. AUROC on a resample with one outcome) are left out of the percentiles.

Intervals (``calibench.metrics.intervals``): ``ci="bca"`` (the default) is the bias-corrected and
accelerated interval, widened and marked (``CI.widened``) in the rare case it would exclude the
estimate; ``ci="percentile"`` is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the
replicates (numpy's linear interpolation). The estimate is the metric on the full data, not the
replicate mean.

Paired p-value (two-sided, for H0: delta = 0), from the same replicates ``d*`` of
``metric(b) - metric(a)``: ``L = (#{d* < 0} + #{d* = 0} / 2) / R``, ``p = min(1, 2 min(L, 1 - L))``
(``intervals.p_value``; its relation to the intervals is documented there).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from calibench.errors import CalibenchError
from calibench.metrics import intervals
from calibench.metrics._validate import top_label
from calibench.metrics.registry import MetricSpec, resolve
from calibench.metrics.resample import (
    CHUNK_ITEMS,
    CountChunk,
    Kernel,
    Layout,
    check_n_resamples,
    replicate_all,
    resample_indices,
)

__all__ = [
    "CHUNK_ITEMS",
    "CI",
    "PairedDelta",
    "bootstrap_ci",
    "bootstrap_replicates",
    "delta_from_replicates",
    "metric_kernel",
    "paired_delta",
    "percentile_interval",
    "resample_indices",
]

Metric = Callable[..., float] | str | MetricSpec


@dataclass(frozen=True)
class CI:
    """A point estimate with its bootstrap interval (``widened``: BCa's was stretched to reach it)."""

    estimate: float
    low: float
    high: float
    widened: bool = False


@dataclass(frozen=True)
class PairedDelta:
    """``metric(b) - metric(a)`` on matched items, its paired bootstrap CI and two-sided p-value."""

    delta: float
    low: float
    high: float
    p_value: float
    n: int
    widened: bool = False


def _as_arrays(arrays: tuple[Any, ...]) -> list[np.ndarray]:
    """The per-item arrays, checked to be non-empty and of one length along their first axis."""
    if not arrays:
        raise CalibenchError("bootstrap needs at least one array of per-item values")
    data = [np.asarray(a) for a in arrays]
    n = data[0].shape[0] if data[0].ndim else 0
    for i, a in enumerate(data[1:], start=1):
        if a.ndim == 0 or a.shape[0] != n:
            raise CalibenchError(f"array 0 has {n} items but array {i} has {a.shape[0] if a.ndim else 0}")
    if n == 0:
        raise CalibenchError("cannot bootstrap empty input")
    return data


def _loop_kernel(func: Callable[..., float], data: list[np.ndarray], options: Mapping[str, Any]) -> Kernel:
    """Any metric the registry cannot vectorise: run it on each resample's items."""

    def kernel(chunk: CountChunk) -> np.ndarray:
        return np.array([func(*(a[sample] for a in data), **options) for sample in chunk.drawn_items], dtype=np.float64)

    return kernel


def metric_kernel(metric: Metric, arrays: Sequence[Any], layout: Layout, **kwargs: Any) -> Kernel:
    """The chunk kernel of ``metric`` on ``arrays``: its registry builder's, else a loop over resamples.

    ``layout`` must be ``Layout.for_top`` of the group's validated (confidence, correct) when the
    metric is top-label (any layout of the right size otherwise).
    """
    resolved = resolve(metric, kwargs)
    data = _as_arrays(tuple(arrays))
    if data[0].shape[0] != layout.n:
        raise CalibenchError(f"the arrays have {data[0].shape[0]} items but the layout has {layout.n}")
    spec = resolved.spec
    if spec is not None and spec.replicates is not None and len(data) == len(spec.columns):
        kernel = spec.replicates(spec.inputs.validate(*data), resolved.options, layout)
        if kernel is not None:
            return kernel
    return _loop_kernel(resolved.function, data, resolved.options)


def bootstrap_replicates(
    metric: Metric, *arrays: Any, n_resamples: int = 1000, seed: int = 0, **kwargs: Any
) -> np.ndarray:
    """The metric on each of ``n_resamples`` item resamples (the resamples of ``resample_indices``).

    All ``arrays`` are resampled together along their first axis (paired: one index set per resample).
    """
    spec = resolve(metric, kwargs).spec
    n_resamples = check_n_resamples(n_resamples)
    data = _as_arrays(arrays)
    if spec is not None and spec.kind == "top" and len(data) == 2:
        layout = Layout.for_top(*top_label(*data))
    else:
        layout = Layout.identity(data[0].shape[0])
    kernel = metric_kernel(metric, data, layout, **kwargs)
    return replicate_all(layout, n_resamples, seed, [kernel])[0]


def percentile_interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    """The percentile interval of the replicates at ``level``, leaving out undefined (NaN) ones."""
    finite = replicates[~np.isnan(replicates)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise CalibenchError(f"level must be in (0, 1), got {level!r}")
    return float(level)


def bootstrap_ci(
    metric: Callable[..., float] | str,
    *arrays: Any,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    ci: str = intervals.DEFAULT_CI,
    **kwargs: Any,
) -> CI:
    """Bootstrap CI of ``metric(*arrays, **kwargs)`` over items: BCa (``ci="bca"``) or percentile.

    >>> from calibench.metrics.calibration import ece
    >>> ci = bootstrap_ci(ece, [0.9, 0.8, 0.7, 0.6] * 25, [1, 1, 0, 1] * 25, n_resamples=200)
    >>> ci.low <= ci.estimate <= ci.high
    True
    """
    level, ci = _check_level(level), intervals.check_ci(ci)
    resolved = resolve(metric, kwargs)
    estimate = float(resolved.function(*arrays, **resolved.options))
    replicates = bootstrap_replicates(metric, *arrays, n_resamples=n_resamples, seed=seed, **kwargs)
    accel = 0.0
    if ci == "bca":
        accel = intervals.jackknife_acceleration(lambda *x: resolved.function(*x, **resolved.options), arrays)
    found = intervals.interval(replicates, estimate, level, ci, accel)
    return CI(estimate, found.low, found.high, found.widened)


def _columns_for(spec: MetricSpec | None, func: Callable[..., float]) -> tuple[str, ...]:
    """Record columns the metric takes, from its registry entry."""
    if spec is None:
        raise CalibenchError(
            f"paired_delta cannot tell which record columns metric {getattr(func, '__name__', func)!r} takes: "
            "pass a metric name, a registered metric function, or a calibench.metrics.MetricSpec"
        )
    return spec.columns


def _column(run: pd.DataFrame | Mapping[str, Any], name: str, which: str) -> np.ndarray:
    if name == "label" and "label" not in run and "labels" in run:
        name = "labels"
    if name not in run:
        raise CalibenchError(f"run {which} has no '{name}' column")
    values = run[name]
    if name == "probs":
        items = list(values)
        if any(p is None for p in items):
            raise CalibenchError(f"run {which}: some rows have no probs")
        try:
            return np.asarray(np.stack([np.asarray(p, dtype=float) for p in items]))
        except ValueError as exc:
            raise CalibenchError(f"run {which}: rows have different numbers of classes") from exc
    return np.asarray(values.to_numpy() if isinstance(values, pd.Series) else values)


def _item_ids(run: pd.DataFrame | Mapping[str, Any], which: str) -> pd.Index:
    if "item_id" not in run:
        raise CalibenchError(f"run {which} has no 'item_id' column to match items on")
    ids = pd.Index(np.asarray(run["item_id"]).astype(str))
    if ids.has_duplicates:
        dup = ids[ids.duplicated()]
        raise CalibenchError(f"run {which} has {dup.size} duplicate item_id(s), e.g. {dup[0]!r}")
    return ids


def paired_delta(
    metric: Callable[..., float] | str,
    a: pd.DataFrame | Mapping[str, Any],
    b: pd.DataFrame | Mapping[str, Any],
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    ci: str = intervals.DEFAULT_CI,
    **kwargs: Any,
) -> PairedDelta:
    """``metric(b) - metric(a)`` on the items both runs share, with a paired bootstrap CI and p-value.

    ``a`` and ``b`` are record tables (or dicts of arrays) with an ``item_id`` column; both must hold
    exactly the same items (in any order). Each resample takes the same items from both runs.
    """
    level, ci = _check_level(level), intervals.check_ci(ci)
    resolved = resolve(metric, kwargs)
    func, options = resolved.function, resolved.options
    ids_a, ids_b = _item_ids(a, "a"), _item_ids(b, "b")
    only_a, only_b = ids_a.difference(ids_b), ids_b.difference(ids_a)
    if only_a.size or only_b.size:
        example = (only_a if only_a.size else only_b)[0]
        raise CalibenchError(
            f"runs a and b must score the same items: {only_a.size} item_id(s) only in a, "
            f"{only_b.size} only in b (e.g. {example!r})"
        )
    order = ids_b.get_indexer(ids_a)  # row of b for each row of a
    columns = _columns_for(resolved.spec, func)
    arrays_a = [_column(a, col, "a") for col in columns]
    arrays_b = [_column(b, col, "b")[order] for col in columns]
    rep_a = bootstrap_replicates(metric, *arrays_a, n_resamples=n_resamples, seed=seed, **kwargs)
    rep_b = bootstrap_replicates(metric, *arrays_b, n_resamples=n_resamples, seed=seed, **kwargs)
    return delta_from_replicates(functools.partial(func, **options), arrays_a, arrays_b, rep_a, rep_b,
                                 level=level, ci=ci)


def delta_from_replicates(func: Callable[..., float], arrays_a: Sequence[Any], arrays_b: Sequence[Any],
                          rep_a: np.ndarray, rep_b: np.ndarray, *, level: float, ci: str,
                          estimates: tuple[float, float] | None = None) -> PairedDelta:
    """``func(b) - func(a)`` with the interval and p-value of paired replicates (the same resamples'
    items from both runs, ``arrays_b`` in the item order of ``arrays_a``). ``estimates``: ``(func(a),
    func(b))`` where the caller has them already."""
    est_a, est_b = estimates if estimates is not None else (float(func(*arrays_a)), float(func(*arrays_b)))
    delta = est_b - est_a
    replicates = rep_b - rep_a
    accel = 0.0
    if ci == "bca":
        k = len(arrays_a)
        accel = intervals.jackknife_acceleration(
            lambda *x: float(func(*x[k:])) - float(func(*x[:k])), [*arrays_a, *arrays_b])
    found = intervals.interval(replicates, delta, level, ci, accel)
    n = int(np.asarray(arrays_a[0]).shape[0])
    return PairedDelta(delta, found.low, found.high, intervals.p_value(replicates), n, found.widened)
