"""The study report: ONE self-contained HTML file (figures as base64 PNG data URIs, inline CSS, no
scripts, no external resources), readable offline and safe to mail around.

Sections: findings (each claim of the two papers with a verdict computed from paired bootstrap CIs,
see ``calibench.study.findings``, or the one-line reason it is not tested), models side by side (any
two or more models on the same task: see ``calibench.study.sidebyside``), metrics per stage with 95% CIs (the study file's ``metrics:``),
reliability diagram grids, ECE vs parameters (scale), ECE vs training step (dynamics), ECE per
alignment epoch, and paired deltas with p-values. This module computes what to show; drawing lives in
``calibench.report`` and markup in the jinja2 template ``templates/report.html.j2``, rendered with
autoescape, so no study text (model, task, method names, descriptions) can inject markup.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from matplotlib.figure import Figure

from calibench import __version__
from calibench.io import write_text
from calibench.report.diagrams import reliability_diagram
from calibench.report.lines import Line, Panel, count_label, plot_metric_lines, png_data_uri
from calibench.report.plots import plot_grid
from calibench.study.findings import (
    AGREE,
    CLAIMS,
    DISAGREE,
    INCONCLUSIVE,
    MIXED,
    NOT_TESTED,
    EvalUnit,
    Finding,
    cmp_aligned_vs_base,
    evaluate_claims,
    final_revisions,
)
from calibench.study.numbers import fmt_ci, fmt_num
from calibench.study.results import StudyData, load_study_data
from calibench.study.schema import STAGES
from calibench.study.sidebyside import (
    accuracy_ece_figure,
    compared_models,
    metric_rows,
    pair_deltas,
    reliability_matrix,
)

DELTA_METRICS = ("accuracy", "ece", "sce", "brier")   # paired deltas: these, where the study shows them
# in the study schema's stage order (``STAGES``)
STAGE_TITLES = {"pretrained": "Pretrained", "base": "Base", "sft": "Instruction tuned (SFT)",
                "rl": "RL (preference)", "dpo": "DPO"}
MAX_GRID = 12      # models per reliability grid
MAX_GRIDS = 4      # reliability grids per report
TEMPLATE = "report.html.j2"
# What a figure section needs, said where the study has nothing to draw in it.
FIGURE_NEEDS = {"scale": "needs models of two or more different declared sizes (params:)",
                "dynamics": "needs one model evaluated at two or more checkpoints (revisions: [stepN, ...])",
                "alignment": "needs an aligned model (stage: sft, rl or dpo) with epoch checkpoints or RL/DPO "
                             "output"}
_BADGE = {AGREE: "agree", DISAGREE: "disagree", INCONCLUSIVE: "inconclusive", MIXED: "inconclusive",
          NOT_TESTED: "untested"}

Series = dict[str, list[tuple[float, EvalUnit]]]


# -- figures: which units make which line -------------------------------------------------------------------


def _panels(data: StudyData, series: Series, metric: str, title: str,
            hlines: dict[str, dict[str, float]] | None = None) -> list[Panel]:
    """One panel per task, one line per (series, method) of ``metric`` against x."""
    tasks = sorted({u.task for pts in series.values() for _, u in pts})
    panels = []
    for task in tasks:
        lines = []
        for sname, pts in series.items():
            pts = sorted(((x, u) for x, u in pts if u.task == task), key=lambda t: t[0])
            if not pts:
                continue
            for method in pts[0][1].methods:
                xs, est, low, high = [], [], [], []
                for x, u in pts:
                    r = data.metric_rows([u.key], metric)
                    r = r[r["method"] == method]
                    if len(r):
                        row = r.iloc[0]
                        xs.append(x)
                        est.append(float(row["estimate"]))
                        low.append(float(row["low"]))
                        high.append(float(row["high"]))
                if xs:
                    if len(series) == 1:
                        label = method
                    else:
                        label = sname if len(pts[0][1].methods) == 1 else f"{sname} · {method}"
                    lines.append(Line(label, xs, est, low, high))
        h = {name: values[task] for name, values in (hlines or {}).items() if task in values}
        panels.append(Panel(f"{title}: {task}", lines, h))
    return panels


def _line_figure(data: StudyData, series: Series, *, metric: str, xlabel: str, logx: bool, title: str,
                 hlines: dict[str, dict[str, float]] | None = None,
                 xticks: dict[float, str] | None = None) -> Figure | None:
    panels = _panels(data, series, metric, title, hlines)
    if not panels:
        return None
    return plot_metric_lines(panels, xlabel=xlabel, ylabel=metric.upper() if metric != "accuracy" else "accuracy",
                             logx=logx, xticks=xticks)


def scale_series(units: list[EvalUnit]) -> Series:
    """The models that declare ``params:`` (last revision of each), one series per stage (a chat-templated
    entry apart), when they span two or more sizes; else none."""
    final = final_revisions([u for u in units if u.labels.get("params")])
    if len({u.labels["params"] for u in final.values()}) < 2:
        return {}
    series: Series = {}
    for u in final.values():
        name = str(u.labels.get("stage", "base")) + (", chat template" if u.labels.get("chat_template") else "")
        series.setdefault(name, []).append((float(u.labels["params"]), u))
    return series


def scale_figure(data: StudyData, metric: str = "ece") -> Figure | None:
    """ECE vs declared parameter count (log x), one panel per task, one line per stage x method."""
    series = scale_series(data.units)
    if not series:
        return None
    sizes = sorted({x for pts in series.values() for x, _ in pts})
    return _line_figure(data, series, metric=metric, xlabel="parameters (declared)", logx=True, title="scale",
                        xticks={x: count_label(x) for x in sizes})


def dynamics_figure(data: StudyData, metric: str = "ece") -> Figure | None:
    """ECE vs training step for every model evaluated at >= 2 step checkpoints."""
    series: Series = {}
    for u in data.units:
        if u.labels.get("step") is not None:
            series.setdefault(u.model, []).append((max(float(u.labels["step"]), 1.0), u))
    series = {k: v for k, v in series.items() if len({x for x, _ in v}) >= 2}
    if not series:
        return None
    return _line_figure(data, series, metric=metric, xlabel="training step (step0 drawn at 1)", logx=True,
                        title="dynamics")


def alignment_figure(data: StudyData, method: str, metric: str = "ece") -> Figure | None:
    """ECE per epoch for every aligned model (series), with its base model as a dotted line."""

    def epoch_of(u: EvalUnit) -> int | None:
        # a single RL/DPO output (revision "final") counts as one epoch after the model it started from
        epoch = u.labels.get("epoch")
        return 1 if epoch is None and u.labels.get("stage") in ("rl", "dpo") else epoch

    aligned = [u for u in data.units if u.labels.get("stage") in ("sft", "rl", "dpo") and epoch_of(u) is not None
               and method in u.methods]
    if not aligned:
        return None
    series: Series = {}
    last_epoch: dict[str, int] = {}
    for u in aligned:
        last_epoch[u.model] = max(last_epoch.get(u.model, 0), int(epoch_of(u) or 0))
    for u in aligned:
        lab = u.labels
        parts = [lab.get("stage", ""), lab.get("tuning") or "", lab.get("data") or ""]
        # RL/DPO epochs continue the epochs of the SFT model they started from, as in the paper's plots.
        offset = last_epoch.get(lab.get("base") or "", 0) if lab.get("stage") in ("rl", "dpo") else 0
        series.setdefault(f"{u.model} ({' '.join(p for p in parts if p)})", []).append(
            (float(epoch_of(u) or 0) + offset, u))
    final = final_revisions(data.units)
    hlines: dict[str, dict[str, float]] = {}
    for base in sorted({u.labels["base"] for u in aligned if u.labels.get("base")}):
        for (model, task), u in final.items():
            if model == base and u.labels.get("stage") in ("pretrained", "base"):
                r = data.metric_rows([u.key], metric)
                r = r[r["method"] == method]
                if len(r):
                    hlines.setdefault(f"base {base}", {})[task] = float(r["estimate"].iloc[0])
    restricted = {k: [(x, _only(u, method)) for x, u in v] for k, v in series.items()}
    return _line_figure(data, restricted, metric=metric, xlabel="epoch", logx=False,
                        title=f"alignment ({method})", hlines=hlines)


def _only(u: EvalUnit, method: str) -> EvalUnit:
    return EvalUnit(key=u.key, model=u.model, revision=u.revision, task=u.task, labels=u.labels, methods=(method,))


def reliability_figures(data: StudyData, skip: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """(title, data URI) of one reliability grid per task x method over each model's last revision;
    tasks in ``skip`` already have their models x methods grid in the side-by-side section."""
    final = final_revisions(data.units)
    out = []
    n_bins = int(data.settings.get("n_bins", 10))
    tasks = [t for t in dict.fromkeys(u.task for u in data.units) if t not in skip]
    combos = []
    for task in tasks:
        units = [u for (_, t), u in final.items() if t == task][:MAX_GRID]
        for rank, method in enumerate(dict.fromkeys(m for u in units for m in u.methods)):
            combos.append((rank, task, method, units))
    # Each grid costs seconds to draw: the first method of every task first, then the others, capped.
    combos.sort(key=lambda c: c[0])
    for _, task, method, units in combos[:MAX_GRIDS]:
        diagrams = {}
        for u in units:
            rec = data.records(u.key)
            rec = rec[rec["method"] == method]
            if len(rec):
                diagrams[u.name] = reliability_diagram(rec["confidence"].to_numpy(dtype=float),
                                                       rec["correct"].to_numpy(dtype=float), n_bins=n_bins)
        if diagrams:
            fig = plot_grid(diagrams, ncols=min(4, len(diagrams)))
            out.append((f"{task} · {method}", png_data_uri(fig, dpi=70)))
    return out


# -- tables as data for the template ----------------------------------------------------------------------


def stage_tables(data: StudyData) -> list[dict[str, Any]]:
    """Per stage: the shown metrics with 95% CIs per unit x method (None: not stored for that row)."""
    m = data.metrics
    out = []
    stages = [s for s in STAGES if s in set(m["stage"])] + sorted(set(m["stage"]) - set(STAGES))
    for stage in stages:
        sm = m[m["stage"] == stage]
        rows = []
        for (unit, task, method), g in sm.groupby(["unit", "task", "method"], sort=False):
            by = {r["metric"]: r for _, r in g.iterrows()}
            cells = [fmt_ci(by[k]["estimate"], by[k]["low"], by[k]["high"]) if k in by else None
                     for k in data.shown_metrics]
            rows.append({"unit": unit, "task": task, "method": method, "n": int(g["n"].iloc[0]), "cells": cells})
        out.append({"title": STAGE_TITLES.get(stage, stage), "open": stage == stages[0], "rows": rows})
    return out


def findings_rows(findings: list[Finding]) -> list[dict[str, Any]]:
    """Each claim with its verdict and, where tested, its cell counts and median cell."""
    rows = []
    for f in findings:
        evidence = None
        if f.cells:
            c = f.counts()
            worst = sorted(f.cells, key=lambda x: x.delta)
            ex = worst[len(worst) // 2]
            evidence = {"n": len(f.cells), "agree": c[AGREE], "disagree": c[DISAGREE],
                        "inconclusive": c[INCONCLUSIVE], "b": ex.pair.b.name, "a": ex.pair.a.name,
                        "task": ex.pair.b.task, "method": ex.method, "metric": f.claim.metric,
                        "delta": fmt_num(ex.delta), "low": fmt_num(ex.low), "high": fmt_num(ex.high)}
        rows.append({"claim": f.claim, "verdict": f.verdict, "badge": _BADGE[f.verdict], "evidence": evidence,
                     "reason": f.reason})
    return rows


def delta_rows(data: StudyData) -> list[dict[str, Any]]:
    """Paired deltas (child - parent) of each aligned model's last revision vs the model it was tuned from."""
    metrics = [m for m in data.shown_metrics if m in DELTA_METRICS]
    rows = []
    for pair in cmp_aligned_vs_base(data.units):
        for method in [m for m in pair.b.methods if m in pair.a.methods]:
            for metric in metrics:
                d = data.delta(pair.a, pair.b, method, metric)
                if d is None:
                    continue
                est, low, high, p, n = d
                rows.append({"model": pair.b.name, "base": pair.a.name, "task": pair.b.task, "method": method,
                             "metric": metric, "sig": p < 0.05, "delta": fmt_num(est), "low": fmt_num(low),
                             "high": fmt_num(high), "p": fmt_num(p, 3), "n": n})
    return rows


# -- the document -------------------------------------------------------------------------------------------


def side_by_side(data: StudyData) -> list[dict[str, Any]]:
    """Per task with two or more models: metric table, paired-delta table and reliability grid."""
    out = []
    for i, (task, models) in enumerate(compared_models(data.units).items()):
        grid = reliability_matrix(data, models) if i < MAX_GRIDS else None   # each grid costs seconds
        out.append({"task": task, "models": [u.name for u in models], "metrics": metric_rows(data, models),
                    "deltas": pair_deltas(data, models),
                    "grid": png_data_uri(grid, dpi=60) if grid is not None else None})
    return out


def _environment() -> Environment:
    """Templates ship as package data (``calibench/study/templates``); every ``{{ }}`` is escaped."""
    return Environment(loader=PackageLoader("calibench.study", "templates"),
                       autoescape=True, undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True)


def _nav_label(title: str) -> str:
    return title.split(":")[0].split("(")[0].strip()


def render(data: StudyData) -> str:
    """The complete HTML document of a study."""
    findings = evaluate_claims(data.units, data.delta, CLAIMS)
    methods = list(dict.fromkeys(m for u in data.units for m in u.methods))
    alignment = []
    for method in methods:
        fig = alignment_figure(data, method)
        if fig is not None:
            alignment.append((method, png_data_uri(fig)))
    scale, dynamics = scale_figure(data), dynamics_figure(data)
    sides = side_by_side(data)
    gridded = [t["task"] for t in sides if t["grid"]]
    acc_ece = accuracy_ece_figure(data, compared_models(data.units))
    titles = {
        "findings": "Findings: the papers' claims against this study",
        "sidebyside": "Models side by side (same items; paired deltas B - A, bold: p < 0.05)",
        "stages": "Metrics per stage (95% bootstrap CIs)",
        "reliability": "Reliability diagrams (last revision of each model)",
        "scale": "ECE vs parameters (declared params:, last revision of each model)",
        "dynamics": "ECE vs training step (dynamics)",
        "alignment": "Alignment: ECE per epoch (base, SFT full / LoRA, diverse / narrow, RL, DPO)",
        "deltas": "Paired deltas vs the base model (aligned - base; bold: p < 0.05)",
    }
    deltas = delta_rows(data)
    context = {
        "name": data.name, "description": data.description, "n_units": len(data.units), "version": __version__,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "synthetic": data.synthetic,
        "folder": data.root.name, "titles": titles, "nav": [(sid, _nav_label(t)) for sid, t in titles.items()],
        "findings": findings_rows(findings), "metric_names": list(data.shown_metrics),
        "stages": stage_tables(data), "reliability": reliability_figures(data, set(gridded)),
        "sides": sides, "side_tasks": gridded, "max_grids": MAX_GRIDS,
        "figures": {"scale": png_data_uri(scale) if scale is not None else None,
                    "acc_ece": png_data_uri(acc_ece) if acc_ece is not None else None,
                    "dynamics": png_data_uri(dynamics) if dynamics is not None else None},
        "needs": FIGURE_NEEDS, "alignment": alignment, "deltas": deltas, "deltas_open": len(deltas) <= 60,
    }
    return _environment().get_template(TEMPLATE).render(**context)


def build_report(study_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of a study folder (default ``STUDY_DIR/report.html``); return its path."""
    data = load_study_data(study_dir)
    try:
        text = render(data)
    finally:
        data.store.close()
    path = Path(out) if out is not None else Path(study_dir) / "report.html"
    write_text(path, text)
    return path
