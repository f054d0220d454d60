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
from matplotlib.ticker import MaxNLocator

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


def plot_metric_lines(panels: Sequence[Panel], *, xlabel: str, ylabel: str, logx: bool) -> Figure:
    """Panels two per row; each line in palette order with CI error bars; legend outside the data."""
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
        style_axes(ax, xlabel, ylabel, panel.title)
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # never over data
    return fig


def png_data_uri(fig: Figure, *, dpi: int = 80) -> str:
    """A PNG data URI of ``fig`` (no timestamp metadata, so the same study gives the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None}, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
