"""calibench.metrics: calibration metrics over plain arrays (lists, numpy, pandas) or record tables.

Every function validates its input and raises :class:`calibench.errors.CalibenchError` (a
``ValueError``) naming the argument and the first bad element; conventions are in docs/metrics.md.

>>> from calibench.metrics import ece
>>> round(ece([0.9, 0.8, 0.3], [1, 1, 0]), 6)  # three bins with gaps .1, .2, .3
0.2
"""

from __future__ import annotations

from calibench.metrics.binning import BINNINGS, assign_bins
from calibench.metrics.bootstrap import CI, PairedDelta, bootstrap_ci, paired_delta
from calibench.metrics.calibration import NORMS, ace, classwise_ece, ece, mce, reliability_table, rmsce, sce
from calibench.metrics.scores import accuracy, accuracy_at_coverage, aurc, auroc, brier, brier_top, nll
from calibench.metrics.smooth import smooth_calibration_curve, smooth_ece
from calibench.metrics.summary import METRICS, metric_function, summarize

__all__ = [
    "BINNINGS",
    "CI",
    "METRICS",
    "NORMS",
    "PairedDelta",
    "accuracy",
    "accuracy_at_coverage",
    "ace",
    "assign_bins",
    "aurc",
    "auroc",
    "bootstrap_ci",
    "brier",
    "brier_top",
    "classwise_ece",
    "ece",
    "mce",
    "metric_function",
    "nll",
    "paired_delta",
    "reliability_table",
    "rmsce",
    "sce",
    "smooth_calibration_curve",
    "smooth_ece",
    "summarize",
]
