"""Draw reliability diagrams with matplotlib (object API only: no pyplot, no global style changes).

Every function draws a diagram object from ``calibench.report.diagrams`` and computes nothing, so a
picture shows exactly the numbers that were reported: the title's ECE uses the table's binning, each
bar is labelled with its item count, and below ``metrics.binning.min_items(n_bins)`` items the title
carries a small-n warning. Figures are plain ``matplotlib.figure.Figure``
objects (never registered with pyplot), so drawing many of them in a long run leaks no memory and
touches no global state; ``save_figure`` writes PNG, SVG or PDF atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from calibench.errors import CalibenchError
from calibench.io import write_with
from calibench.report.diagrams import ReliabilityDiagram, SmoothDiagram

Diagram = ReliabilityDiagram | SmoothDiagram

ACCURACY_COLOR = "#3b6ea8"
GAP_COLOR = "#c0392b"
CURVE_COLOR = "#c0392b"
HIST_COLOR = "#8a8f98"
DIAGONAL_COLOR = "0.35"
_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
# Bars narrower than this (equal-mass bins of tied confidences) are widened so they stay visible.
_MIN_BAR_WIDTH = 0.012
_SINGLE_SIZE = (4.2, 5.0)
_CELL_SIZE = (3.4, 4.2)


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _min_items(n_bins: int) -> int:
    from calibench.metrics.binning import min_items

    return min_items(n_bins)


def _style_main(ax: Axes, *, ylabel: bool) -> None:
    ax.plot([0, 1], [0, 1], ls="--", lw=1.0, color=DIAGONAL_COLOR, label="perfect calibration", zorder=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.grid(True, color="0.9", lw=0.6, zorder=0)
    ax.set_axisbelow(True)
    ax.tick_params(labelbottom=False, labelsize=8)
    if ylabel:
        ax.set_ylabel("accuracy", fontsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _style_hist(ax: Axes, *, ylabel: str | None) -> None:
    ax.set_xlim(0, 1)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.tick_params(labelsize=8)
    ax.set_xlabel("confidence", fontsize=9)
    ax.set_yticks([])
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=8)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def _title(ax: Axes, title: str | None, stats: str) -> None:
    text = stats if not title else f"{title}\n{stats}"
    ax.set_title(text, fontsize=9.5, loc="left")


def draw_reliability(diagram: ReliabilityDiagram, ax: Axes, hist_ax: Axes, *, title: str | None = None,
                     ylabel: bool = True, legend: bool = True) -> None:
    """Draw a binned diagram on given axes: accuracy bars, hatched gap to mean confidence, histogram."""
    t = diagram.table
    mask = (t["count"] > 0).to_numpy()
    filled = t[mask]
    lower = np.asarray(diagram.bar_lower, dtype=float)[mask]
    upper = np.asarray(diagram.bar_upper, dtype=float)[mask]
    width = upper - lower
    narrow = width < _MIN_BAR_WIDTH
    lower = np.where(narrow, (lower + upper) / 2 - _MIN_BAR_WIDTH / 2, lower)
    width = np.where(narrow, _MIN_BAR_WIDTH, width)
    acc = filled["accuracy"].to_numpy(dtype=float)
    conf = filled["confidence"].to_numpy(dtype=float)
    ax.bar(lower, acc, width=width, align="edge", color=ACCURACY_COLOR, edgecolor="white", lw=0.6,
           label="accuracy", zorder=2)
    ax.bar(lower, conf - acc, bottom=acc, width=width, align="edge", facecolor=(*mpl.colors.to_rgb(GAP_COLOR), 0.18),
           edgecolor=GAP_COLOR, hatch="////", lw=0.6, label="gap to mean confidence", zorder=2)
    _style_main(ax, ylabel=ylabel)
    if legend:
        ax.legend(loc="upper left", fontsize=7, frameon=False)
    for x, w, a, c, k in zip(lower, width, acc, conf, filled["count"], strict=True):  # items per bin
        ax.text(x + w / 2, min(max(a, c) + 0.015, 0.97), f"{int(k)}", ha="center", va="bottom", fontsize=5.5,
                color="0.25", zorder=5)
    if diagram.binning == "mass":  # the title's ECE uses the table's bins (equal-mass ECE is ACE)
        stats = f"ECE (mass bins) {_fmt(diagram.table_ece)} · n={diagram.n:,}"
    else:
        stats = f"ECE {_fmt(diagram.ece)} · ACE {_fmt(diagram.ace)} · n={diagram.n:,}"
    if diagram.small_n is not None:
        stats += f"\n! small n: < {_min_items(diagram.n_bins)} items for {diagram.n_bins} bins"
    _title(ax, title, stats)

    hist_ax.stairs(diagram.hist_counts, diagram.hist_edges, fill=True, color=HIST_COLOR, alpha=0.8)
    hist_ax.axvline(diagram.mean_confidence, color=GAP_COLOR, lw=1.2, ls="--", label="mean conf.")
    hist_ax.axvline(diagram.accuracy, color=ACCURACY_COLOR, lw=1.2, label="accuracy")
    top = max(int(np.max(diagram.hist_counts)), 1)
    hist_ax.set_ylim(0, top * 1.1)
    _style_hist(hist_ax, ylabel="count" if ylabel else None)
    if legend:
        hist_ax.legend(loc="upper left", fontsize=6.5, frameon=False, ncols=2)


def draw_smooth(diagram: SmoothDiagram, ax: Axes, hist_ax: Axes, *, title: str | None = None,
                ylabel: bool = True, legend: bool = True) -> None:
    """Draw a smooth diagram on given axes: curve, bootstrap band, diagonal, confidence density."""
    g, support = diagram.grid, diagram.support
    if np.isfinite(diagram.band_low).any():
        ax.fill_between(g, diagram.band_low, diagram.band_high, where=support, color=CURVE_COLOR, alpha=0.2,
                        lw=0, label=f"{diagram.level:.0%} bootstrap band", zorder=2)
    # Where few items lie within a bandwidth the curve is extrapolation: drawn faint, without a band.
    ax.plot(g, diagram.curve, color=CURVE_COLOR, lw=1.0, ls=":", alpha=0.5, zorder=3)
    ax.plot(g, np.where(support, diagram.curve, np.nan), color=CURVE_COLOR, lw=2.0, label="smoothed accuracy",
            zorder=4)
    _style_main(ax, ylabel=ylabel)
    if legend:
        ax.legend(loc="upper left", fontsize=7, frameon=False)
    stats = f"smECE {_fmt(diagram.smooth_ece)} · n={diagram.n:,}"
    _title(ax, title, stats)

    hist_ax.fill_between(g, diagram.density, color=HIST_COLOR, alpha=0.8, lw=0)
    hist_ax.axvline(diagram.mean_confidence, color=GAP_COLOR, lw=1.2, ls="--", label="mean conf.")
    hist_ax.axvline(diagram.accuracy, color=ACCURACY_COLOR, lw=1.2, label="accuracy")
    hist_ax.set_ylim(0, max(float(np.nanmax(diagram.density)), 1e-9) * 1.1)
    _style_hist(hist_ax, ylabel="density" if ylabel else None)
    if legend:
        hist_ax.legend(loc="upper left", fontsize=6.5, frameon=False, ncols=2)


def _draw(diagram: Diagram, ax: Axes, hist_ax: Axes, **kwargs: object) -> None:
    if isinstance(diagram, ReliabilityDiagram):
        draw_reliability(diagram, ax, hist_ax, **kwargs)  # type: ignore[arg-type]
    elif isinstance(diagram, SmoothDiagram):
        draw_smooth(diagram, ax, hist_ax, **kwargs)  # type: ignore[arg-type]
    else:
        raise CalibenchError(f"cannot draw {type(diagram).__name__}; expected a reliability or smooth diagram")


def _single(diagram: Diagram, ax: Axes | None, title: str | None) -> Figure:
    if ax is None:
        fig = Figure(figsize=_SINGLE_SIZE, layout="constrained")
        gs = fig.add_gridspec(2, 1, height_ratios=[4, 1])
        ax = fig.add_subplot(gs[0])
        hist_ax = fig.add_subplot(gs[1], sharex=ax)
    else:
        from mpl_toolkits.axes_grid1 import make_axes_locatable

        fig = ax.get_figure()
        hist_ax = make_axes_locatable(ax).append_axes("bottom", size="25%", pad=0.3, sharex=ax)
    _draw(diagram, ax, hist_ax, title=title)
    return fig  # type: ignore[return-value]


def plot_reliability(diagram: ReliabilityDiagram, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Draw a binned reliability diagram; with ``ax`` the histogram goes in a new axis below it."""
    return _single(diagram, ax, title)


def plot_smooth(diagram: SmoothDiagram, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Draw a smooth reliability diagram; with ``ax`` the density goes in a new axis below it."""
    return _single(diagram, ax, title)


def plot_grid(diagrams: Mapping[str, Diagram], *, ncols: int | None = None, suptitle: str | None = None) -> Figure:
    """Several diagrams side by side (label -> diagram), e.g. one per training stage, in input order."""
    if not diagrams:
        raise CalibenchError("no diagrams to draw")
    n = len(diagrams)
    ncols = min(n, 4) if ncols is None else ncols
    if ncols < 1:
        raise CalibenchError(f"ncols must be >= 1, got {ncols}")
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(_CELL_SIZE[0] * ncols, _CELL_SIZE[1] * nrows), layout="constrained")
    gs = fig.add_gridspec(2 * nrows, ncols, height_ratios=[4, 1] * nrows)
    for i, (label, diagram) in enumerate(diagrams.items()):
        r, c = divmod(i, ncols)
        ax = fig.add_subplot(gs[2 * r, c])
        hist_ax = fig.add_subplot(gs[2 * r + 1, c], sharex=ax)
        _draw(diagram, ax, hist_ax, title=label, ylabel=c == 0, legend=i == 0)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return fig


def plot_reliability_grid(diagrams: Mapping[str, Diagram], path: str | os.PathLike[str] | None = None, *,
                          ncols: int | None = None, suptitle: str | None = None) -> Figure:
    """Draw ``plot_grid`` and, if ``path`` is given, save it (PNG/SVG/PDF by suffix, atomically)."""
    fig = plot_grid(diagrams, ncols=ncols, suptitle=suptitle)
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG, SVG or PDF (chosen by suffix) atomically; SVG/PDF carry no timestamp."""
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CalibenchError(f"{path}: unknown image format '{path.suffix}' (use .png, .svg or .pdf)")
    metadata = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[fmt]
    # A fixed hash salt makes SVG element ids, and so the file, identical across runs.
    with mpl.rc_context({"svg.hashsalt": "calibench", "svg.fonttype": "path"}):
        write_with(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata,
                                                 facecolor="white"))
    return path


# A matrix cell in inches: title band (up to three lines), diagram, gap, histogram, x labels; fixed so a
# large grid needs no layout engine (constrained layout costs more than the drawing on 100+ axes).
_M_W, _M_LEFT, _M_RIGHT = 3.6, 0.55, 0.1
_M_TITLE, _M_MAIN, _M_GAP, _M_HIST, _M_FOOT = 0.62, 2.45, 0.08, 0.55, 0.4


def plot_matrix(diagrams: Mapping[tuple[str, str], Diagram], rows: Sequence[str], cols: Sequence[str], *,
                suptitle: str | None = None) -> Figure:
    """Diagrams on a rows x columns grid (e.g. models x methods), keyed ``(row, col)``; a missing cell is
    left blank, so every column shows the same method and every row the same model. Cells are placed at
    fixed sizes (no layout engine), so drawing time grows only with the number of cells."""
    if not diagrams:
        raise CalibenchError("no diagrams to draw")
    cell_h = _M_TITLE + _M_MAIN + _M_GAP + _M_HIST + _M_FOOT
    top = 0.45 if suptitle else 0.05
    width, height = _M_W * len(cols), cell_h * len(rows) + top
    fig = Figure(figsize=(width, height))
    first = True
    for r, row in enumerate(rows):
        for c, col in enumerate(cols):
            diagram = diagrams.get((row, col))
            if diagram is None:
                continue
            x0 = c * _M_W + _M_LEFT
            w = _M_W - _M_LEFT - _M_RIGHT
            y_main = height - top - r * cell_h - _M_TITLE - _M_MAIN      # bottom of the diagram, inches
            y_hist = y_main - _M_GAP - _M_HIST
            ax = fig.add_axes((x0 / width, y_main / height, w / width, _M_MAIN / height))
            hist_ax = fig.add_axes((x0 / width, y_hist / height, w / width, _M_HIST / height), sharex=ax)
            _draw(diagram, ax, hist_ax, title=f"{row} · {col}", ylabel=c == 0, legend=first)
            first = False
    if suptitle:
        fig.suptitle(suptitle, fontsize=11, y=1 - 0.1 / height, va="top")
    return fig
