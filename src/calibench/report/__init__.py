"""calibench.report: diagrams and drawing only (data in ``diagrams``, drawing in ``plots`` and ``lines``).

Compute a diagram once (``reliability_diagram``, ``smooth_reliability_diagram``), keep its numbers
(``to_dict()``), draw it alone (``plot_reliability``, ``plot_smooth``) or next to others
(``plot_reliability_grid``) and save it atomically as PNG/SVG/PDF (``save_figure``). ``plot_matrix`` puts
diagrams on a rows x columns grid (models x methods). ``plot_metric_lines`` draws metric-vs-x panels with
CIs from given numbers (``Line``, ``Panel``), ``plot_scatter`` points with CIs on both axes (``Point``,
``ScatterPanel``); ``plot_life`` draws the lifecycle figure (``LifeChart``: metrics along a model's
life); ``png_bytes``/``png_data_uri`` give a palette PNG at a stated dpi for HTML. Nothing here reads a study: the study report (``calibench.study.report``) computes and
calls these.
"""

from __future__ import annotations

from calibench.report.diagrams import (
    ReliabilityDiagram,
    SmoothDiagram,
    reliability_diagram,
    smooth_reliability_diagram,
)
from calibench.report.life import LifeChart, LifePanel, LifeSeries, StageSpan, plot_life
from calibench.report.lines import (
    Line,
    Panel,
    Point,
    ScatterPanel,
    count_label,
    plot_metric_lines,
    plot_scatter,
    png_bytes,
    png_data_uri,
)
from calibench.report.plots import (
    plot_grid,
    plot_matrix,
    plot_reliability,
    plot_reliability_grid,
    plot_smooth,
    save_figure,
)

__all__ = [
    "LifeChart",
    "LifePanel",
    "LifeSeries",
    "Line",
    "Panel",
    "Point",
    "ReliabilityDiagram",
    "ScatterPanel",
    "SmoothDiagram",
    "StageSpan",
    "count_label",
    "plot_grid",
    "plot_life",
    "plot_matrix",
    "plot_metric_lines",
    "plot_reliability",
    "plot_reliability_grid",
    "plot_scatter",
    "plot_smooth",
    "png_bytes",
    "png_data_uri",
    "reliability_diagram",
    "save_figure",
    "smooth_reliability_diagram",
]
