"""Draw metric-vs-x line panels with CIs (object API only, no pyplot), and embed figures as PNG data URIs.

Pure drawing: the caller (``calibench.study.report``) decides which units make a line and looks up
their numbers; these functions only put the given points on axes, so a figure shows exactly the numbers
the report computed.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

PALETTE = ("#3b6ea8", "#c0392b", "#2e8b57", "#8e44ad", "#d35400", "#16a085", "#7f8c8d", "#b8860b")


@dataclass(frozen=True)
class Line:
    """One line of a panel: an estimate with its 95% CI at each x (NaN bounds draw no error bar)."""

    label: str
    x: Sequence[float]
    estimate: Sequence[float]
    low: Sequence[float]
    high: Sequence[float]


@dataclass(frozen=True)
class Panel:
    """One axes: its title, its lines (coloured in order) and labelled horizontal reference lines."""

    title: str
    lines: Sequence[Line] = ()
    hlines: Mapping[str, float] = field(default_factory=dict)


def style_axes(ax: Axes, xlabel: str, ylabel: str, title: str) -> None:
    """The report's quiet axes style: small labels, light grid, no top/right spines."""
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(True, color="0.9", lw=0.6)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _draw_line(ax: Axes, line: Line, color: str) -> None:
    y = [float(v) for v in line.estimate]
    yerr = [[max(0.0, v - lo) if math.isfinite(v - lo) else 0.0 for v, lo in zip(y, line.low, strict=True)],
            [max(0.0, hi - v) if math.isfinite(hi - v) else 0.0 for v, hi in zip(y, line.high, strict=True)]]
    ax.errorbar(list(line.x), y, yerr=yerr, marker="o", ms=4, lw=1.4, capsize=3, label=line.label, color=color)


def plot_metric_lines(panels: Sequence[Panel], *, xlabel: str, ylabel: str, logx: bool,
                      xticks: Mapping[float, str] | None = None) -> Figure:
    """Panels two per row; each line in palette order with CI error bars; legend outside the data.

    ``xticks`` (value -> label) replaces the automatic x ticks, e.g. ``{1.35e8: "135M"}`` for model sizes
    that a log axis would otherwise label ``1.4 x 10^8``."""
    n = len(panels)
    ncols, nrows = min(n, 2), math.ceil(n / 2)
    fig = Figure(figsize=(7.6 * ncols, 3.6 * nrows), layout="constrained")
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for ci, line in enumerate(panel.lines):
            _draw_line(ax, line, PALETTE[ci % len(PALETTE)])
        for label, value in panel.hlines.items():
            ax.axhline(value, ls=":", color="0.3", lw=1.2, label=label)
        if logx:
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)
        if xticks:
            ax.set_xticks(list(xticks), list(xticks.values()))
            ax.xaxis.set_minor_locator(NullLocator())
        style_axes(ax, xlabel, ylabel, panel.title)
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # never over data
    return fig


def png_bytes(fig: Figure, *, dpi: int = 150, colors: int | None = 256) -> bytes:
    """``fig`` as PNG bytes at ``dpi`` (written into the pHYs chunk), no timestamp metadata, so the same
    study gives the same bytes. With ``colors`` the image is reduced to that many palette colours
    (plots are a few flat colours plus antialiasing: a quarter of the size, no visible change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    fig.patch.set_facecolor("white")
    canvas.draw()
    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    image = image.convert("RGB")
    if colors:
        image = image.quantize(colors=colors, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    image.save(buf, format="png", dpi=(dpi, dpi), optimize=colors is not None)
    return buf.getvalue()


def png_data_uri(fig: Figure, *, dpi: int = 150) -> str:
    """A PNG data URI of ``fig`` (``png_bytes``: palette PNG at ``dpi``)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig, dpi=dpi)).decode("ascii")


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass(frozen=True)
class Point:
    """One point of a scatter panel with its 95% CIs on both axes (NaN bounds draw no error bar).

    ``group`` picks the colour (e.g. the model), ``kind`` the marker (e.g. the method).
    """

    group: str
    kind: str
    x: float
    x_low: float
    x_high: float
    y: float
    y_low: float
    y_high: float


@dataclass(frozen=True)
class ScatterPanel:
    title: str
    points: Sequence[Point] = ()


def _err(v: float, lo: float, hi: float) -> list[list[float]]:
    below, above = v - lo, hi - v
    return [[max(0.0, below) if math.isfinite(below) else 0.0], [max(0.0, above) if math.isfinite(above) else 0.0]]


def plot_scatter(panels: Sequence[ScatterPanel], *, xlabel: str, ylabel: str) -> Figure:
    """Scatter panels two per row: colour per group and marker per kind (both in first-seen order, the
    same across panels), CI error bars on both axes, one legend of groups and kinds per panel."""
    from matplotlib.lines import Line2D

    groups = list(dict.fromkeys(p.group for panel in panels for p in panel.points))
    kinds = list(dict.fromkeys(p.kind for panel in panels for p in panel.points))
    color = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}
    marker = {k: MARKERS[i % len(MARKERS)] for i, k in enumerate(kinds)}
    n = len(panels)
    ncols, nrows = min(n, 2), math.ceil(n / 2)
    fig = Figure(figsize=(7.6 * ncols, 3.9 * nrows), layout="constrained")
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for p in panel.points:
            ax.errorbar([p.x], [p.y], xerr=_err(p.x, p.x_low, p.x_high), yerr=_err(p.y, p.y_low, p.y_high),
                        marker=marker[p.kind], ms=6, ls="none", lw=0.9, capsize=2, color=color[p.group])
        style_axes(ax, xlabel, ylabel, panel.title)
        seen_g = list(dict.fromkeys(p.group for p in panel.points))
        seen_k = list(dict.fromkeys(p.kind for p in panel.points))
        handles = ([Line2D([], [], color=color[g], marker="o", ls="none", label=g) for g in seen_g]
                   + [Line2D([], [], color="0.3", marker=marker[k], ls="none", label=k) for k in seen_k])
        ax.legend(handles=handles, fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def count_label(n: float) -> str:
    """A count as people write model sizes: 135M, 1.4B, 70k (three significant digits at most)."""
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"
