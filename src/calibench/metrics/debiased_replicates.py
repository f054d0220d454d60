"""Bootstrap replicates of the bias-corrected calibration errors (``debiased_ce``, ``ece_sweep``).

Kept apart from :mod:`calibench.metrics.replicates` (the builders of the plug-in metrics) but built the
same way, from a resample's counts per top-label atom (:class:`~calibench.metrics.resample.CountChunk`):

- ``debiased``: equal-width bins are fixed runs of atoms, so per-bin counts and correct counts are
  differences of the chunk's prefix sums at the bin edges and confidence sums are dot products (the
  same per-chunk sums as ece/mce/rmsce, ``replicates.width_sums``); the debiased error of every
  resample row then comes from ``calibration.debiased_from_sums`` at once. Equal-mass bins move with
  the resample: the builder returns None (the metric runs per resample).
- ``sweep``: a resample in sorted order is the atoms repeated by their counts, so the correct count
  of its first p items comes from the chunk's prefix sums over atoms (one binary search per bin edge,
  the edges of a whole batch of bin counts at once, ``calibration.sweep_count``), and the final bins'
  confidence sums are dot products over their atoms: O(b^2 log atoms) per resample in O(log b) numpy
  calls, b the bins it ends with, plus one pass over the atoms; nothing is sorted or gathered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from calibench.metrics._validate import as_n_bins
from calibench.metrics.calibration import debiased_from_sums, mass_starts, sweep_count
from calibench.metrics.replicates import width_edges, width_sums
from calibench.metrics.resample import CountChunk, Kernel, Layout

DOT_BINS = 256  # up to this many final bins, their confidence sums are dot products (no prefix-sum pass)


def debiased(inputs: tuple[np.ndarray, ...], options: Mapping[str, Any], layout: Layout) -> Kernel | None:
    """Replicates of ``debiased_ce`` with equal-width bins (None for other options)."""
    top = layout.top
    if top is None or options.get("binning", "width") != "width" or set(options) - {"n_bins", "binning"}:
        return None
    n_bins = as_n_bins(options.get("n_bins", 10))
    edges = width_edges(top, n_bins)

    def kernel(chunk: CountChunk) -> np.ndarray:
        counts, n_correct, conf = width_sums(chunk, top, edges)  # shared with ece/mce/rmsce of the chunk
        return debiased_from_sums(counts, n_correct.astype(np.float64), conf, top.n)

    return kernel


def sweep(inputs: tuple[np.ndarray, ...], options: Mapping[str, Any], layout: Layout) -> Kernel | None:
    """Replicates of ``ece_sweep`` from the chunk's prefix sums over atoms (no resample is sorted)."""
    top = layout.top
    if top is None or options:
        return None
    n, last = top.n, top.size - 1
    y = top.y.astype(np.float64)

    def kernel(chunk: CountChunk) -> np.ndarray:
        total, wrong = chunk.prefix("total"), chunk.prefix("wrong")
        k = chunk.atoms_f
        out = np.empty(chunk.rows)
        for r in range(chunk.rows):
            out[r] = _row_sweep(total[r], wrong[r], k[r], y, top.c, last, n)
        return out

    return kernel


def _row_sweep(below: np.ndarray, wrong: np.ndarray, k: np.ndarray, y: np.ndarray, c: np.ndarray, last: int,
               n: int) -> float:
    """One resample's sweep from its prefix sums over atoms (``below``/``wrong``: items / wrong items
    before each atom; ``k``: the atoms' counts). Only the atoms at tested bin edges are read: the
    bin count comes from ``calibration.sweep_count`` and each final bin's confidence sum is a dot
    product over its atoms (plus the parts of the atoms it cuts)."""

    def atom(p: np.ndarray) -> np.ndarray:
        return np.minimum(np.searchsorted(below, p, side="right") - 1, last)  # the atom holding position p

    def correct_at(p: np.ndarray) -> np.ndarray:
        j = atom(p)
        return (below[j] - wrong[j]) + y[j] * (p - below[j])

    best = sweep_count(correct_at, n)
    starts = mass_starts(n, best)
    j = atom(starts)
    cut = c[j] * (starts - below[j])  # confidence of the items of atom j before position p
    if best <= DOT_BINS:
        whole = np.array([k[a:b] @ c[a:b] for a, b in zip(j[:-1], j[1:], strict=True)])
    else:  # many bins: one prefix sum of the confidence mass is cheaper than a dot product per bin
        mass = np.zeros(k.shape[0] + 1)
        np.cumsum(k * c, out=mass[1:])
        whole = mass[j[1:]] - mass[j[:-1]]
    conf = whole + cut[1:] - cut[:-1]
    resid = np.diff(correct_at(starts)) - conf
    return float(np.abs(resid).sum() / n)
