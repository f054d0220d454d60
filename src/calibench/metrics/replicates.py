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
  same prefix sums give without sorting anything: one binary search per bin edge, then a dot product
  per bin.
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
from calibench.metrics.resample import CACHE_BLOCK, CountChunk, Kernel, Layout, TopAtoms, cache_blocks
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


def width_edges(top: TopAtoms, n_bins: int) -> np.ndarray:
    """Atom edges of the equal-width bins: bin b holds atoms ``edges[b]:edges[b + 1]`` (confidences sorted)."""
    bins = assign_bins(top.c, n_bins=n_bins, binning="width")[0]
    return np.searchsorted(bins, np.arange(n_bins + 1), side="left")


def width_sums(chunk: CountChunk, top: TopAtoms, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (resample, equal-width bin): item counts, correct counts and confidence sums, once per chunk
    for every metric that bins by width (ece, mce, rmsce, dce): prefix differences and one dot product
    per bin (no temporary of the atoms' size)."""

    def make() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        total, wrong = chunk.prefix("total"), chunk.prefix("wrong")
        counts = total[:, edges[1:]] - total[:, edges[:-1]]
        n_correct = counts - (wrong[:, edges[1:]] - wrong[:, edges[:-1]])
        k = chunk.atoms_f
        conf = np.zeros((chunk.rows, edges.shape[0] - 1))
        for b, (lo, hi) in enumerate(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True)):
            if hi > lo:
                conf[:, b] = k[:, lo:hi] @ top.c[lo:hi]
        return counts, n_correct, conf

    return chunk.memo(("width", edges.shape[0] - 1), make)


def _width(top: TopAtoms, n_bins: int, norm: str) -> Kernel:
    """Equal-width binned error: bins are fixed runs of atoms (confidences are sorted)."""
    edges = width_edges(top, n_bins)

    def kernel(chunk: CountChunk) -> np.ndarray:
        counts, n_correct, conf = width_sums(chunk, top, edges)
        return error_from_sums(counts, np.abs(conf - n_correct), top.n, norm)

    return kernel


def _mass(top: TopAtoms, n_bins: int, norm: str) -> Kernel:
    """Equal-mass binned error from the prefix sums over atoms (no resample is sorted or re-binned).

    A value's bin is ``mid * B // N`` with ``mid = first + (count - 1) // 2`` its middle sorted
    position, except that values with nothing below them go to bin 0. ``mid`` never decreases along
    the values, so bin b starts at the first value with ``mid >= T = ceil(b N / B)``. Every value
    before the last one with ``first <= T`` (call it j) has ``mid <= first of the next - 1 < T`` and
    every value after j has ``first > T``, so that start is j or j + 1: one binary search per bin
    edge. A bin's residual sum is then a dot product of counts and confidences over its atoms, less
    its correct count (prefix differences); nothing of the atoms' size is written per resample.
    """
    n = top.n
    thresholds = -((-np.arange(1, n_bins) * n) // n_bins)  # ceil(b * N / B), b = 1 .. B - 1
    bounds = top.value_bounds
    values_are_atoms = bounds.shape[0] - 1 == top.size

    def kernel(chunk: CountChunk) -> np.ndarray:
        total, wrong, k = chunk.prefix("total"), chunk.prefix("wrong"), chunk.atoms_f
        abs_resid = np.empty((chunk.rows, n_bins))
        bin_counts = np.empty((chunk.rows, n_bins), dtype=np.int64)
        for r in range(chunk.rows):
            below = total[r] if values_are_atoms else total[r, bounds]  # items before each value; N last
            first = below[:-1]
            j = np.searchsorted(first, thresholds, side="right") - 1  # last value with first <= T (first[0] = 0)
            mid = first[j] + ((below[j + 1] - first[j] - 1) >> 1)
            edges = np.empty(n_bins + 1, dtype=np.intp)
            edges[0], edges[-1] = 0, first.shape[0]
            opened = np.searchsorted(first, 1, side="left")  # values with nothing below: bin 0
            edges[1:-1] = np.maximum(np.where(mid >= thresholds, j, j + 1), opened)
            atoms = edges if values_are_atoms else bounds[edges]
            counts = total[r, atoms[1:]] - total[r, atoms[:-1]]
            n_correct = counts - (wrong[r, atoms[1:]] - wrong[r, atoms[:-1]])
            conf = np.array([k[r, a:b] @ top.c[a:b] for a, b in zip(atoms[:-1], atoms[1:], strict=True)])
            abs_resid[r] = np.abs(conf - n_correct)
            bin_counts[r] = counts
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
    """Each distinct confidence's items are charged the risk of everything at or above it.

    Risks are computed in float64 straight from the integer prefix sums (exact: counts are below
    2**53); values with nothing at or above them (a resample that drew none of the top values) hold
    no items, so the sum stops before them instead of guarding a division by zero."""
    bounds = top.value_bounds
    values_are_atoms = bounds.shape[0] - 1 == top.size
    n = top.n

    def kernel(chunk: CountChunk) -> np.ndarray:
        total, wrong = chunk.prefix("total"), chunk.prefix("wrong")
        if values_are_atoms:
            below, wrong_below, weights = total[:, :-1], wrong[:, :-1], chunk.atoms_f
        else:
            below, wrong_below = total[:, bounds[:-1]], wrong[:, bounds[:-1]]
            weights = (total[:, bounds[1:]] - below).astype(np.float64)
        size = min(below.shape[1], CACHE_BLOCK)
        scratch = chunk.scratch
        counts = scratch.get("aurc_counts", (size,), np.int64)
        accepted, risk = scratch.get("aurc_accepted", (size,)), scratch.get("aurc_risk", (size,))
        out = np.empty(chunk.rows)
        for r in range(chunk.rows):
            m = int(np.searchsorted(below[r], n, side="left"))  # values from m on have nothing at or above
            total_wrong = wrong[r, -1]
            acc = 0.0
            for start, stop in cache_blocks(m):  # sequential sums in blocks: the unblocked dot to ~1e-16
                k = stop - start
                # integer differences, then one plain copy each to float: numpy's mixed-type loops are slower
                np.copyto(accepted[:k], np.subtract(n, below[r, start:stop], out=counts[:k]))
                np.copyto(risk[:k], np.subtract(total_wrong, wrong_below[r, start:stop], out=counts[:k]))
                np.divide(risk[:k], accepted[:k], out=risk[:k])
                acc += weights[r, start:stop] @ risk[:k]
            out[r] = acc / n
        return out

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
