"""calibench.metrics: calibration metrics over plain arrays (lists, numpy, pandas) or record tables.

Every function validates its input and raises :class:`calibench.errors.CalibenchError` (a
``ValueError``) naming the argument and the first bad element; conventions are in docs/metrics.md.

>>> from calibench.metrics import ece
>>> round(ece([0.9, 0.8, 0.3], [1, 1, 0]), 6)  # three bins with gaps .1, .2, .3
0.2

The registry ``METRICS`` (:mod:`calibench.metrics.registry`) maps each metric name, in report order, to
a :class:`MetricSpec`: its ``function``, the input ``kind`` it takes (``"correct"``, ``"top"`` =
confidence/correct, ``"probs"`` = probs/labels) and the record ``columns`` behind it, the summary
``options`` it accepts (``n_bins``, ``binning``) and its vectorised bootstrap ``replicates``. Every
caller (``summarize``, ``bootstrap_ci``/``paired_delta``, ``compare_runs``, the CLI, study configs)
reads metric names and needs from it:

>>> from calibench.metrics import METRICS
>>> [name for name, spec in METRICS.items() if spec.kind == "probs"]
['sce', 'brier', 'nll']
"""

from __future__ import annotations

from calibench.metrics.binning import BINNINGS, assign_bins
from calibench.metrics.bootstrap import CI, PairedDelta, bootstrap_ci, paired_delta
from calibench.metrics.calibration import (
    NORMS,
    ace,
    classwise_ece,
    debiased_ce,
    ece,
    ece_sweep,
    mce,
    reliability_table,
    rmsce,
    sce,
)
from calibench.metrics.intervals import CI_METHODS
from calibench.metrics.registry import INPUT_KINDS, METRICS, InputKind, MetricSpec, get_spec, metric_function
from calibench.metrics.scores import accuracy, accuracy_at_coverage, aurc, auroc, brier, brier_top, nll
from calibench.metrics.smooth import smooth_calibration_curve, smooth_ece
from calibench.metrics.summary import summarize, summarize_inputs

__all__ = [
    "BINNINGS",
    "CI",
    "CI_METHODS",
    "INPUT_KINDS",
    "METRICS",
    "InputKind",
    "MetricSpec",
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
    "debiased_ce",
    "ece",
    "ece_sweep",
    "get_spec",
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
    "summarize_inputs",
]
