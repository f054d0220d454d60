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
high, and then raised by one where c exceeds the candidate's upper edge -- one exact comparison, which
gives bit-for-bit the ``searchsorted`` answer. Work is done in cache-sized chunks.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from calibench.errors import CalibenchError
from calibench.metrics._validate import as_confidence, as_n_bins

BINNINGS: tuple[str, ...] = ("width", "mass")
_CHUNK = 1 << 14  # items per chunk: temporaries stay in L2 cache, measured fastest on this machine


def check_binning(binning: Any) -> str:
    """Return ``binning`` if it is a known scheme, else raise naming the choices."""
    if binning not in BINNINGS:
        raise CalibenchError(f"binning must be 'width' or 'mass', got {binning!r}")
    return str(binning)


def width_edges(n_bins: int) -> np.ndarray:
    """Equal-width edges over [0, 1] (``linspace``, so every scheme agrees on the exact floats)."""
    return np.linspace(0.0, 1.0, n_bins + 1)


@functools.lru_cache(maxsize=128)
def _width_kernel(n_bins: int) -> tuple[float, np.ndarray]:
    """(scale, upper) for the fast exact equal-width binning of ``_width_index``.

    ``floor(c * scale)`` with ``scale`` a few ulps below B is never above the spec's bin and at most one
    below it; ``upper[k]`` is the upper edge of bin k (+inf for the last), so one comparison
    ``c > upper[k]`` finishes the job. Both properties are checked here at every edge, exactly in
    floating point (monotonicity of rounding then covers every value in between).
    """
    edges = width_edges(n_bins)
    inner = edges[1:-1]
    j = np.arange(1, n_bins, dtype=np.float64)
    scale = float(np.nextafter(float(n_bins), 0.0))
    for _ in range(64):
        never_above = np.all(np.floor(inner * scale) <= j - 1) and scale < n_bins
        at_most_one_below = np.all(np.floor(np.nextafter(inner, 2.0) * scale) >= j - 1)
        if never_above and at_most_one_below:
            return scale, np.append(inner, np.inf)
        scale = float(np.nextafter(scale, 0.0))
    raise AssertionError(f"no exact equal-width kernel for n_bins={n_bins}")  # pragma: no cover


def _width_index(c: np.ndarray, scale: float, upper: np.ndarray) -> np.ndarray:
    """Right-closed equal-width bin of each value: the candidate floor(c * scale), raised by one where
    ``c`` lies above the candidate bin's upper edge. Equals ``searchsorted(edges[1:-1], c, "left")``."""
    k = (c * scale).astype(np.intp)
    above = c > upper.take(k)
    if above.any():  # only values a few ulps above an edge; skipping the add saves a pass
        k += above
    return k


def width_index(c: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin index of already-validated confidences (int64)."""
    scale, upper = _width_kernel(n_bins)
    out = np.empty(c.shape[0], dtype=np.int64)
    for s in range(0, c.shape[0], _CHUNK):
        out[s : s + _CHUNK] = _width_index(c[s : s + _CHUNK], scale, upper)
    return out


_PARALLEL_MIN = 1 << 21  # items; below this, threads cost more than they save
_PARTS = 4  # fixed split: the summation order, hence the result, never depends on the core count


def width_sums(
    c: np.ndarray, y: np.ndarray, n_bins: int, *, detail: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Per equal-width bin: (sum of correct - confidence, item count, sum of confidence).

    This is the hot loop of ``ece``. The l1 ECE needs only the first array (|residual sum| per bin),
    so ``detail=False`` skips the counts and confidence sums. Large inputs are cut into ``_PARTS``
    fixed parts summed on up to that many threads (numpy releases the GIL in these loops).
    """
    n = c.shape[0]
    if n < _PARALLEL_MIN:
        return _width_sums_serial(c, y, n_bins, detail)
    bounds = [n * i // _PARTS for i in range(_PARTS + 1)]

    def part(i: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        lo, hi = bounds[i], bounds[i + 1]
        return _width_sums_serial(c[lo:hi], y[lo:hi], n_bins, detail)

    workers = min(_PARTS, os.cpu_count() or 1)
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(part, range(_PARTS)))
    else:
        parts = [part(i) for i in range(_PARTS)]
    resid = np.sum([p[0] for p in parts], axis=0)  # parts added in a fixed order
    if not detail:
        return resid, None, None
    return resid, np.sum([p[1] for p in parts], axis=0), np.sum([p[2] for p in parts], axis=0)


def _width_sums_serial(
    c: np.ndarray, y: np.ndarray, n_bins: int, detail: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``width_sums`` in one thread, in cache-sized chunks (every temporary stays in L2)."""
    scale, upper = _width_kernel(n_bins)
    resid = np.zeros(n_bins, dtype=np.float64)
    counts = np.zeros(n_bins, dtype=np.int64) if detail else None
    sum_conf = np.zeros(n_bins, dtype=np.float64) if detail else None
    yb = y.view(np.uint8)
    buffer = np.empty(min(_CHUNK, c.shape[0]), dtype=np.float64)
    for s in range(0, c.shape[0], _CHUNK):
        x = c[s : s + _CHUNK]
        n = x.shape[0]
        k = _width_index(x, scale, upper)
        if counts is not None and sum_conf is not None:
            counts += np.bincount(k, minlength=n_bins)
            sum_conf += np.bincount(k, weights=x, minlength=n_bins)
        w = buffer[:n]
        np.copyto(w, yb[s : s + n], casting="unsafe")  # bool -> float, cheaper than a mixed-type subtract
        w -= x
        resid += np.bincount(k, weights=w, minlength=n_bins)
    return resid, counts, sum_conf


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
    """Per bin: count, sum of confidence, number correct, and the edges (validated inputs)."""
    if binning == "width":
        resid, counts, sum_conf = width_sums(c, y, n_bins)
        return counts, sum_conf, resid + sum_conf, width_edges(n_bins)
    index, edges = mass_index(c, n_bins)
    counts = np.bincount(index, minlength=n_bins)
    sum_conf = np.bincount(index, weights=c, minlength=n_bins)
    sum_correct = np.bincount(index, weights=y, minlength=n_bins)
    return counts, sum_conf, sum_correct, edges
