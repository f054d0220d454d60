"""calibench.report: diagrams and drawing only (data in ``diagrams``, drawing in ``plots`` and ``lines``).

Compute a diagram once (``reliability_diagram``, ``smooth_reliability_diagram``), keep its numbers
(``to_dict()``), draw it alone (``plot_reliability``, ``plot_smooth``) or next to others
(``plot_reliability_grid``) and save it atomically as PNG/SVG/PDF (``save_figure``).
"""

from __future__ import annotations

from calibench.report.diagrams import (
    ReliabilityDiagram,
    SmoothDiagram,
    reliability_diagram,
    smooth_reliability_diagram,
)
from calibench.report.plots import (
    plot_grid,
    plot_reliability,
    plot_reliability_grid,
    plot_smooth,
    save_figure,
)

__all__ = [
    "ReliabilityDiagram",
    "SmoothDiagram",
    "plot_grid",
    "plot_reliability",
    "plot_reliability_grid",
    "plot_smooth",
    "reliability_diagram",
    "save_figure",
    "smooth_reliability_diagram",
]
