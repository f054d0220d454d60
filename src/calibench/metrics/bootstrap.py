"""Bootstrap uncertainty: percentile CIs over items and paired deltas between two runs.

A metric on a few hundred items is noisy; comparing a base and an aligned model on the same items is
far less noisy if the resampling is paired (the same item indices for both runs). Everything here is
deterministic given ``seed``.

Resampling. ``resample_indices(n, n_resamples, seed)`` draws the item indices of all resamples from one
``numpy.random.default_rng(seed)`` in row chunks of about a million indices (bounded memory); the chunk
size depends only on ``n``, so the same ``(n, n_resamples, seed)`` always gives the same resamples.

Vectorised metrics (no Python loop over resamples; one ``bincount``/``mean`` per chunk):

- ``ece``/``mce``/``rmsce`` with equal-width bins (any ``n_bins``/``norm``): an item's bin does not
  change under resampling, so each resample's per-bin sum of ``c - y`` (and, for l2/max, count) comes
  from one ``np.bincount`` over the keys ``resample * n_bins + bin``.
- ``ace`` and ``binning="mass"``: equal-mass bins move with the resample but depend only on the counts
  per distinct confidence value, so no resample is sorted (see ``_mass_replicates``).
- ``accuracy``, ``brier_top``, ``brier``, ``nll``: means of a per-item loss, averaged per resample row.
- ``smooth_ece``: all resamples are gridded by one ``bincount``; the bandwidth bisection runs in lock
  step and smooths all resamples that try the same bandwidth in one batched FFT
  (``smooth.smooth_ece_replicates``).

- ``sce``: the l1 ECE path per class column (against ``labels == k``) on the same resamples.
- ``auroc``, ``aurc``: one ``bincount`` per chunk over ``(resample, distinct confidence, correct)``, then
  cumulative sums over the confidence values.

Any other callable (a user metric, a ``smooth_ece`` with options) runs once per resample. Resamples where the metric
is undefined (NaN, e.g. AUROC on a resample with one outcome) are left out of the percentiles.

Percentile CI: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the replicates (numpy's
linear interpolation); the estimate is the metric on the full data, not the replicate mean.

Paired p-value (two-sided, for H0: delta = 0): with replicates ``d*`` of ``metric(b) - metric(a)``,
``p = min(1, 2 * min((1 + #{d* <= 0}) / (1 + R), (1 + #{d* >= 0}) / (1 + R)))``. It is the smallest
``1 - level`` at which the percentile CI excludes 0, with the usual +1 so that p is never exactly 0.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from calibench.errors import CalibenchError

CHUNK_ITEMS = 1 << 20  # indices drawn per chunk: 4 MB of int32 (+ gathered values) stays near cache

# record column for each metric argument name (a metric's signature says what it needs)
_ARG_COLUMNS: dict[str, str] = {
    "confidence": "confidence",
    "correct": "correct",
    "probs": "probs",
    "labels": "label",
    "label": "label",
}


@dataclass(frozen=True)
class CI:
    """A point estimate with its percentile bootstrap interval."""

    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class PairedDelta:
    """``metric(b) - metric(a)`` on matched items, its paired bootstrap CI and two-sided p-value."""

    delta: float
    low: float
    high: float
    p_value: float
    n: int


def _check_n_resamples(n_resamples: Any) -> int:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise CalibenchError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    return int(n_resamples)


def resample_indices(n: int, n_resamples: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Yield (rows, n) arrays of item indices drawn with replacement, ``n_resamples`` rows in all."""
    if n < 1:
        raise CalibenchError("cannot bootstrap empty input")
    n_resamples = _check_n_resamples(n_resamples)
    rng = np.random.default_rng(seed)
    dtype = np.int32 if n < 2**31 else np.int64
    rows = max(1, CHUNK_ITEMS // n)
    for start in range(0, n_resamples, rows):
        yield rng.integers(0, n, size=(min(rows, n_resamples - start), n), dtype=dtype)


def _resolve(
    metric: Callable[..., float] | str, kwargs: Mapping[str, Any]
) -> tuple[Callable[..., float], dict]:
    """The plain metric function and its keyword options (names and ``functools.partial`` unwrapped)."""
    if isinstance(metric, str):
        from calibench.metrics import METRICS

        if metric not in METRICS:
            raise CalibenchError(f"unknown metric {metric!r}; choose from {', '.join(sorted(METRICS))}")
        metric = METRICS[metric][0]
    options: dict[str, Any] = {}
    while isinstance(metric, functools.partial):
        if metric.args:
            break
        options = {**metric.keywords, **options}
        metric = metric.func
    if not callable(metric):
        raise CalibenchError(f"metric must be a callable or a metric name, got {metric!r}")
    return metric, {**options, **kwargs}


def _per_item_loss(func: Callable[..., float], arrays: tuple[Any, ...]) -> np.ndarray | None:
    """Per-item values whose mean is ``func(*arrays)``, for the mean-type metrics; else None."""
    from calibench.metrics import _validate, scores

    if len(arrays) != (1 if func is scores.accuracy else 2):
        return None  # wrong arity: let the metric itself raise
    if func is scores.accuracy:
        return _validate.as_correct(arrays[0]).astype(np.float64)
    if func is scores.brier_top:
        c, y = _validate.top_label(*arrays)
        return (c - y) ** 2
    if func is scores.brier or func is scores.nll:
        p, labels = _validate.class_wise(*arrays)
        gold = p[np.arange(p.shape[0]), labels]
        if func is scores.nll:
            return 0.0 - np.log(np.maximum(gold, scores.NLL_CLIP))  # 0.0 - x: no "-0.0" when perfect
        return np.einsum("ij,ij->i", p, p) - 2.0 * gold + 1.0
    return None


def _binned_options(func: Callable[..., float], kwargs: Mapping[str, Any]) -> tuple[Any, str, str] | None:
    """(n_bins, norm, binning) if ``func(**kwargs)`` is a binned top-label calibration error, else None."""
    from calibench.metrics import calibration

    if func is calibration.ece:
        norm, binning, accepted = (
            kwargs.get("norm", "l1"),
            kwargs.get("binning", "width"),
            {"n_bins", "binning", "norm"},
        )
    elif func is calibration.ace:
        norm, binning, accepted = kwargs.get("norm", "l1"), "mass", {"n_bins", "norm"}
    elif func is calibration.mce or func is calibration.rmsce:
        norm = "max" if func is calibration.mce else "l2"
        binning, accepted = kwargs.get("binning", "width"), {"n_bins", "binning"}
    else:
        return None
    if not set(kwargs) <= accepted or binning not in ("width", "mass") or norm not in calibration.NORMS:
        return None  # let the metric itself reject bad options with its own message
    return kwargs.get("n_bins", 10), norm, binning


def _binned_replicates(
    c: np.ndarray, y: np.ndarray, n_bins: int, norm: str, n_resamples: int, seed: int
) -> np.ndarray:
    """Equal-width binned calibration error of every resample from per-(resample, bin) sums.

    For the l1 norm only the per-bin residual sum matters (ECE = sum_b |sum_{i in b} (c_i - y_i)| / N),
    so one weighted ``bincount`` per chunk suffices; l2 and max also need the per-bin counts.
    """
    from calibench.metrics.binning import assign_bins

    bins, _ = assign_bins(c, n_bins=n_bins, binning="width")
    n = c.shape[0]
    resid = c - y
    out = np.empty(n_resamples)
    row = 0
    for idx in resample_indices(n, n_resamples, seed):
        r = idx.shape[0]
        k = bins[idx]
        k += (np.arange(r, dtype=np.int64) * n_bins)[:, None]
        k = k.ravel()
        sums = np.bincount(k, weights=resid[idx].ravel(), minlength=r * n_bins).reshape(r, n_bins)
        counts = None if norm == "l1" else np.bincount(k, minlength=r * n_bins).reshape(r, n_bins)
        out[row : row + r] = _error_from_sums(counts, np.abs(sums), n, norm)
        row += r
    return out


def _mass_replicates(
    c: np.ndarray, y: np.ndarray, n_bins: int, norm: str, n_resamples: int, seed: int
) -> np.ndarray:
    """Equal-mass binned calibration error of every resample without sorting any resample.

    Equal-mass bins move with the resample, but they depend only on how many items each distinct
    confidence value holds: a tie group occupying sorted positions first..last goes to bin
    ``((first + last) // 2 * B) // N``, and the lowest group to bin 0 (``binning.mass_index``'s rule).
    So per chunk: one ``bincount`` of counts and residual sums per (resample, value), a cumulative sum
    for the positions, and one ``bincount`` per (resample, bin).
    """
    _, value_index = np.unique(c, return_inverse=True)
    groups = int(value_index.max()) + 1
    value_index = value_index.astype(np.int64)
    n = c.shape[0]
    resid = c - y
    out = np.empty(n_resamples)
    row = 0
    for idx in resample_indices(n, n_resamples, seed):
        r = idx.shape[0]
        k = value_index[idx]
        k += (np.arange(r, dtype=np.int64) * groups)[:, None]
        k = k.ravel()
        counts = np.bincount(k, minlength=r * groups).reshape(r, groups)
        sums = np.bincount(k, weights=resid[idx].ravel(), minlength=r * groups).reshape(r, groups)
        first = np.cumsum(counts, axis=1) - counts
        bins = ((2 * first + counts - 1) // 2 * n_bins) // n  # middle position (first + last) // 2
        bins[first == 0] = 0
        bins += (np.arange(r, dtype=np.int64) * n_bins)[:, None]
        bins = bins.ravel()
        bin_sums = np.bincount(bins, weights=sums.ravel(), minlength=r * n_bins).reshape(r, n_bins)
        bin_counts = None
        if norm != "l1":
            bin_counts = np.bincount(bins, weights=counts.ravel(), minlength=r * n_bins).reshape(r, n_bins)
        out[row : row + r] = _error_from_sums(bin_counts, np.abs(bin_sums), n, norm)
        row += r
    return out


def _sce_replicates(probs: Any, labels: Any, n_bins: int, n_resamples: int, seed: int) -> np.ndarray:
    """Static calibration error of every resample: the l1 ``_binned_replicates`` idea for each class
    column (against ``labels == k``) on the same resample indices, averaged over classes."""
    from calibench.metrics._validate import class_wise
    from calibench.metrics.binning import assign_bins

    p, lab = class_wise(probs, labels)
    n, n_classes = p.shape
    columns = [np.ascontiguousarray(p[:, k]) for k in range(n_classes)]
    bins = [assign_bins(col, n_bins=n_bins, binning="width")[0] for col in columns]
    resid = [col - (lab == k) for k, col in enumerate(columns)]
    out = np.empty(n_resamples)
    row = 0
    for idx in resample_indices(n, n_resamples, seed):
        r = idx.shape[0]
        offsets = (np.arange(r, dtype=np.int64) * n_bins)[:, None]
        total = np.zeros(r)
        for b, w in zip(bins, resid, strict=True):
            k = b[idx]
            k += offsets
            sums = np.bincount(k.ravel(), weights=w[idx].ravel(), minlength=r * n_bins).reshape(r, n_bins)
            total += np.abs(sums).sum(axis=1) / n
        out[row : row + r] = total / n_classes
        row += r
    return out


def _error_from_sums(counts: np.ndarray | None, abs_resid: np.ndarray, n: int, norm: str) -> np.ndarray:
    """Row-wise calibration error from per-bin |sum of (c - y)| and (for l2/max) counts; rows = resamples."""
    if norm == "l1":
        return abs_resid.sum(axis=1) / n
    assert counts is not None
    safe = np.maximum(counts, 1)
    if norm == "l2":
        return np.sqrt(np.sum(abs_resid * abs_resid / safe, axis=1) / n)
    return np.max(np.where(counts > 0, abs_resid / safe, 0.0), axis=1)


def _ranking_replicates(
    func: Callable[..., float], arrays: tuple[Any, ...], n_resamples: int, seed: int
) -> np.ndarray | None:
    """AUROC or AURC of every resample from per-(resample, confidence value, outcome) counts; else None.

    Both depend only on how many correct and wrong items each distinct confidence value holds, so after
    one ``bincount`` per chunk the per-resample statistic is a cumulative sum over the values (ties
    handled as in ``scores``: 1/2 for AUROC, accepted together for AURC).
    """
    from calibench.metrics import _validate, scores

    if (func is not scores.auroc and func is not scores.aurc) or len(arrays) != 2:
        return None
    c, y = _validate.top_label(*arrays)
    _, value_index = np.unique(c, return_inverse=True)  # ascending distinct confidences
    groups = int(value_index.max()) + 1
    key = 2 * value_index.astype(np.int64) + y
    out = np.empty(n_resamples)
    row = 0
    for idx in resample_indices(c.shape[0], n_resamples, seed):
        r = idx.shape[0]
        k = key[idx]
        k += (np.arange(r, dtype=np.int64) * 2 * groups)[:, None]
        counts = np.bincount(k.ravel(), minlength=r * 2 * groups).reshape(r, groups, 2).astype(np.float64)
        wrong, right = counts[:, :, 0], counts[:, :, 1]
        if func is scores.auroc:
            wrong_below = np.cumsum(wrong, axis=1) - wrong
            u = np.sum(right * (wrong_below + 0.5 * wrong), axis=1)
            pairs = right.sum(axis=1) * wrong.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[row : row + r] = np.where(pairs > 0, u / pairs, np.nan)
        else:
            total = right + wrong
            accepted = np.cumsum(total[:, ::-1], axis=1)[:, ::-1]  # items at or above each value
            errors = np.cumsum(wrong[:, ::-1], axis=1)[:, ::-1]
            risk = errors / np.maximum(accepted, 1.0)
            out[row : row + r] = np.sum(total * risk, axis=1) / c.shape[0]
        row += r
    return out


def _mean_replicates(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    out = np.empty(n_resamples)
    row = 0
    for idx in resample_indices(values.shape[0], n_resamples, seed):
        out[row : row + idx.shape[0]] = values[idx].mean(axis=1)
        row += idx.shape[0]
    return out


def bootstrap_replicates(
    metric: Callable[..., float] | str, *arrays: Any, n_resamples: int = 1000, seed: int = 0, **kwargs: Any
) -> np.ndarray:
    """The metric on each of ``n_resamples`` item resamples (the resamples of ``resample_indices``).

    All ``arrays`` are resampled together along their first axis (paired: one index set per resample).
    """
    func, options = _resolve(metric, kwargs)
    n_resamples = _check_n_resamples(n_resamples)
    if not arrays:
        raise CalibenchError("bootstrap needs at least one array of per-item values")
    data = [np.asarray(a) for a in arrays]
    n = data[0].shape[0] if data[0].ndim else 0
    for i, a in enumerate(data[1:], start=1):
        if a.ndim == 0 or a.shape[0] != n:
            raise CalibenchError(f"array 0 has {n} items but array {i} has {a.shape[0] if a.ndim else 0}")
    if n == 0:
        raise CalibenchError("cannot bootstrap empty input")
    binned = _binned_options(func, options) if len(data) == 2 else None
    if binned is not None:
        from calibench.metrics._validate import as_n_bins, top_label

        c, y = top_label(*data)
        n_bins, norm, binning = binned
        replicates = _binned_replicates if binning == "width" else _mass_replicates
        return replicates(c, y, as_n_bins(n_bins), norm, n_resamples, seed)
    from calibench.metrics import calibration

    if func is calibration.sce and len(data) == 2 and set(options) <= {"n_bins"}:
        from calibench.metrics._validate import as_n_bins

        return _sce_replicates(*data, as_n_bins(options.get("n_bins", 10)), n_resamples, seed)
    if not options:
        from calibench.metrics import smooth

        if func is smooth.smooth_ece and len(data) == 2:
            return smooth.smooth_ece_replicates(*data, n_resamples=n_resamples, seed=seed)
        ranking = _ranking_replicates(func, tuple(data), n_resamples, seed)
        if ranking is not None:
            return ranking
        loss = _per_item_loss(func, tuple(data))
        if loss is not None:
            return _mean_replicates(loss, n_resamples, seed)
    out = np.empty(n_resamples)
    row = 0
    for idx in resample_indices(n, n_resamples, seed):
        for sample in idx:
            out[row] = func(*(a[sample] for a in data), **options)
            row += 1
    return out


def _interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
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
    **kwargs: Any,
) -> CI:
    """Percentile bootstrap CI of ``metric(*arrays, **kwargs)`` over items.

    >>> from calibench.metrics.calibration import ece
    >>> ci = bootstrap_ci(ece, [0.9, 0.8, 0.7, 0.6] * 25, [1, 1, 0, 1] * 25, n_resamples=200)
    >>> ci.low <= ci.estimate <= ci.high
    True
    """
    level = _check_level(level)
    func, options = _resolve(metric, kwargs)
    estimate = float(func(*arrays, **options))
    replicates = bootstrap_replicates(func, *arrays, n_resamples=n_resamples, seed=seed, **options)
    low, high = _interval(replicates, level)
    return CI(estimate, low, high)


def _columns_for(func: Callable[..., float]) -> list[str]:
    """Record columns the metric takes, from its positional parameter names."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError) as exc:
        raise CalibenchError(f"cannot inspect the arguments of metric {func!r}") from exc
    names = [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    unknown = [name for name in names if name not in _ARG_COLUMNS]
    if not names or unknown:
        raise CalibenchError(
            f"paired_delta cannot tell which record columns metric {getattr(func, '__name__', func)!r} takes "
            f"(its arguments must be named from {sorted(_ARG_COLUMNS)})"
        )
    return [_ARG_COLUMNS[name] for name in names]


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
    **kwargs: Any,
) -> PairedDelta:
    """``metric(b) - metric(a)`` on the items both runs share, with a paired bootstrap CI and p-value.

    ``a`` and ``b`` are record tables (or dicts of arrays) with an ``item_id`` column; both must hold
    exactly the same items (in any order). Each resample takes the same items from both runs.
    """
    level = _check_level(level)
    func, options = _resolve(metric, kwargs)
    ids_a, ids_b = _item_ids(a, "a"), _item_ids(b, "b")
    only_a, only_b = ids_a.difference(ids_b), ids_b.difference(ids_a)
    if only_a.size or only_b.size:
        example = (only_a if only_a.size else only_b)[0]
        raise CalibenchError(
            f"runs a and b must score the same items: {only_a.size} item_id(s) only in a, "
            f"{only_b.size} only in b (e.g. {example!r})"
        )
    order = ids_b.get_indexer(ids_a)  # row of b for each row of a
    columns = _columns_for(func)
    arrays_a = [_column(a, col, "a") for col in columns]
    arrays_b = [_column(b, col, "b")[order] for col in columns]
    delta = float(func(*arrays_b, **options)) - float(func(*arrays_a, **options))
    rep_a = bootstrap_replicates(func, *arrays_a, n_resamples=n_resamples, seed=seed, **options)
    rep_b = bootstrap_replicates(func, *arrays_b, n_resamples=n_resamples, seed=seed, **options)
    replicates = rep_b - rep_a
    low, high = _interval(replicates, level)
    finite = replicates[~np.isnan(replicates)]
    r = finite.size
    if r == 0:
        p_value = float("nan")
    else:
        below = (1 + np.count_nonzero(finite <= 0)) / (1 + r)
        above = (1 + np.count_nonzero(finite >= 0)) / (1 + r)
        p_value = float(min(1.0, 2.0 * min(below, above)))
    return PairedDelta(delta, low, high, p_value, int(ids_a.size))
