"""Vectorised bootstrap replicates: one kernel builder per metric family.

A builder takes a metric's validated inputs, its keyword options and the group's
:class:`~calibench.metrics.resample.Layout` (items sorted once) and returns a chunk kernel
(``CountChunk -> one value per resample``), or None when the options are ones it does not handle (the
caller then runs the metric once per resample, so the metric itself accepts or rejects them). A
top-label builder must be given the ``Layout.for_top`` of its own (confidence, correct). The registry
(:mod:`calibench.metrics.registry`) says which builder each metric uses.

A resample enters only through its counts per atom (run of equal (confidence, correct) in sorted
order) or per item, so the work per resample is a few sequential passes over the atoms -- linear in
N with a small constant -- instead of gathering and re-binning N resampled items:

- ``binned`` (ece/mce/rmsce/ace), equal-width: an atom's bin is fixed, so per-bin counts and correct
  counts are differences of the chunk's integer prefix sums at the bin edges, and the confidence sums
  are segment sums. Equal-mass: bins move with the resample but depend only on how many items each
  distinct confidence holds (``binning.mass_index``'s rule: a tie group spanning sorted positions
  first..last goes to bin ``((first + last) // 2 * B) // N``, the lowest group to bin 0), which the
  same prefix sums give without sorting anything.
- ``ranking`` (auroc, aurc): prefix sums of wrong (and all) counts over ascending confidence give each
  correct item's wrong-below count (AUROC's U, exact in integers, ties 1/2) and each value's accepted
  set (AURC, ties accepted together).
- ``mean_of`` (accuracy, brier, brier_top, nll): one dot product of the counts with the per-item (or
  per-atom) loss.
- ``sce``: per class column, a fixed sparse map from items to (class, bin) residual sums: one sparse
  product per chunk.
- ``smooth``: weighted histograms on the kernel grids (``smooth.smooth_ece_kernel``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from calibench.metrics._validate import as_n_bins
from calibench.metrics.binning import BINNINGS, assign_bins
from calibench.metrics.calibration import NORMS
from calibench.metrics.resample import CountChunk, Kernel, Layout, TopAtoms, segment_sums
from calibench.metrics.smooth import smooth_ece_kernel

Builder = Callable[[tuple[np.ndarray, ...], Mapping[str, Any], Layout], "Kernel | None"]


def error_from_sums(counts: np.ndarray | None, abs_resid: np.ndarray, n: int, norm: str) -> np.ndarray:
    """Row-wise calibration error from per-bin |sum of (c - y)| and (for l2/max) counts; rows = resamples."""
    if norm == "l1":
        return abs_resid.sum(axis=1) / n
    assert counts is not None
    safe = np.maximum(counts, 1)
    if norm == "l2":
        return np.sqrt(np.sum(abs_resid * abs_resid / safe, axis=1) / n)
    return np.max(np.where(counts > 0, abs_resid / safe, 0.0), axis=1)


def _top(layout: Layout) -> TopAtoms:
    if layout.top is None:
        raise ValueError("top-label replicates need a layout sorted by confidence (Layout.for_top)")
    return layout.top


def _width(top: TopAtoms, n_bins: int, norm: str) -> Kernel:
    """Equal-width binned error: bins are fixed runs of atoms (confidences are sorted)."""
    bins = assign_bins(top.c, n_bins=n_bins, binning="width")[0]
    edges = np.searchsorted(bins, np.arange(n_bins + 1), side="left")  # bin b: atoms edges[b]:edges[b + 1]
    spans = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def sums(chunk: CountChunk) -> tuple[np.ndarray, np.ndarray]:
        total, wrong = chunk.prefix("total"), chunk.prefix("wrong")
        counts = total[:, edges[1:]] - total[:, edges[:-1]]
        n_correct = counts - (wrong[:, edges[1:]] - wrong[:, edges[:-1]])
        k = chunk.atoms_f
        conf = np.zeros((chunk.rows, n_bins))
        for b, (lo, hi) in enumerate(spans):  # one dot product per bin: no temporary of the atoms' size
            if hi > lo:
                conf[:, b] = k[:, lo:hi] @ top.c[lo:hi]
        return counts, conf - n_correct

    def kernel(chunk: CountChunk) -> np.ndarray:
        counts, resid = chunk.memo(("width", n_bins), lambda: sums(chunk))
        return error_from_sums(counts, np.abs(resid), top.n, norm)

    return kernel


def _value_sums(chunk: CountChunk, top: TopAtoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (resample, distinct confidence): items below it (one more column: N), items at it, and
    the sum of (c - y) at it."""
    bounds = top.value_bounds
    total = chunk.prefix("total")
    k = chunk.atoms_f
    resid = np.multiply(k, top.resid, out=chunk.scratch.get("value_resid", k.shape))
    if bounds.shape[0] - 1 == top.size:  # no confidence holds both outcomes: values are atoms
        return total, chunk.atoms, resid
    below = total[:, bounds]
    return below, np.diff(below, axis=1), segment_sums(resid, bounds)


def _mass(top: TopAtoms, n_bins: int, norm: str) -> Kernel:
    """Equal-mass binned error from the per-value counts (no resample is sorted).

    A value's bin is ``mid * B // N`` with ``mid = first + (count - 1) // 2`` its middle sorted
    position, except that values with nothing below them go to bin 0. ``mid`` never decreases along
    the values, so bin b starts at the first value with ``mid >= ceil(b N / B)`` (a binary search per
    bin) and the bins' sums are segment sums.
    """
    n = top.n
    thresholds = -((-np.arange(1, n_bins) * n) // n_bins)  # ceil(b * N / B), b = 1 .. B - 1

    def kernel(chunk: CountChunk) -> np.ndarray:
        below, count, resid = chunk.memo("value_sums", lambda: _value_sums(chunk, top))
        first = below[:, :-1]
        mid = np.subtract(count, 1, out=chunk.scratch.get("mass_mid", count.shape, np.int64))
        np.right_shift(mid, 1, out=mid)
        mid += first  # middle sorted position first + (count - 1) // 2 (first - 1 for an empty value)
        n_values = first.shape[1]
        abs_resid = np.empty((chunk.rows, n_bins))
        bin_counts = np.empty((chunk.rows, n_bins), dtype=np.int64)
        edges = np.empty(n_bins + 1, dtype=np.intp)
        edges[0], edges[-1] = 0, n_values
        for r in range(chunk.rows):
            opened = np.searchsorted(first[r], 1, side="left")  # values with nothing below: bin 0
            edges[1:-1] = np.maximum(np.searchsorted(mid[r], thresholds, side="left"), opened)
            abs_resid[r] = np.abs(segment_sums(resid[r : r + 1], edges)[0])
            at = below[r, edges]
            bin_counts[r] = at[1:] - at[:-1]
        return error_from_sums(None if norm == "l1" else bin_counts, abs_resid, n, norm)

    return kernel


def binned(*, norm: str | None = None, binning: str | None = None) -> Builder:
    """Builder for a binned top-label error; ``norm``/``binning`` fixed by the metric, else options."""
    accepted = {"n_bins"} | ({"norm"} if norm is None else set()) | ({"binning"} if binning is None else set())

    def build(arrays: tuple[np.ndarray, ...], options: Mapping[str, Any], layout: Layout) -> Kernel | None:
        chosen_norm = options.get("norm", "l1") if norm is None else norm
        chosen_binning = options.get("binning", "width") if binning is None else binning
        if not set(options) <= accepted or chosen_binning not in BINNINGS or chosen_norm not in NORMS:
            return None  # let the metric itself reject bad options with its own message
        n_bins = as_n_bins(options.get("n_bins", 10))
        make = _width if chosen_binning == "width" else _mass
        return make(_top(layout), n_bins, chosen_norm)

    return build


def _auroc(top: TopAtoms) -> Kernel:
    """2U = sum over correct atoms a of count_a * (2 * wrong before a - wrong tied with a), in integers."""
    correct = top.y.astype(np.int64)
    tied = np.flatnonzero(top.tied)  # correct atoms right after a wrong atom of the same confidence

    def kernel(chunk: CountChunk) -> np.ndarray:
        k, wrong = chunk.atoms, chunk.prefix("wrong")
        two_u = 2 * np.einsum("ij,ij,j->i", k, wrong[:, :-1], correct)
        if tied.size:
            two_u -= np.einsum("ij,ij->i", k[:, tied], k[:, tied - 1])
        n_wrong = wrong[:, -1]
        pairs = (top.n - n_wrong) * n_wrong
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(pairs > 0, two_u / (2 * pairs), math.nan)

    return kernel


def _aurc(top: TopAtoms) -> Kernel:
    """Each distinct confidence's items are charged the risk of everything at or above it."""
    bounds = top.value_bounds
    values_are_atoms = bounds.shape[0] - 1 == top.size
    n = top.n

    def kernel(chunk: CountChunk) -> np.ndarray:
        total, wrong = chunk.prefix("total"), chunk.prefix("wrong")
        if values_are_atoms:
            below, wrong_below, count = total[:, :-1], wrong[:, :-1], chunk.atoms
        else:
            below, wrong_below = total[:, bounds[:-1]], wrong[:, bounds[:-1]]
            count = total[:, bounds[1:]] - below
        scratch = chunk.scratch
        accepted = np.subtract(n, below, out=scratch.get("aurc_accepted", below.shape, np.int64))
        np.maximum(accepted, 1, out=accepted)
        errors = np.subtract(wrong[:, -1:], wrong_below, out=scratch.get("aurc_errors", below.shape, np.int64))
        risk = np.divide(errors, accepted, out=scratch.get("aurc_risk", below.shape))
        weights = chunk.atoms_f if values_are_atoms else count.astype(np.float64)
        return np.einsum("ij,ij->i", weights, risk) / n

    return kernel


def ranking(statistic: str) -> Builder:
    """Builder for ``auroc`` or ``aurc`` (ties: 1/2 for AUROC, accepted together for AURC, as in ``scores``)."""
    make = {"auroc": _auroc, "aurc": _aurc}[statistic]

    def build(arrays: tuple[np.ndarray, ...], options: Mapping[str, Any], layout: Layout) -> Kernel | None:
        return None if options else make(_top(layout))

    return build


def mean_of(loss: Callable[..., np.ndarray]) -> Builder:
    """Builder for a metric that is the mean of ``loss(*arrays)`` (one value per item)."""

    def build(arrays: tuple[np.ndarray, ...], options: Mapping[str, Any], layout: Layout) -> Kernel | None:
        if options:
            return None
        per_item = np.ascontiguousarray(layout.sorted(loss(*arrays)))
        n = per_item.shape[0]
        per_atom = layout.atom_values(per_item)
        if per_atom is not None:  # the loss depends only on (confidence, correct)
            return lambda chunk: chunk.atoms_f @ per_atom / n
        layout.items_used = True
        return lambda chunk: chunk.items_f @ per_item / n

    return build


def sce(arrays: tuple[np.ndarray, ...], options: Mapping[str, Any], layout: Layout) -> Kernel | None:
    """Static calibration error: the equal-width residual sums of every class column, as one fixed
    sparse map from item counts to (class, bin) sums."""
    if not set(options) <= {"n_bins"}:
        return None
    from scipy import sparse

    n_bins = as_n_bins(options.get("n_bins", 10))
    p, lab = layout.sorted(arrays[0]), layout.sorted(arrays[1])
    n, n_classes = p.shape
    index = np.int32 if n * n_classes < 2**31 else np.int64
    keys = np.empty((n, n_classes), dtype=index)
    resid = np.empty((n, n_classes))
    for k in range(n_classes):
        column = np.ascontiguousarray(p[:, k])
        keys[:, k] = assign_bins(column, n_bins=n_bins, binning="width")[0] + k * n_bins
        resid[:, k] = column - (lab == k)
    # one column per item holding its K (class, bin) residuals: CSC needs no sorting to build
    pointers = np.arange(0, n * n_classes + 1, n_classes, dtype=index)
    to_bins = sparse.csc_matrix((resid.ravel(), keys.ravel(), pointers), shape=(n_classes * n_bins, n))

    layout.items_used = True

    def kernel(chunk: CountChunk) -> np.ndarray:
        sums = np.asarray(to_bins @ chunk.items_f.T).T.reshape(chunk.rows, n_classes, n_bins)
        return (np.abs(sums).sum(axis=2) / n).sum(axis=1) / n_classes

    return kernel


def smooth(arrays: tuple[np.ndarray, ...], options: Mapping[str, Any], layout: Layout) -> Kernel | None:
    """Smooth ECE per resample (see ``smooth.smooth_ece_kernel``)."""
    return None if options else smooth_ece_kernel(layout)
