"""Reliability-diagram data, computed apart from drawing (as relplot's ``prepare_rel_diagram`` does).

A diagram object holds every number a picture shows, so the numbers can be tested, stored as JSON next
to the image, and redrawn in another style without recomputing anything. The binned diagram takes its
table straight from ``calibench.metrics.reliability_table`` so the picture and the reported ECE can
never disagree; the smooth diagram adds a bootstrap band so a reader sees which wiggles are noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from calibench.errors import CalibenchError

ArrayLike = npt.ArrayLike

#: points on [0, 1] where smooth curves and densities are evaluated (relplot's plot mesh)
GRID_POINTS = 200
#: a smooth curve is data-supported where about this many items lie within one bandwidth
MIN_SUPPORT_ITEMS = 5.0


def _finite_or_none(x: Any) -> float | None:
    """JSON has no NaN; empty bins and undefined numbers become null."""
    x = float(x)
    return x if math.isfinite(x) else None


def _list(a: np.ndarray) -> list[float | None]:
    return [_finite_or_none(v) for v in np.asarray(a, dtype=float).ravel()]


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Binned reliability diagram: per-bin accuracy vs mean confidence, plus a confidence histogram.

    ``table`` is exactly ``reliability_table(confidence, correct, n_bins=..., binning=...)``. ``ece``
    is always the equal-width ECE and ``ace`` the equal-mass one (both with ``n_bins``), whatever
    ``binning`` the table uses, so a title can show both. The histogram always uses equal-width edges
    (``hist_edges``), so it shows where the confidences lie even when the table uses equal-mass bins
    (whose counts are equal by construction). ``bar_lower``/``bar_upper`` are the x-extent of each
    bar: the bin edges for equal-width bins, and the smallest/largest confidence in the bin for
    equal-mass bins (whose edges can span a wide empty range, e.g. (0, 1] for a tie group at 1.0).
    """

    table: pd.DataFrame
    ece: float
    ace: float
    n: int
    accuracy: float
    mean_confidence: float
    hist_counts: np.ndarray
    hist_edges: np.ndarray
    n_bins: int
    binning: str
    bar_lower: np.ndarray
    bar_upper: np.ndarray

    @property
    def table_ece(self) -> float:
        """The ECE with the table's own binning (equal-mass ECE is ACE), the number a title shows."""
        return self.ace if self.binning == "mass" else self.ece

    @property
    def small_n(self) -> str | None:
        """The small-n warning for this many items and bins (``metrics.binning.small_n_warning``)."""
        from calibench.metrics.binning import small_n_warning

        return small_n_warning(self.n, self.n_bins)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (NaN -> null)."""
        table = {
            col: ([int(v) for v in self.table[col]] if col in ("bin", "count") else _list(self.table[col].to_numpy()))
            for col in self.table.columns
        }
        return {
            "kind": "reliability",
            "n": int(self.n),
            "n_bins": int(self.n_bins),
            "binning": self.binning,
            "ece": _finite_or_none(self.ece),
            "ace": _finite_or_none(self.ace),
            "table_ece": _finite_or_none(self.table_ece),
            "small_n": self.small_n,
            "accuracy": _finite_or_none(self.accuracy),
            "mean_confidence": _finite_or_none(self.mean_confidence),
            "table": table,
            "hist_counts": [int(c) for c in self.hist_counts],
            "hist_edges": _list(self.hist_edges),
            "bar_lower": _list(self.bar_lower),
            "bar_upper": _list(self.bar_upper),
        }


@dataclass(frozen=True)
class SmoothDiagram:
    """Kernel-smoothed reliability curve with a percentile bootstrap band and the confidence density.

    ``curve`` is ``smooth_calibration_curve`` on ``grid`` at smooth ECE's bandwidth;
    ``band_low``/``band_high`` are the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the same
    curve recomputed on item resamples (same grid, same bandwidth). ``density`` is the reflected-kernel
    density of the confidences at that bandwidth (relplot's diagram density). Far from any data the
    kernel curve is extrapolation (it drifts to 0); ``support`` marks where it is not.
    """

    grid: np.ndarray
    curve: np.ndarray
    band_low: np.ndarray
    band_high: np.ndarray
    smooth_ece: float
    density: np.ndarray
    bandwidth: float
    n: int
    accuracy: float
    mean_confidence: float
    n_resamples: int
    level: float
    seed: int

    @property
    def support(self) -> np.ndarray:
        """Grid points with at least ``MIN_SUPPORT_ITEMS`` expected within one bandwidth (n * density * 2h)."""
        return self.n * self.density * 2.0 * self.bandwidth >= MIN_SUPPORT_ITEMS

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (NaN -> null)."""
        return {
            "kind": "smooth",
            "n": int(self.n),
            "smooth_ece": _finite_or_none(self.smooth_ece),
            "bandwidth": _finite_or_none(self.bandwidth),
            "accuracy": _finite_or_none(self.accuracy),
            "mean_confidence": _finite_or_none(self.mean_confidence),
            "n_resamples": int(self.n_resamples),
            "level": float(self.level),
            "seed": int(self.seed),
            "grid": _list(self.grid),
            "curve": _list(self.curve),
            "band_low": _list(self.band_low),
            "band_high": _list(self.band_high),
            "density": _list(self.density),
            "support": [bool(v) for v in self.support],
        }


def reliability_diagram(confidence: ArrayLike, correct: ArrayLike, *, n_bins: int = 10,
                        binning: str = "width") -> ReliabilityDiagram:
    """Compute a binned reliability diagram (validation is calibench.metrics')."""
    from calibench.metrics import ace, assign_bins, ece, reliability_table

    table = reliability_table(confidence, correct, n_bins=n_bins, binning=binning)
    conf = np.asarray(confidence, dtype=float).ravel()
    corr = np.asarray(correct, dtype=float).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Right-closed bins with 0.0 in the first bin (docs/design.md), the same rule as the metrics.
    idx = np.searchsorted(edges[1:-1], conf, side="left")
    counts = np.bincount(idx, minlength=n_bins)
    if binning == "mass":
        bins = assign_bins(conf, n_bins=n_bins, binning="mass")[0]
        bar_lower = np.full(n_bins, np.nan)
        bar_upper = np.full(n_bins, np.nan)
        np.fmin.at(bar_lower, bins, conf)
        np.fmax.at(bar_upper, bins, conf)
    else:
        bar_lower = table["lower"].to_numpy(dtype=float)
        bar_upper = table["upper"].to_numpy(dtype=float)
    return ReliabilityDiagram(
        table=table,
        ece=float(ece(conf, corr, n_bins=n_bins, binning="width")),
        ace=float(ace(conf, corr, n_bins=n_bins)),
        n=int(conf.size),
        accuracy=float(corr.mean()),
        mean_confidence=float(conf.mean()),
        hist_counts=counts.astype(np.int64),
        hist_edges=edges,
        n_bins=int(n_bins),
        binning=binning,
        bar_lower=bar_lower,
        bar_upper=bar_upper,
    )


def smooth_reliability_diagram(confidence: ArrayLike, correct: ArrayLike, *, n_resamples: int = 200,
                               level: float = 0.95, seed: int = 0,
                               grid_points: int = GRID_POINTS) -> SmoothDiagram:
    """Compute a smooth reliability diagram with a seeded percentile bootstrap band.

    The bandwidth is smooth ECE's own fixed point and stays fixed across resamples, as in relplot's
    ``prepare_rel_diagram``. ``n_resamples=0`` skips the band (``band_low``/``band_high`` are NaN).
    """
    from calibench.metrics import smooth_calibration_curve, smooth_ece
    from calibench.metrics.smooth import smooth_curve_band, smooth_density

    if isinstance(n_resamples, bool) or int(n_resamples) != n_resamples or n_resamples < 0:
        raise CalibenchError(f"n_resamples must be a non-negative integer, got {n_resamples!r}")
    if not 0.0 < level < 1.0:
        raise CalibenchError(f"level must be in (0, 1), got {level}")
    if grid_points < 2:
        raise CalibenchError(f"grid_points must be >= 2, got {grid_points}")
    grid = np.linspace(0.0, 1.0, grid_points)
    # smooth_ece validates the inputs (NaN, range, lengths, empty) before anything else uses them.
    sece, bandwidth = smooth_ece(confidence, correct, return_bandwidth=True)
    conf = np.asarray(confidence, dtype=float).ravel()
    corr = np.asarray(correct, dtype=float).ravel()
    _, curve, _ = smooth_calibration_curve(conf, corr, grid=grid, bandwidth=bandwidth)
    curve = np.asarray(curve, dtype=float)
    if n_resamples > 0:
        band_low, band_high = smooth_curve_band(conf, corr, bandwidth=bandwidth, grid=grid,
                                                n_resamples=int(n_resamples), level=level, seed=seed)
    else:
        band_low = band_high = np.full_like(curve, np.nan)
    return SmoothDiagram(
        grid=grid,
        curve=curve,
        band_low=np.asarray(band_low, dtype=float),
        band_high=np.asarray(band_high, dtype=float),
        smooth_ece=float(sece),
        density=np.asarray(smooth_density(conf, bandwidth=bandwidth, grid=grid), dtype=float),
        bandwidth=float(bandwidth),
        n=int(conf.size),
        accuracy=float(corr.mean()),
        mean_confidence=float(conf.mean()),
        n_resamples=int(n_resamples),
        level=float(level),
        seed=int(seed),
    )
