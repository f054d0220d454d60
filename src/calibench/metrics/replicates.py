"""Vectorised bootstrap replicates, one builder per metric family (no Python loop over resamples).

Each builder takes a metric's validated inputs and its keyword options and returns a ``Replicator``
(``(n_resamples, seed) -> one value per resample`` of :func:`calibench.metrics.resample.resample_indices`),
or None when the options are ones it does not handle (the caller then runs the metric once per resample,
so the metric itself accepts or rejects them). The registry (:mod:`calibench.metrics.registry`) says
which builder each metric uses.

- ``binned``: ``ece``/``mce``/``rmsce``/``ace``. Equal-width: an item's bin does not change under
  resampling, so each resample's per-bin sum of ``c - y`` (and, for l2/max, count) is one grouped sum
  over the keys ``bin``. Equal-mass: bins move with the resample but depend only on the counts per
  distinct confidence value, so no resample is sorted (see ``_mass``).
- ``sce``: the l1 equal-width path per class column (against ``labels == k``) on the same resamples.
- ``ranking``: ``auroc``, ``aurc`` from per-(resample, distinct confidence, outcome) counts, then
  cumulative sums over the confidence values.
- ``mean_of``: metrics that are the mean of a per-item loss (accuracy, brier, brier_top, nll).
- ``smooth``: ``smooth_ece`` (see ``smooth.smooth_ece_replicates``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from calibench.metrics._validate import as_n_bins
from calibench.metrics.binning import BINNINGS, assign_bins
from calibench.metrics.calibration import NORMS
from calibench.metrics.resample import RowKeys, fill_rows
from calibench.metrics.smooth import smooth_ece_replicates

Replicator = Callable[[int, int], np.ndarray]
Builder = Callable[[tuple[np.ndarray, ...], Mapping[str, Any]], "Replicator | None"]


def error_from_sums(counts: np.ndarray | None, abs_resid: np.ndarray, n: int, norm: str) -> np.ndarray:
    """Row-wise calibration error from per-bin |sum of (c - y)| and (for l2/max) counts; rows = resamples."""
    if norm == "l1":
        return abs_resid.sum(axis=1) / n
    assert counts is not None
    safe = np.maximum(counts, 1)
    if norm == "l2":
        return np.sqrt(np.sum(abs_resid * abs_resid / safe, axis=1) / n)
    return np.max(np.where(counts > 0, abs_resid / safe, 0.0), axis=1)


def _width(c: np.ndarray, y: np.ndarray, n_bins: int, norm: str) -> Callable[[np.ndarray], np.ndarray]:
    """Equal-width binned error per resample: for l1 only the per-bin residual sums matter
    (ECE = sum_b |sum_{i in b} (c_i - y_i)| / N); l2 and max also need the per-bin counts."""
    bins, _ = assign_bins(c, n_bins=n_bins, binning="width")
    n = c.shape[0]
    resid = c - y

    def kernel(idx: np.ndarray) -> np.ndarray:
        keys = RowKeys(bins[idx], n_bins)
        sums = keys.sums(resid[idx])
        counts = None if norm == "l1" else keys.sums()
        return error_from_sums(counts, np.abs(sums), n, norm)

    return kernel


def _mass(c: np.ndarray, y: np.ndarray, n_bins: int, norm: str) -> Callable[[np.ndarray], np.ndarray]:
    """Equal-mass binned error per resample without sorting any resample.

    A tie group occupying sorted positions first..last goes to bin ``((first + last) // 2 * B) // N``,
    and the lowest group to bin 0 (``binning.mass_index``'s rule). So per chunk: counts and residual
    sums per (resample, value), a cumulative sum for the positions, and sums per (resample, bin).
    """
    _, value_index = np.unique(c, return_inverse=True)
    groups = int(value_index.max()) + 1
    value_index = value_index.astype(np.int64)
    n = c.shape[0]
    resid = c - y

    def kernel(idx: np.ndarray) -> np.ndarray:
        by_value = RowKeys(value_index[idx], groups)
        counts = by_value.sums()
        sums = by_value.sums(resid[idx])
        first = np.cumsum(counts, axis=1) - counts
        bins = ((2 * first + counts - 1) // 2 * n_bins) // n  # middle position (first + last) // 2
        bins[first == 0] = 0
        by_bin = RowKeys(bins, n_bins)
        bin_counts = None if norm == "l1" else by_bin.sums(counts)
        return error_from_sums(bin_counts, np.abs(by_bin.sums(sums)), n, norm)

    return kernel


def binned(*, norm: str | None = None, binning: str | None = None) -> Builder:
    """Builder for a binned top-label error; ``norm``/``binning`` fixed by the metric, else options."""
    accepted = {"n_bins"} | ({"norm"} if norm is None else set()) | ({"binning"} if binning is None else set())

    def build(arrays: tuple[np.ndarray, ...], options: Mapping[str, Any]) -> Replicator | None:
        chosen_norm = options.get("norm", "l1") if norm is None else norm
        chosen_binning = options.get("binning", "width") if binning is None else binning
        if not set(options) <= accepted or chosen_binning not in BINNINGS or chosen_norm not in NORMS:
            return None  # let the metric itself reject bad options with its own message
        c, y = arrays
        n_bins = as_n_bins(options.get("n_bins", 10))
        make = _width if chosen_binning == "width" else _mass
        return lambda n_resamples, seed: fill_rows(c.shape[0], n_resamples, seed, make(c, y, n_bins, chosen_norm))

    return build


def sce(arrays: tuple[np.ndarray, ...], options: Mapping[str, Any]) -> Replicator | None:
    """Static calibration error per resample: the l1 equal-width sums for each class column."""
    if not set(options) <= {"n_bins"}:
        return None
    p, lab = arrays
    n_bins = as_n_bins(options.get("n_bins", 10))
    n, n_classes = p.shape
    columns = [np.ascontiguousarray(p[:, k]) for k in range(n_classes)]
    bins = [assign_bins(col, n_bins=n_bins, binning="width")[0] for col in columns]
    resid = [col - (lab == k) for k, col in enumerate(columns)]

    def kernel(idx: np.ndarray) -> np.ndarray:
        total = np.zeros(idx.shape[0])
        for b, w in zip(bins, resid, strict=True):
            total += np.abs(RowKeys(b[idx], n_bins).sums(w[idx])).sum(axis=1) / n
        return total / n_classes

    return lambda n_resamples, seed: fill_rows(n, n_resamples, seed, kernel)


def ranking(statistic: str) -> Builder:
    """Builder for ``auroc`` or ``aurc``: both depend only on how many correct and wrong items each
    distinct confidence value holds (ties: 1/2 for AUROC, accepted together for AURC, as in ``scores``)."""

    def build(arrays: tuple[np.ndarray, ...], options: Mapping[str, Any]) -> Replicator | None:
        if options:
            return None
        c, y = arrays
        _, value_index = np.unique(c, return_inverse=True)  # ascending distinct confidences
        groups = int(value_index.max()) + 1
        key = 2 * value_index.astype(np.int64) + y
        n = c.shape[0]

        def kernel(idx: np.ndarray) -> np.ndarray:
            r = idx.shape[0]
            counts = RowKeys(key[idx], 2 * groups).sums().reshape(r, groups, 2).astype(np.float64)
            wrong, right = counts[:, :, 0], counts[:, :, 1]
            if statistic == "auroc":
                wrong_below = np.cumsum(wrong, axis=1) - wrong
                u = np.sum(right * (wrong_below + 0.5 * wrong), axis=1)
                pairs = right.sum(axis=1) * wrong.sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    return np.where(pairs > 0, u / pairs, np.nan)
            total = right + wrong
            accepted = np.cumsum(total[:, ::-1], axis=1)[:, ::-1]  # items at or above each value
            errors = np.cumsum(wrong[:, ::-1], axis=1)[:, ::-1]
            risk = errors / np.maximum(accepted, 1.0)
            return np.sum(total * risk, axis=1) / n

        return lambda n_resamples, seed: fill_rows(n, n_resamples, seed, kernel)

    return build


def mean_of(loss: Callable[..., np.ndarray]) -> Builder:
    """Builder for a metric that is the mean of ``loss(*arrays)`` (one value per item)."""

    def build(arrays: tuple[np.ndarray, ...], options: Mapping[str, Any]) -> Replicator | None:
        if options:
            return None
        values = loss(*arrays)
        return lambda n_resamples, seed: fill_rows(
            values.shape[0], n_resamples, seed, lambda idx: values[idx].mean(axis=1)
        )

    return build


def smooth(arrays: tuple[np.ndarray, ...], options: Mapping[str, Any]) -> Replicator | None:
    """Smooth ECE per resample (gridded together, bandwidths bisected in lock step)."""
    if options:
        return None
    c, y = arrays
    return lambda n_resamples, seed: smooth_ece_replicates(c, y, n_resamples=n_resamples, seed=seed)
