"""Smooth ECE and the smooth reliability curve (Blasiok & Nakkiran, ICLR 2024).

Binned ECE jumps when a bin edge moves; smooth ECE replaces bins by a Gaussian kernel whose
width is chosen by the data itself, which makes it a consistent calibration measure. We follow the
reference package ``relplot`` (apple/ml-calibration) number for number, so results agree with it to
1e-6, including its discretisation:

1. Kernel grid. For a bandwidth ``sigma`` the items are spread onto ``M = max(2000, round(20 /
   sigma)) // 2 + 1`` equally spaced points of [0, 1] by linear interpolation ("linear binning":
   an item at ``x`` gives ``1 - frac`` of its weight to the grid point below and ``frac`` above).
2. Reflected Gaussian smoothing. The gridded weights are mirrored at 0 and 1 (so no mass leaks out
   of [0, 1]) and convolved with the Gaussian density ``N(0, sigma^2)`` sampled at the grid offsets
   (relplot samples it at ``linspace(0, 1, M) - 0.5``, which for even ``M`` sits half a cell off
   centre; we keep that quirk so numbers match).
3. Evaluation. Smoothed residual sums ``S_r`` and counts ``S_1`` are interpolated linearly onto
   ``E = max(round(10 / sigma), 200)`` points, and ``smECE_sigma = sum|S_r| / sum(S_1 + 1e-4)``
   (the kernel-weighted mean absolute residual; the 1e-4 is relplot's guard against empty regions).
4. Bandwidth. The fixed point ``sigma* = smECE_sigma*``: relplot returns ``sigma = 1`` if
   ``smECE_1 > 1`` and otherwise bisects [0, 1] ten times, keeping the smallest tested ``sigma``
   with ``sigma >= smECE_sigma`` (a ``sigma`` below 1e-3 counts as "too small").

Why faster than relplot: every ``sigma >= 0.01`` uses the same grid (M = 1001), so the O(N)
gridding is done once per distinct grid, with ``np.bincount`` instead of ``np.add.at``, for the
residuals and the counts together; the convolution uses only the kernel's non-zero samples
(a Gaussian underflows to exactly 0 beyond ~38 sigma, so this changes nothing).

Bootstrap: ``smooth_ece_kernel`` computes smooth ECE for a chunk of resamples from their counts per
atom, without a loop over them (used by ``bootstrap_ci(smooth_ece, ...)`` and ``summarize``; the
bandwidth search only ever tests sigma = 1 and multiples of 1/1024, so a resample needs at most a few
kernel grids, all built from one set of per-segment sums), and ``smooth_curve_band`` gives the
bootstrap band of the smooth reliability curve at a fixed bandwidth.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal, overload

import numpy as np

from calibench.errors import CalibenchError
from calibench.metrics._validate import as_confidence, top_label
from calibench.metrics.resample import (
    CACHE_BLOCK,
    CountChunk,
    Kernel,
    Layout,
    RowKeys,
    Scratch,
    TopAtoms,
    cache_blocks,
    check_n_resamples,
    replicate_all,
    resample_indices,
    segment_sums,
)

DENSITY_EPS = 1e-4  # relplot's guard added to the smoothed counts
MIN_BANDWIDTH = 1e-3  # relplot's eps: bandwidths below this are treated as "too small"
BISECTION_STEPS = 10
DEFAULT_GRID_POINTS = 200  # relplot's plot mesh


def kernel_grid_size(sigma: float) -> int:
    """Number of kernel-grid points relplot uses for bandwidth ``sigma``."""
    return max(2000, round(20 / sigma)) // 2 + 1


def eval_grid_size(sigma: float) -> int:
    """Number of evaluation points relplot averages smECE over for bandwidth ``sigma``."""
    return max(round(10 / sigma), 200)


def linear_binning(x: np.ndarray, weights: np.ndarray, m: int) -> np.ndarray:
    """Spread ``weights`` (shape (W, N)) at positions ``x`` in [0, 1] onto ``m`` grid points.

    Returns a (W, m) array. Each item gives ``1 - frac`` of its weight to the grid point at or below
    it and ``frac`` to the next one (the last cell is closed, so x = 1 lands on the last point).
    """
    scaled = x * (m - 1)
    lower = scaled.astype(np.int64).clip(0, m - 2)
    frac = scaled - lower
    out = np.empty((weights.shape[0], m))
    for row, w in enumerate(weights):
        upper_part = np.bincount(lower, weights=frac * w, minlength=m - 1)
        lower_part = np.bincount(lower, weights=w, minlength=m - 1) - upper_part
        out[row, : m - 1] = lower_part
        out[row, m - 1] = 0.0
        out[row, 1:] += upper_part
    return out


@functools.lru_cache(maxsize=256)
def gaussian_samples(sigma: float, m: int) -> tuple[np.ndarray, int, int]:
    """Gaussian density sampled at relplot's kernel offsets, trimmed to its non-zero support.

    Returns ``(kernel, first, last)``: the samples for kernel indices ``first..last`` (inclusive) of
    the full ``m``-point kernel whose index ``m // 2`` is the centre tap.
    """
    offsets = np.linspace(0.0, 1.0, m) - 0.5
    full = np.exp(-(offsets * offsets) / (2 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma)
    nonzero = np.flatnonzero(full > 0)
    if nonzero.size == 0:  # cannot happen for sigma >= 1e-3, but never divide by an empty kernel
        nonzero = np.array([m // 2])
    first, last = int(nonzero[0]), int(nonzero[-1])
    kernel = full[first : last + 1]
    kernel.setflags(write=False)  # shared by the cache
    return kernel, first, last


def reflected_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Convolve each row of ``values`` (W, m) with the Gaussian, mirroring at both ends of [0, 1].

    The mirror does not repeat the end point (numpy's ``reflect`` padding), as in relplot.
    """
    m = values.shape[-1]
    kernel, first, last = gaussian_samples(sigma, m)
    centre = m // 2
    left, right = last - centre, centre - first  # both <= m - 1: one reflection is enough
    out = np.empty_like(values, dtype=float)
    for row, v in enumerate(np.atleast_2d(values)):
        padded = np.pad(v, (left, right), mode="reflect")
        out[row] = np.convolve(padded, kernel, mode="valid")
    return out


class _Smoother:
    """Caches the gridded (residual, count, ...) weights per kernel-grid size for one dataset."""

    def __init__(self, x: np.ndarray, weights: np.ndarray) -> None:
        self.x = x
        self.weights = weights
        self._grids: dict[int, np.ndarray] = {}

    def smoothed(self, sigma: float) -> np.ndarray:
        """Smoothed weights on the kernel grid for ``sigma``, shape (W, M)."""
        m = kernel_grid_size(sigma)
        if m not in self._grids:
            self._grids[m] = linear_binning(self.x, self.weights, m)
        return reflected_smooth(self._grids[m], sigma)

    def at(self, sigma: float, points: np.ndarray) -> np.ndarray:
        """Smoothed weights interpolated linearly at ``points``, shape (W, len(points))."""
        smooth = self.smoothed(sigma)
        knots = np.linspace(0.0, 1.0, smooth.shape[-1])
        return np.stack([np.interp(points, knots, row) for row in smooth])


def _validate(confidence: object, correct: object) -> tuple[np.ndarray, np.ndarray]:
    """Top-label inputs as float arrays (shared validation: bad input raises, never a silent number)."""
    conf, corr = top_label(confidence, correct)
    return conf, corr.astype(np.float64)


def fixed_point_bandwidth(smece_at: Callable[[float], float]) -> float:
    """The bandwidth ``sigma`` with ``sigma ~= smECE_sigma``, searched as relplot does.

    ``smECE_sigma`` falls as ``sigma`` grows, so ``sigma - smECE_sigma`` changes sign once on [0, 1];
    ten bisection steps locate the crossing to 1/1024. The upper end (``sigma >= smECE_sigma``) is
    returned, which never undersmooths.
    """

    def too_small(sigma: float) -> bool:
        return sigma < MIN_BANDWIDTH or sigma < smece_at(sigma)

    if too_small(1.0):
        return 1.0
    upper, lower = 1.0, 0.0
    for _ in range(BISECTION_STEPS):
        mid = (upper + lower) / 2
        if too_small(mid):
            lower = mid
        else:
            upper = mid
    return upper


def _smece_function(conf: np.ndarray, corr: np.ndarray) -> tuple[Callable[[float], float], _Smoother]:
    smoother = _Smoother(conf, np.stack([conf - corr, np.ones_like(conf)]))
    cache: dict[float, float] = {}

    def smece_at(sigma: float) -> float:
        if sigma not in cache:
            points = np.linspace(0.0, 1.0, eval_grid_size(sigma))
            residual, count = smoother.at(sigma, points)
            cache[sigma] = float(np.abs(residual).sum() / (count + DENSITY_EPS).sum())
        return cache[sigma]

    return smece_at, smoother


def smooth_ece_sigma(confidence: object, correct: object, sigma: float) -> float:
    """Smooth ECE at a fixed bandwidth ``sigma`` (relplot's ``smECE_sigma``)."""
    if not 0 < sigma <= 1:
        raise CalibenchError(f"sigma must be in (0, 1], got {sigma}")
    conf, corr = _validate(confidence, correct)
    smece_at, _ = _smece_function(conf, corr)
    return smece_at(float(sigma))


@overload
def smooth_ece(confidence: object, correct: object, *, return_bandwidth: Literal[False] = False) -> float: ...


@overload
def smooth_ece(
    confidence: object, correct: object, *, return_bandwidth: Literal[True]
) -> tuple[float, float]: ...


def smooth_ece(
    confidence: object, correct: object, *, return_bandwidth: bool = False
) -> float | tuple[float, float]:
    """Smooth ECE with the self-chosen bandwidth; equals ``relplot.smECE(confidence, correct)``.

    With ``return_bandwidth=True`` returns ``(smooth_ece, bandwidth)`` instead.
    """
    conf, corr = _validate(confidence, correct)
    smece_at, _ = _smece_function(conf, corr)
    sigma = fixed_point_bandwidth(smece_at)
    value = smece_at(sigma)
    return (value, sigma) if return_bandwidth else value


def smooth_calibration_curve(
    confidence: object, correct: object, *, grid: object | None = None, bandwidth: float | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Kernel-smoothed accuracy as a function of confidence: ``(grid, curve, bandwidth)``.

    ``curve[j] = sum_i K(grid_j, c_i) y_i / (sum_i K(grid_j, c_i) + 1e-4)`` with the reflected kernel at
    the smooth-ECE bandwidth (or ``bandwidth`` if given); this is relplot's ``prepare_rel_diagram``
    main line ``mu`` on its 200-point mesh by default.
    """
    conf, corr = _validate(confidence, correct)
    points = _grid(grid)
    if bandwidth is None:
        smece_at, _ = _smece_function(conf, corr)
        bandwidth = fixed_point_bandwidth(smece_at)
    elif not 0 < bandwidth <= 1:
        raise CalibenchError(f"bandwidth must be in (0, 1], got {bandwidth}")
    hits, count = _Smoother(conf, np.stack([corr, np.ones_like(conf)])).at(bandwidth, points)
    return points, hits / (count + DENSITY_EPS), float(bandwidth)


def smooth_density(confidence: object, *, bandwidth: float, grid: object | None = None) -> np.ndarray:
    """Reflected-kernel density of the confidences on ``grid`` (relplot's diagram ``density``)."""
    conf = as_confidence(confidence)
    if not 0 < bandwidth <= 1:
        raise CalibenchError(f"bandwidth must be in (0, 1], got {bandwidth}")
    points = _grid(grid)
    weights = np.full((1, conf.size), 1.0 / conf.size)
    return _Smoother(conf, weights).at(bandwidth, points)[0]


def _resampled_grids(
    x: np.ndarray, weights: list[np.ndarray | None], m: int, n_resamples: int, seed: int
) -> np.ndarray:
    """Linear binning of each bootstrap resample at once: shape (n_resamples, len(weights), m).

    One ``bincount`` per (weight, lower/upper neighbour) over the keys ``resample * m + grid point``
    replaces a Python loop over resamples (a weight of None means 1 per item). Resamples are those of
    ``resample.resample_indices``.
    """
    scaled = x * (m - 1)
    lower = scaled.astype(np.int64).clip(0, m - 2)
    frac = scaled - lower
    out = np.empty((n_resamples, len(weights), m))
    row = 0
    for idx in resample_indices(x.shape[0], n_resamples, seed):
        r = idx.shape[0]
        keys = RowKeys(lower[idx], m)
        f = frac[idx]
        for j, w in enumerate(weights):
            wj = None if w is None else w[idx]
            upper_part = keys.sums(f if wj is None else f * wj)
            total = keys.sums(wj).astype(np.float64)
            total -= upper_part
            total[:, 1:] += upper_part[:, :-1]
            out[row : row + r, j] = total
        row += r
    return out


def _smoothed_sum_weights(sigma: float, m: int, points: np.ndarray) -> np.ndarray:
    """Vector ``b`` with ``sum_e smooth(v)(points_e) = v @ b`` for any grid vector ``v`` (length ``m``).

    Smoothing and interpolation are linear, so the summed smoothed counts of a resample need no
    convolution of its own: ``b[u]`` is the total weight grid point ``u`` sends to the evaluation
    points, through the direct kernel path and its mirror images at 0 and 1.
    """
    kernel, first, last = gaussian_samples(sigma, m)
    full = np.zeros(m)
    full[first : last + 1] = kernel
    scaled = points * (m - 1)
    left = scaled.astype(np.int64).clip(0, m - 2)
    w = scaled - left
    a = np.bincount(left, weights=1 - w, minlength=m) + np.bincount(left + 1, weights=w, minlength=m)
    # corr[q + m - 1] = sum_j a[j] * full[j + q] for q in [-(m - 1), m - 1]
    corr = np.correlate(full, a, mode="full")

    def shifted(q: np.ndarray) -> np.ndarray:
        inside = (q >= -(m - 1)) & (q <= m - 1)
        return np.where(inside, corr[np.clip(q + m - 1, 0, 2 * m - 2)], 0.0)

    u = np.arange(m)
    centre = m // 2
    b = shifted(centre - u)  # grid point u reaches output j through kernel offset j - u
    b[1:] += shifted(centre + u)[1:]  # mirror at 0: extended index -u holds v[u]
    b[:-1] += shifted(centre + u - 2 * (m - 1))[:-1]  # mirror at 1: index 2(m - 1) - u holds v[u]
    return b


class _SigmaTerms:
    """What the summed smooth ECE needs for one bandwidth on its grid: the kernel's spectrum, the
    evaluation points' interpolation weights and the summed-count weights (computed once per sigma)."""

    def __init__(self, sigma: float, m: int, size: int) -> None:
        from scipy import fft

        kernel, first, last = gaussian_samples(sigma, m)
        full = np.zeros(m)
        full[first : last + 1] = kernel
        self.spectrum = fft.rfft(full, n=size)
        points = np.linspace(0.0, 1.0, eval_grid_size(sigma))
        scaled = points * (m - 1)
        self.left = scaled.astype(np.int64).clip(0, m - 2)
        self.w = scaled - self.left
        self.count_weights = _smoothed_sum_weights(sigma, m, points)
        self.eps_total = points.size * DENSITY_EPS


class _SpectralGrids:
    """Every resample's gridded residuals in the frequency domain, plus its gridded counts.

    A grid of ``m`` points is mirrored once on each side (length ``3m - 2``, as relplot extends it) and
    transformed once; smoothing with a bandwidth is then a product with the kernel's spectrum and one
    inverse FFT per row. The circular convolution needs no extra padding because the output window
    never wraps around. FFT results agree with direct convolution to ~1e-13 of the row's scale, which
    is fine for the summed smooth ECE (the pointwise curve uses direct convolution).
    """

    def __init__(self, grids: np.ndarray) -> None:
        from scipy import fft

        self.m = grids.shape[-1]
        self.size = fft.next_fast_len(3 * self.m - 2, real=True)
        mirrored = np.pad(grids[:, 0], ((0, 0), (self.m - 1, self.m - 1)), mode="reflect")
        self.residual_spectra = fft.rfft(mirrored, n=self.size, axis=-1)
        self.counts = np.ascontiguousarray(grids[:, 1])  # a copy, so the full grids can be freed

    def smece(self, rows: np.ndarray, terms: _SigmaTerms) -> np.ndarray:
        """Smooth ECE at the bandwidth of ``terms`` of the chosen rows (resamples)."""
        from scipy import fft

        m = self.m
        product = self.residual_spectra[rows] * terms.spectrum
        start = m - 1 + m // 2  # output j sits at linear-convolution index j + m // 2 + (m - 1)
        smooth = fft.irfft(product, n=self.size, axis=-1)[:, start : start + m]
        left, w = terms.left, terms.w
        residual = np.abs(smooth[:, left] * (1 - w) + smooth[:, left + 1] * w).sum(axis=1)
        count = self.counts[rows] @ terms.count_weights + terms.eps_total
        return residual / count


def bisection_grid_sizes() -> tuple[int, ...]:
    """Every kernel-grid size the bandwidth search can ask for: it tests sigma = 1 and then only
    multiples of 2**-BISECTION_STEPS, so at most a handful of grids (1001 points for sigma >= 0.01)."""
    steps = 2**BISECTION_STEPS
    sigmas = [1.0] + [k / steps for k in range(1, steps) if k / steps >= MIN_BANDWIDTH]
    return tuple(sorted({kernel_grid_size(s) for s in sigmas}))


class _GridSegments:
    """Runs of sorted atoms that share their kernel-grid cell on every grid the search can use.

    Linear binning gives an item at ``x`` the weight ``frac = x (m - 1) - lower`` on the upper grid
    point. Within a segment starting at confidence ``x0`` that is ``F0 + (m - 1) d`` with the segment
    constant ``F0 = x0 (m - 1) - lower`` and ``d = x - x0``, so a resample's grid on any of those grids
    follows from four sums per segment: counts, counts * d, and the same for the residual c - y.
    """

    def __init__(self, top: TopAtoms) -> None:
        c = top.c
        change = np.zeros(max(top.size - 1, 0), dtype=bool)
        for m in bisection_grid_sizes():
            lower = (c * (m - 1)).astype(np.int64).clip(0, m - 2)
            change |= lower[1:] != lower[:-1]
        starts = np.concatenate(([0], np.flatnonzero(change) + 1))
        self.bounds = np.append(starts, top.size)  # segment s: atoms bounds[s]:bounds[s + 1]
        self.x0 = c[starts]
        d = c - np.repeat(self.x0, np.diff(self.bounds))
        self.d = d
        self.resid_d = (c - top.y) * d
        self.trivial = starts.shape[0] == top.size  # one atom per segment: d == 0
        self._cells: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # the segments' pieces in each cache block: (block, first segment, piece starts in the block)
        self._pieces = []
        for lo, hi in cache_blocks(top.size):
            first = int(np.searchsorted(self.bounds, lo, side="right")) - 1
            last = int(np.searchsorted(self.bounds, hi - 1, side="right")) - 1
            self._pieces.append((lo, hi, first, np.maximum(self.bounds[first : last + 1], lo) - lo))

    def cells(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """(segment bounds of each of the m - 1 grid cells, F0 of each segment) on grid ``m``."""
        if m not in self._cells:
            scaled = self.x0 * (m - 1)
            lower = scaled.astype(np.int64).clip(0, m - 2)
            self._cells[m] = (np.searchsorted(lower, np.arange(m), side="left"), scaled - lower)
        return self._cells[m]

    def sums(self, chunk: CountChunk) -> tuple[np.ndarray, ...]:
        """Per (resample, segment): counts, counts * d, residuals, residuals * d."""
        top = chunk.layout.top
        assert top is not None
        total, wrong = chunk.prefix("total"), chunk.prefix("wrong")
        b = self.bounds
        count = (total[:, b[1:]] - total[:, b[:-1]]).astype(np.float64)
        n_correct = count - (wrong[:, b[1:]] - wrong[:, b[:-1]])
        if self.trivial:
            count_d = np.zeros_like(count)
            resid_d = count_d
        else:
            count_d, resid_d = self._weighted_sums(chunk.atoms_f, chunk.scratch)
        resid = self.x0 * count + count_d - n_correct  # sum of c - y = x0 * count + sum of d - correct
        return count, count_d, resid, resid_d

    def _weighted_sums(self, k: np.ndarray, scratch: Scratch) -> tuple[np.ndarray, np.ndarray]:
        """Per (resample, segment) sums of counts * d and counts * (c - y) d, a cache block at a time
        (a segment cut by a block edge is summed in two pieces; pieces are never empty)."""
        segments = self.bounds.shape[0] - 1
        count_d, resid_d = np.zeros((k.shape[0], segments)), np.zeros((k.shape[0], segments))
        work = scratch.get("smooth", (k.shape[0], min(k.shape[1], CACHE_BLOCK)))
        for lo, hi, first, starts in self._pieces:
            block, ids = work[:, : hi - lo], slice(first, first + starts.shape[0])
            count_d[:, ids] += np.add.reduceat(np.multiply(k[:, lo:hi], self.d[lo:hi], out=block), starts, axis=1)
            resid_d[:, ids] += np.add.reduceat(np.multiply(k[:, lo:hi], self.resid_d[lo:hi], out=block), starts, axis=1)
        return count_d, resid_d

    def grids(self, sums: tuple[np.ndarray, ...], m: int) -> np.ndarray:
        """Linear binning of every resample of the chunk onto grid ``m``: (rows, 2, m) residuals, counts."""
        count, count_d, resid, resid_d = sums
        cell_bounds, f0 = self.cells(m)
        out = np.zeros((count.shape[0], 2, m))
        for j, (mass, mass_d) in enumerate(((resid, resid_d), (count, count_d))):
            upper = segment_sums(f0 * mass + (m - 1) * mass_d, cell_bounds)
            out[:, j, : m - 1] = segment_sums(mass, cell_bounds) - upper
            out[:, j, 1:] += upper
        return out


def smooth_ece_kernel(layout: Layout) -> Kernel:
    """Chunk kernel: ``smooth_ece`` of every resample of a chunk (``layout`` from ``Layout.for_top``).

    Per resample the work is O(atoms) for the segment sums, then O(grid) per tested bandwidth: the
    bisection runs for the chunk's resamples in lock step, smoothing every resample that tries the same
    bandwidth in one batched FFT. Per-bandwidth terms are computed once for all chunks.
    """
    if layout.top is None:
        raise ValueError("smooth ECE replicates need a layout sorted by confidence (Layout.for_top)")
    segments = _GridSegments(layout.top)
    terms: dict[float, _SigmaTerms] = {}

    def kernel(chunk: CountChunk) -> np.ndarray:
        sums = segments.sums(chunk)
        spectral: dict[int, _SpectralGrids] = {}

        def smece_rows(sigma: float, rows: np.ndarray) -> np.ndarray:
            m = kernel_grid_size(sigma)
            if m not in spectral:
                spectral[m] = _SpectralGrids(segments.grids(sums, m))
            if sigma not in terms:
                terms[sigma] = _SigmaTerms(sigma, m, spectral[m].size)
            return spectral[m].smece(rows, terms[sigma])

        return _bisect(chunk.rows, smece_rows)

    return kernel


def _bisect(n_rows: int, smece_rows: Callable[[float, np.ndarray], np.ndarray]) -> np.ndarray:
    """``fixed_point_bandwidth``'s search for many rows at once; returns smECE at each row's bandwidth."""
    everyone = np.arange(n_rows)
    value = smece_rows(1.0, everyone)
    active = value <= 1.0  # relplot keeps sigma = 1 where smECE_1 > 1
    upper = np.ones(n_rows)
    lower = np.zeros(n_rows)
    for _ in range(BISECTION_STEPS):
        mid = (upper + lower) / 2
        for sigma in np.unique(mid[active]):
            rows = everyone[active & (mid == sigma)]
            if sigma < MIN_BANDWIDTH:
                small = np.ones(rows.size, dtype=bool)
                at_mid = np.zeros(rows.size)
            else:
                at_mid = smece_rows(float(sigma), rows)
                small = sigma < at_mid
            lower[rows[small]] = sigma
            upper[rows[~small]] = sigma
            value[rows[~small]] = at_mid[~small]
    return value


def smooth_ece_replicates(
    confidence: object, correct: object, *, n_resamples: int = 1000, seed: int = 0
) -> np.ndarray:
    """``smooth_ece`` of each bootstrap resample (those of ``resample_indices``), without a Python loop
    over resamples (see ``smooth_ece_kernel``)."""
    n_resamples = check_n_resamples(n_resamples)
    conf, corr = top_label(confidence, correct)
    layout = Layout.for_top(conf, corr)
    return replicate_all(layout, n_resamples, seed, [smooth_ece_kernel(layout)])[0]


def smooth_curve_band(
    confidence: object,
    correct: object,
    *,
    bandwidth: float,
    grid: object | None = None,
    n_resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile bootstrap band ``(low, high)`` of the smooth curve at a fixed bandwidth.

    As in relplot's diagram, the bandwidth stays fixed across resamples. Vectorised: all resamples are
    gridded by one ``bincount`` over (resample, grid point) keys.
    """
    conf, corr = _validate(confidence, correct)
    if not 0 < level < 1:
        raise CalibenchError(f"level must be in (0, 1), got {level}")
    n_resamples = check_n_resamples(n_resamples)
    if not 0 < bandwidth <= 1:
        raise CalibenchError(f"bandwidth must be in (0, 1], got {bandwidth}")
    points = _grid(grid)
    m = kernel_grid_size(bandwidth)
    grids = _resampled_grids(conf, [corr, None], m, n_resamples, seed)
    knots = np.linspace(0.0, 1.0, m)
    hits = reflected_smooth(grids[:, 0], bandwidth)
    count = reflected_smooth(grids[:, 1], bandwidth)
    curves = np.stack(
        [
            np.interp(points, knots, h) / (np.interp(points, knots, c) + DENSITY_EPS)
            for h, c in zip(hits, count, strict=True)
        ]
    )
    alpha = (1 - level) / 2
    low, high = np.quantile(curves, [alpha, 1 - alpha], axis=0)
    return low, high


def _grid(grid: object | None) -> np.ndarray:
    if grid is None:
        return np.linspace(0.0, 1.0, DEFAULT_GRID_POINTS)
    points = np.asarray(grid, dtype=float).ravel()
    if points.size == 0 or not np.all(np.isfinite(points)) or points.min() < 0 or points.max() > 1:
        raise CalibenchError("grid must be a non-empty array of points in [0, 1]")
    return points
