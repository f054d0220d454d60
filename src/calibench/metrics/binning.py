"""Confidence binning: the one place where the bin conventions of DESIGN.md live.

Equal-width ("width")
    edges = linspace(0, 1, B + 1); bin = searchsorted(edges[1:-1], c, side="left"). Bins are
    right-closed (lo, hi]; 0.0 falls in the first bin and 1.0 in the last (scikit-learn's
    ``calibration_curve`` rule, and the fix torchmetrics #3510 asked for).

Equal-mass ("mass")
    Sort by confidence; the item at sorted position i (0-based) nominally goes to bin floor(i * B / N),
    so bin sizes differ by at most one. Tie rule: items with equal confidence always share a bin. A tie
    group goes to the bin of its middle sorted position (first + last) // 2, which keeps bins as close
    to equal mass as sharing allows, except that the lowest tie group always opens bin 0 (so bin 0 is
    never empty and 0.0 is in the first bin, as with equal-width bins). The result depends only on the
    multiset of confidences, never on input order; with ties some bins are larger and some can be empty.
    With N < B the N distinct items go to N distinct bins spread over [0, B); the rest are empty.
    The returned edges reproduce the assignment under the same right-closed rule as equal-width bins:
    edges[0] = 0, edges[B] = 1 and edges[b + 1] = the largest confidence in bins 0..b (so an empty bin
    below the last has lower == upper); bin b holds exactly the confidences in (edges[b], edges[b + 1]].

The equal-width path avoids sorting and ``searchsorted`` (slow on 10^7 items): the bin is computed
arithmetically as floor(c * scale), with scale a few ulps below B so that the candidate is never too
high, and then raised by one where c exceeds the candidate's upper edge -- an exact comparison, needed
only where c * scale is within 1e-6 below an integer -- which gives bit-for-bit the ``searchsorted``
answer. Work is done in cache-sized chunks.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

from calibench.errors import CalibenchError
from calibench.metrics._validate import as_confidence, as_n_bins

BINNINGS: tuple[str, ...] = ("width", "mass")
# Below this many items per bin on average a binned error is mostly noise and upward bias (HELM's code
# notes about 300 items for ECE with 10 bins): tables and diagrams warn below ``min_items(n_bins)``.
MIN_ITEMS_PER_BIN = 30


def min_items(n_bins: int) -> int:
    """Items below which a binned estimate with ``n_bins`` bins gets a small-n warning."""
    return MIN_ITEMS_PER_BIN * int(n_bins)


def small_n_warning(n: int, n_bins: int) -> str | None:
    """A one-line warning when ``n`` items are too few for ``n_bins`` bins, else None."""
    if n >= min_items(n_bins):
        return None
    return (f"small n: {n} items < {min_items(n_bins)} ({MIN_ITEMS_PER_BIN} per bin x {n_bins} bins); "
            "binned errors are noisy and biased upward")
_CHUNK = 1 << 14  # items per chunk: temporaries stay in L2 cache, measured fastest on this machine


def check_binning(binning: Any) -> str:
    """Return ``binning`` if it is a known scheme, else raise naming the choices."""
    if binning not in BINNINGS:
        raise CalibenchError(f"binning must be 'width' or 'mass', got {binning!r}")
    return str(binning)


def width_edges(n_bins: int) -> np.ndarray:
    """Equal-width edges over [0, 1] (``linspace``, so every scheme agrees on the exact floats)."""
    return np.linspace(0.0, 1.0, n_bins + 1)


_NEAR = 1.0 - 1e-6  # fractional part of c * scale above which a value may sit just above an edge


class _Kernel(NamedTuple):
    scale: float  # a few ulps below B: floor(c * scale) is never above the spec's bin, at most one below
    upper: np.ndarray  # upper edge of each bin (+inf for the last)
    near: float  # values whose c * scale has a fractional part <= near need no comparison (-1: all do)


@functools.lru_cache(maxsize=128)
def _width_kernel(n_bins: int) -> _Kernel:
    """The constants of the fast exact equal-width binning of ``_width_index``, checked at every edge.

    The candidate floor(c * scale) is never above the spec's bin and at most one below it; the values it
    puts one too low lie a few ulps above an edge, where the fractional part of c * scale is above
    ``near``. All three facts are verified here exactly in floating point at each edge (rounding is
    monotone, so that covers every value in between).
    """
    edges = width_edges(n_bins)
    inner = edges[1:-1]
    above = np.nextafter(inner, 2.0)  # the smallest value of each bin after the first
    j = np.arange(1, n_bins, dtype=np.float64)
    scale = float(np.nextafter(float(n_bins), 0.0))
    for _ in range(64):
        never_above = scale < n_bins and bool(np.all(np.floor(inner * scale) <= j - 1))
        at_most_one_below = bool(np.all(np.floor(above * scale) >= j - 1))
        if never_above and at_most_one_below:
            u = above * scale
            low = np.floor(u) < j  # edges where the first value of the next bin gets the candidate j - 1
            near = _NEAR if bool(np.all(u[low] - np.floor(u[low]) > _NEAR)) else -1.0
            return _Kernel(scale, np.append(inner, np.inf), near)
        scale = float(np.nextafter(scale, 0.0))
    raise AssertionError(f"no exact equal-width kernel for n_bins={n_bins}")  # pragma: no cover


def _width_index(c: np.ndarray, kernel: _Kernel, scratch: np.ndarray) -> np.ndarray:
    """Right-closed equal-width bin of each value; equals ``searchsorted(edges[1:-1], c, "left")``.

    The candidate floor(c * scale) is raised by one where ``c`` lies above the candidate bin's upper
    edge. Only values whose fractional part of c * scale is near 1 can need that, so the comparison runs
    on those few (typically none; exact edge values such as 0.5 and 1.0 are among them but stay put).
    """
    n = c.shape[0]
    u = scratch[0, :n]
    f = scratch[1, :n]
    np.multiply(c, kernel.scale, out=u)
    np.floor(u, out=f)
    k = f.astype(np.intp)
    np.subtract(u, f, out=u)
    near = np.flatnonzero(u > kernel.near)
    if near.size:
        candidate = k[near]
        k[near] = candidate + (c[near] > kernel.upper.take(candidate))
    return k


def _scratch(n: int) -> np.ndarray:
    return np.empty((2, min(_CHUNK, n)), dtype=np.float64)


def width_index(c: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin index of already-validated confidences (int64)."""
    kernel = _width_kernel(n_bins)
    scratch = _scratch(c.shape[0])
    out = np.empty(c.shape[0], dtype=np.int64)
    for s in range(0, c.shape[0], _CHUNK):
        out[s : s + _CHUNK] = _width_index(c[s : s + _CHUNK], kernel, scratch)
    return out


_PARALLEL_MIN = 1 << 21  # items; below this, threads cost more than they save
_PARTS = 4  # fixed split: the summation order, hence the result, never depends on the core count


class WidthSums(NamedTuple):
    """Per equal-width bin sums; ``counts``/``sum_conf``/``n_correct`` are None unless ``detail``."""

    resid: np.ndarray  # sum of (correct - confidence) = n_b * (acc_b - conf_b)
    counts: np.ndarray | None
    sum_conf: np.ndarray | None
    n_correct: np.ndarray | None


def width_sums(c: np.ndarray, y: np.ndarray, n_bins: int, *, detail: bool = True) -> WidthSums:
    """Per equal-width bin sums of validated inputs (the hot loop of ``ece``).

    The l1 ECE needs only the residual sums, so ``detail=False`` skips the counts (one weighted
    ``bincount`` per chunk). Large inputs are cut into ``_PARTS`` fixed parts summed on up to that many
    threads (numpy releases the GIL in these loops).
    """
    n = c.shape[0]
    if n < _PARALLEL_MIN:
        return _width_sums_serial(c, y, n_bins, detail)
    bounds = [n * i // _PARTS for i in range(_PARTS + 1)]

    def part(i: int) -> WidthSums:
        lo, hi = bounds[i], bounds[i + 1]
        return _width_sums_serial(c[lo:hi], y[lo:hi], n_bins, detail)

    workers = min(_PARTS, os.cpu_count() or 1)
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(part, range(_PARTS)))
    else:
        parts = [part(i) for i in range(_PARTS)]
    fields = [None if parts[0][f] is None else np.sum([p[f] for p in parts], axis=0) for f in range(4)]
    return WidthSums(*fields)  # parts added in a fixed order


def _width_sums_serial(c: np.ndarray, y: np.ndarray, n_bins: int, detail: bool) -> WidthSums:
    """``width_sums`` in one thread, in cache-sized chunks (every temporary stays in L2)."""
    kernel = _width_kernel(n_bins)
    scratch = _scratch(c.shape[0])
    yb = y.view(np.uint8)
    if detail:  # exact integer counts: items and correct items per bin from one bincount of 2 * bin + y
        counts2 = np.zeros(2 * n_bins, dtype=np.int64)
        sum_conf = np.zeros(n_bins, dtype=np.float64)
        for s in range(0, c.shape[0], _CHUNK):
            x = c[s : s + _CHUNK]
            k = _width_index(x, kernel, scratch)
            sum_conf += np.bincount(k, weights=x, minlength=n_bins)
            k *= 2
            k += yb[s : s + _CHUNK]
            counts2 += np.bincount(k, minlength=2 * n_bins)
        counts2 = counts2.reshape(n_bins, 2)
        n_correct = counts2[:, 1]
        return WidthSums(n_correct - sum_conf, counts2.sum(axis=1), sum_conf, n_correct)
    resid = np.zeros(n_bins, dtype=np.float64)
    for s in range(0, c.shape[0], _CHUNK):
        x = c[s : s + _CHUNK]
        n = x.shape[0]
        k = _width_index(x, kernel, scratch)
        w = scratch[0, :n]  # free again once the index is computed
        np.copyto(w, yb[s : s + n], casting="unsafe")  # bool -> float, cheaper than a mixed-type subtract
        w -= x
        resid += np.bincount(k, weights=w, minlength=n_bins)
    return WidthSums(resid, None, None, None)


def tie_spans(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted ``s``: the first and last position of each element's run of equal values.

    Linear scans (cumulative max/min) rather than a binary search per element: several times faster
    on 10^7 items. Shared by equal-mass binning and the tie rules of ``auroc``/``aurc``.
    """
    n = s.shape[0]
    positions = np.arange(n, dtype=np.int64)
    starts = np.empty(n, dtype=bool)
    starts[0] = True
    np.not_equal(s[1:], s[:-1], out=starts[1:])
    first = np.maximum.accumulate(np.where(starts, positions, 0))
    ends = np.empty(n, dtype=bool)
    ends[-1] = True
    ends[:-1] = starts[1:]
    last = np.minimum.accumulate(np.where(ends, positions, n)[::-1])[::-1]
    return first, last


def mass_index(c: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal-mass bin index and edges of already-validated confidences (see the module docstring).

    Only the values are sorted (no argsort, gather or scatter: ~3x faster on 10^7 items); the bins of
    the sorted values give the edges, and since the edges reproduce the assignment, each item's bin is
    then found with ``searchsorted`` against the B - 1 interior edges.
    """
    n = c.shape[0]
    s = np.sort(c)
    first, last = tie_spans(s)
    sorted_bins = ((first + last) // 2 * n_bins) // n  # nominal bin floor(i * B / N) of the middle
    sorted_bins[first == 0] = 0  # the lowest tie group opens bin 0, so bin 0 is never empty
    # edges[b + 1] = largest confidence in bins 0..b; sorted_bins is non-decreasing along s.
    top = np.searchsorted(sorted_bins, np.arange(n_bins - 1), side="right") - 1
    edges = np.empty(n_bins + 1, dtype=np.float64)
    edges[0], edges[-1] = 0.0, 1.0
    edges[1:-1] = s[top]  # top >= 0: bin 0 is never empty
    index = np.searchsorted(edges[1:-1], c, side="left").astype(np.int64, copy=False)
    return index, edges


def assign_bins(
    confidence: Any, *, n_bins: int = 10, binning: str = "width"
) -> tuple[np.ndarray, np.ndarray]:
    """Bin each confidence; returns (bin index int64 in [0, n_bins), edges of length n_bins + 1).

    >>> assign_bins([0.0, 0.3, 1.0], n_bins=10)[0]
    array([0, 2, 9])
    """
    c = as_confidence(confidence)
    n_bins = as_n_bins(n_bins)
    if check_binning(binning) == "width":
        return width_index(c, n_bins), width_edges(n_bins)
    return mass_index(c, n_bins)


def bin_sums(
    c: np.ndarray, y: np.ndarray, *, n_bins: int, binning: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per bin: item count, sum of confidence, number correct (integers), and the edges (validated inputs)."""
    if binning == "width":
        sums = width_sums(c, y, n_bins)
        return sums.counts, sums.sum_conf, sums.n_correct, width_edges(n_bins)
    index, edges = mass_index(c, n_bins)
    counts = np.bincount(index, minlength=n_bins)
    sum_conf = np.bincount(index, weights=c, minlength=n_bins)
    n_correct = np.bincount(index[y], minlength=n_bins)
    return counts, sum_conf, n_correct, edges
