"""Draw the lifecycle figure: metrics along a model's life (checkpoints, SFT epochs, RL/DPO), one line per method.

Pure drawing of given numbers (``calibench.study.life`` computes them): rows are tasks, columns metrics
(ECE with its 95% CI first, accuracy beside it); the x axis is the life of the model with one tick per
revision and a shaded band per stage; a branch (RL, DPO) starts from the last point before it.
Points that failed a validity gate are drawn hollow. Methods are dodged a little along x (``DODGE``) so
methods with equal numbers stay visible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from matplotlib.figure import Figure

from calibench.report.lines import PALETTE, Line, style_axes

STAGE_SHADES = ("#f3f5f7", "#ffffff")
DODGE = 0.07     # x offset between methods at one revision (tick units), so equal values stay visible
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass(frozen=True)
class StageSpan:
    """A stage on the life axis: its name and the x of its first and last point."""

    label: str
    start: float
    end: float


@dataclass(frozen=True)
class LifeSeries:
    """One method on one panel: its segments (the spine first, then branches) and its invalid points."""

    label: str
    segments: Sequence[Line]
    invalid: Sequence[tuple[float, float]] = field(default_factory=tuple)


@dataclass(frozen=True)
class LifePanel:
    title: str
    ylabel: str
    series: Sequence[LifeSeries]


@dataclass(frozen=True)
class LifeChart:
    """Everything the lifecycle figure shows: x ticks (x -> label), stage spans, rows (tasks) of panels."""

    ticks: Mapping[float, str]
    spans: Sequence[StageSpan]
    rows: Sequence[Sequence[LifePanel | None]]   # None: that metric is undefined on the task (a blank)


def _yerr(line: Line) -> list[list[float]]:
    lo = [max(0.0, v - a) if math.isfinite(v - a) else 0.0 for v, a in zip(line.estimate, line.low, strict=True)]
    hi = [max(0.0, b - v) if math.isfinite(b - v) else 0.0 for v, b in zip(line.estimate, line.high, strict=True)]
    return [lo, hi]


def plot_life(chart: LifeChart, *, panel_size: tuple[float, float] = (5.4, 2.9)) -> Figure:
    """One row of panels per task, one column per metric; a legend of methods right of each row."""
    nrows = len(chart.rows)
    ncols = max(len(r) for r in chart.rows)
    fig = Figure(figsize=(panel_size[0] * ncols + 1.4, panel_size[1] * nrows + 0.3), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    xs = sorted(chart.ticks)
    for r, row in enumerate(chart.rows):
        panels = [p for p in row if p is not None]
        methods = list(dict.fromkeys(s.label for p in panels for s in p.series))
        color = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}
        last = max(c for c, p in enumerate(row) if p is not None)
        for c in range(ncols):
            ax = axes[r][c]
            panel = row[c] if c < len(row) else None
            if panel is None:
                ax.set_visible(False)
                continue
            for i, span in enumerate(chart.spans):
                ax.axvspan(span.start - 0.5, span.end + 0.5, color=STAGE_SHADES[i % 2], zorder=0, lw=0)
                ax.text((span.start + span.end) / 2, 1.01, span.label, transform=ax.get_xaxis_transform(),
                        ha="center", va="bottom", fontsize=6.5, color="0.35")
            for k, s in enumerate(panel.series):
                col = color[s.label]
                dodge = (k - (len(panel.series) - 1) / 2) * DODGE   # methods side by side, not on top of each other
                for j, seg in enumerate(s.segments):
                    ax.errorbar([x + dodge for x in seg.x], list(seg.estimate), yerr=_yerr(seg), marker=_MARKERS[k % len(_MARKERS)],
                                ms=3.5, lw=1.3, capsize=2, color=col, ls="-" if j == 0 else "--",
                                label=s.label if j == 0 else None, zorder=3)
                if s.invalid:
                    ax.plot([p[0] + dodge for p in s.invalid], [p[1] for p in s.invalid], ls="none", marker="o", ms=7,
                            mfc="white", mec=col, mew=1.2, zorder=4)
            ax.set_xlim(xs[0] - 0.5, xs[-1] + 0.5)
            ax.set_xticks(xs, [chart.ticks[x] for x in xs], rotation=45, ha="right")
            style_axes(ax, "", panel.ylabel, panel.title)
            ax.set_title(panel.title, fontsize=10, loc="left", pad=13)
            ax.grid(False, axis="x")
            if c == last:
                handles, labels = ax.get_legend_handles_labels()
                if any(s.invalid for p in panels for s in p.series):
                    from matplotlib.lines import Line2D

                    handles.append(Line2D([], [], ls="none", marker="o", ms=7, mfc="white", mec="0.3"))
                    labels.append("fails a validity gate")
                ax.legend(handles, labels, fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
