"""Models side by side: two or more models scored on the same task x method items, compared directly.

Applies to any study in which at least two models (each model's last revision) are scored on the same
task; no training stage and no ``base:`` link is needed. Per task it gives every shown metric per model
and method (stored estimates with 95% CIs), paired deltas ``metric(B) - metric(A)`` with their 95% CI and
p-value from ``calibench.metrics.paired_delta`` on the items both models share (via ``StudyData.delta``,
so the findings and this section run each bootstrap once) and the points of an accuracy-vs-ECE scatter
(the task's reliability diagrams are drawn once, in the report's reliability section). Pairs: every pair (A listed before B in the study file) for up to
``MAX_ALL_PAIRS`` models, else each model against the one listed before it. Drawing is in
``calibench.report``; this module decides what is compared and looks the numbers up.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from matplotlib.figure import Figure

from calibench.report.lines import Point, ScatterPanel, plot_scatter
from calibench.study.findings import EvalUnit, final_revisions
from calibench.study.numbers import fmt_ci, fmt_num
from calibench.study.results import StudyData

MAX_MODELS = 8        # models per task compared (the first listed)
MAX_ALL_PAIRS = 4     # up to this many models every pair is compared, beyond it neighbours only
SIG_LEVEL = 0.05


def compared_models(units: list[EvalUnit]) -> dict[str, list[EvalUnit]]:
    """task -> the last revision of each model scored on it (study order), for tasks with >= 2 models."""
    final = final_revisions(units)
    out: dict[str, list[EvalUnit]] = {}
    for task in dict.fromkeys(u.task for u in units):
        models = [u for (_, t), u in final.items() if t == task][:MAX_MODELS]
        if len(models) >= 2:
            out[task] = models
    return out


def model_pairs(models: list[EvalUnit]) -> list[tuple[EvalUnit, EvalUnit]]:
    """(A, B) pairs compared as B - A: all pairs for a few models, else consecutive ones."""
    if len(models) <= MAX_ALL_PAIRS:
        return list(itertools.combinations(models, 2))
    return list(zip(models, models[1:], strict=False))


def _methods(models: list[EvalUnit]) -> list[str]:
    return list(dict.fromkeys(m for u in models for m in u.methods))


def _stored(data: StudyData, u: EvalUnit, method: str) -> dict[str, Any]:
    """metric -> stored row of one unit and method."""
    m = data.metrics
    rows = m[(m["key"] == u.key) & (m["method"] == method)]
    return {r["metric"]: r for _, r in rows.iterrows()}


def metric_rows(data: StudyData, models: list[EvalUnit]) -> list[dict[str, Any]]:
    """Every shown metric (estimate and CI) per method x model, the models of a method next to each other."""
    out = []
    for method in _methods(models):
        for u in models:
            if method not in u.methods:
                continue
            by = _stored(data, u, method)
            if not by:
                continue
            n = int(next(iter(by.values()))["n"])
            cells = [fmt_ci(by[k]["estimate"], by[k]["low"], by[k]["high"]) if k in by else None
                     for k in data.shown_metrics]
            out.append({"method": method, "model": u.name, "n": n, "cells": cells})
    return out


def pair_deltas(data: StudyData, models: list[EvalUnit]) -> list[dict[str, Any]]:
    """Per method x pair: B - A of every shown metric with CI and p (None: not computable for that metric;
    delta "n/a" without a CI: the metric is undefined for one of the two, e.g. AUROC with no right answer)."""
    out = []
    pairs = model_pairs(models)
    for method in _methods(models):
        for a, b in pairs:
            if method not in a.methods or method not in b.methods:
                continue
            cells, n = [], None
            for metric in data.shown_metrics:
                d = data.delta(a, b, method, metric)
                if d is None:
                    cells.append(None)
                    continue
                est, low, high, p, n = d
                if not math.isfinite(est):   # e.g. AUROC of a model that got every item wrong
                    cells.append({"delta": "n/a", "low": None, "high": None, "p": None, "sig": False})
                    continue
                cells.append({"delta": fmt_num(est), "low": fmt_num(low), "high": fmt_num(high),
                              "p": fmt_num(p), "sig": bool(p < SIG_LEVEL)})
            if n is not None:
                out.append({"method": method, "a": a.name, "b": b.name, "n": n, "cells": cells})
    return out


def accuracy_ece_points(data: StudyData, models: list[EvalUnit]) -> list[Point]:
    """One point per model x method: stored accuracy (x) and ECE (y) with their CIs."""
    points = []
    for method in _methods(models):
        for u in models:
            by = _stored(data, u, method)
            if "accuracy" in by and "ece" in by:
                acc, ece = by["accuracy"], by["ece"]
                points.append(Point(u.name, method, float(acc["estimate"]), float(acc["low"]), float(acc["high"]),
                                    float(ece["estimate"]), float(ece["low"]), float(ece["high"])))
    return points


def accuracy_ece_figure(data: StudyData, compared: dict[str, list[EvalUnit]]) -> Figure | None:
    """Accuracy vs ECE, one panel per compared task."""
    panels = [ScatterPanel(f"accuracy vs ECE: {task}", pts) for task, models in compared.items()
              if (pts := accuracy_ece_points(data, models))]
    if not panels:
        return None
    return plot_scatter(panels, xlabel="accuracy", ylabel="ECE")
