"""The metric registry: what every metric needs, written once and read by every caller.

``METRICS`` maps a metric name to a :class:`MetricSpec` (in report order)::

    >>> from calibench.metrics import METRICS
    >>> spec = METRICS["ece"]
    >>> spec.kind, spec.columns, spec.options
    ('top', ('confidence', 'correct'), ('n_bins', 'binning'))

A spec says

- ``function``: the metric, ``function(*inputs, **options) -> float``;
- ``kind``: which inputs it takes (``INPUT_KINDS``): ``"correct"`` -> ``f(correct)``; ``"top"`` ->
  ``f(confidence, correct)`` (top-label, every record has these); ``"probs"`` -> ``f(probs, labels)``
  (class-wise, only where every record of a group has probs and a label; rows with fewer options are
  zero-padded to the group's largest option count, see ``padded_probs``);
  ``columns`` are the record columns behind them, in argument order;
- ``options``: which of the summary options (``n_bins``, ``binning``) it accepts (ace is always
  equal-mass and sce always equal-width, so they take only ``n_bins``);
- ``replicates``: the builder of its vectorised bootstrap replicates (:mod:`calibench.metrics.replicates`),
  or None to run the metric once per resample.

``summarize``, ``bootstrap_ci``/``paired_delta`` (by name or by function), ``compare_runs`` and the CLI
read this table; nothing else lists metrics or decides what a metric takes. A custom metric can be
passed to ``bootstrap_ci``/``paired_delta`` as a ``MetricSpec`` of its own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

import calibench.metrics.debiased_replicates as debiased_replicates
import calibench.metrics.replicates as vectorised
from calibench.errors import CalibenchError
from calibench.metrics._validate import as_correct, class_wise, top_label
from calibench.metrics.calibration import ace, debiased_ce, ece, ece_sweep, mce, rmsce, sce
from calibench.metrics.scores import (
    accuracy,
    accuracy_losses,
    aurc,
    auroc,
    brier,
    brier_losses,
    brier_top,
    brier_top_losses,
    nll,
    nll_losses,
)
from calibench.metrics.smooth import smooth_ece
from calibench.records import probs_rows

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class InputKind:
    """A family of metric inputs: the record columns behind them and their validation."""

    name: str
    columns: tuple[str, ...]
    validate: Callable[..., tuple[np.ndarray, ...]]


def _correct_only(correct: Any) -> tuple[np.ndarray]:
    return (as_correct(correct),)


INPUT_KINDS: Mapping[str, InputKind] = MappingProxyType(
    {
        "correct": InputKind("correct", ("correct",), _correct_only),
        "top": InputKind("top", ("confidence", "correct"), top_label),
        "probs": InputKind("probs", ("probs", "label"), class_wise),
    }
)


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its function, the inputs it takes, the summary options it accepts, its replicates."""

    name: str
    function: Callable[..., float]
    kind: str
    options: tuple[str, ...] = ()
    replicates: vectorised.Builder | None = None

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise CalibenchError(f"metric {self.name!r}: kind must be one of {', '.join(INPUT_KINDS)}")

    @property
    def inputs(self) -> InputKind:
        return INPUT_KINDS[self.kind]

    @property
    def columns(self) -> tuple[str, ...]:
        """Record columns the metric takes, in argument order."""
        return self.inputs.columns

    def bind(self, **options: Any) -> Callable[..., float]:
        """The function with those of ``options`` it accepts bound (the others are ignored)."""
        bound = {key: options[key] for key in self.options if key in options}
        return functools.partial(self.function, **bound) if bound else self.function


_WIDTH_OR_MASS = ("n_bins", "binning")

METRICS: Mapping[str, MetricSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            MetricSpec("accuracy", accuracy, "correct", (), vectorised.mean_of(accuracy_losses)),
            MetricSpec("ece", ece, "top", _WIDTH_OR_MASS, vectorised.binned()),
            MetricSpec("ace", ace, "top", ("n_bins",), vectorised.binned(binning="mass")),
            MetricSpec("mce", mce, "top", _WIDTH_OR_MASS, vectorised.binned(norm="max")),
            MetricSpec("rmsce", rmsce, "top", _WIDTH_OR_MASS, vectorised.binned(norm="l2")),
            MetricSpec("dce", debiased_ce, "top", _WIDTH_OR_MASS, debiased_replicates.debiased),
            MetricSpec("ece_sweep", ece_sweep, "top", (), debiased_replicates.sweep),
            MetricSpec("sce", sce, "probs", ("n_bins",), vectorised.sce),
            MetricSpec("brier", brier, "probs", (), vectorised.mean_of(brier_losses)),
            MetricSpec("brier_top", brier_top, "top", (), vectorised.mean_of(brier_top_losses)),
            MetricSpec("nll", nll, "probs", (), vectorised.mean_of(nll_losses)),
            MetricSpec("auroc", auroc, "top", (), vectorised.ranking("auroc")),
            MetricSpec("aurc", aurc, "top", (), vectorised.ranking("aurc")),
            MetricSpec("smooth_ece", smooth_ece, "top", (), vectorised.smooth),
        )
    }
)

_BY_FUNCTION: Mapping[Callable[..., float], MetricSpec] = MappingProxyType(
    {spec.function: spec for spec in METRICS.values()}
)


def get_spec(name: str) -> MetricSpec:
    """The registered metric ``name``; an unknown name is an error listing the choices."""
    if name not in METRICS:
        raise CalibenchError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    return METRICS[name]


def metric_function(name: str, *, n_bins: int = 10, binning: str = "width") -> Callable[..., float]:
    """The registered metric ``name`` with the binning options it accepts bound."""
    return get_spec(name).bind(n_bins=n_bins, binning=binning)


@dataclass(frozen=True)
class Resolved:
    """A metric argument taken apart: the plain function, its options, and its spec (None if unregistered)."""

    function: Callable[..., float]
    options: dict[str, Any]
    spec: MetricSpec | None


def resolve(metric: Callable[..., float] | str | MetricSpec, kwargs: Mapping[str, Any]) -> Resolved:
    """Resolve a name, a spec, a registered function or a ``functools.partial`` of one."""
    if isinstance(metric, str):
        metric = get_spec(metric)
    if isinstance(metric, MetricSpec):
        return Resolved(metric.function, dict(kwargs), metric)
    options: dict[str, Any] = {}
    while isinstance(metric, functools.partial):
        if metric.args:
            break
        options = {**metric.keywords, **options}
        metric = metric.func
    if not callable(metric):
        raise CalibenchError(f"metric must be a callable or a metric name, got {metric!r}")
    try:
        spec = _BY_FUNCTION.get(metric)
    except TypeError:  # an unhashable callable is never registered
        spec = None
    return Resolved(metric, {**options, **kwargs}, spec)


def padded_probs(group: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """``probs``/``label`` of one group as (N x K, N) arrays, rows with fewer options zero-padded to the
    group's largest option count K; None if some row has no probs or no label.

    Why padding: items of one task can offer 3 to 5 options (ARC, MMLU-style data). An absent option is
    a probability-0 class the item never has, so per item Brier (sum over classes of (p_k - y_k)^2) and
    NLL (-log p_label) are unchanged, and SCE is the class-wise ECE over K class positions in which the
    absent options sit, perfectly calibrated, at probability 0 (they add to N but no gap). With one
    option count the arrays equal ``records.probs_matrix``.
    """
    labels = group["label"]
    if labels.isna().any():
        return None
    found = probs_rows(group["probs"])
    if found is None:
        return None
    values, sizes = found
    k = int(sizes.max()) if sizes.size else 0
    if int(sizes.min(initial=k)) == k:
        return values.reshape(sizes.size, k), labels.to_numpy(dtype=int)
    matrix = np.zeros((sizes.size, k), dtype=float)
    mask = np.arange(k) < sizes[:, None]
    matrix[mask] = values
    return matrix, labels.to_numpy(dtype=int)


def group_inputs(
    group: pd.DataFrame, probs: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, tuple[Any, ...] | None]:
    """The inputs of every kind for one (task, method) group of normalised records; None where the
    group lacks them (``probs`` is ``padded_probs(group)`` or ``records.probs_matrix(group)``)."""
    return {
        "correct": (group["correct"].to_numpy(),),
        "top": (group["confidence"].to_numpy(dtype=np.float64), group["correct"].to_numpy()),
        "probs": probs,
    }
