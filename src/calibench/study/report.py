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

import math
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from matplotlib.figure import Figure

from calibench import __version__
from calibench.io import write_text
from calibench.report.diagrams import reliability_diagram
from calibench.report.life import plot_life
from calibench.report.lines import Line, Panel, count_label, plot_metric_lines, png_data_uri
from calibench.report.plots import plot_matrix
from calibench.study.claims import ALPHA, MIN_RESAMPLES, RecordSource
from calibench.study.findings import (
    AGREE,
    CLAIMS,
    DISAGREE,
    INCONCLUSIVE,
    MIXED,
    NOT_TESTED,
    Claim,
    EvalUnit,
    Finding,
    cmp_aligned_vs_base,
    evaluate_claims,
    final_revisions,
)
from calibench.study.life import life_chart, life_rows, metric_title, spine, unit_of
from calibench.study.numbers import fmt_ci, fmt_num
from calibench.study.results import StudyData, bucket_metrics, load_study_data
from calibench.study.schema import STAGES
from calibench.study.sidebyside import accuracy_ece_figure, compared_models, metric_rows, pair_deltas
from calibench.world.derived import BUCKETS

DELTA_METRICS = ("accuracy", "ece", "sce", "brier")   # paired deltas: these, where the study shows them
# in the study schema's stage order (``STAGES``)
STAGE_TITLES = {"pretrained": "Pretrained", "base": "Base", "sft": "Instruction tuned (SFT)",
                "rl": "RL (preference)", "dpo": "DPO"}
DPI = 150          # every embedded figure (a reviewer zooms in; the issue asks for >= 150)
TEMPLATE = "report.html.j2"
# What a figure section needs, said where the study has nothing to draw in it.
FIGURE_NEEDS = {"scale": "needs models of two or more different declared sizes (params:)",
                "dynamics": "needs one model evaluated at two or more checkpoints (revisions: [stepN, ...])",
                "alignment": "needs an aligned model (stage: sft, rl or dpo) with epoch checkpoints or RL/DPO "
                             "output"}
# How a verdict reads in the report ("not tested" is a claim the study cannot test: no valid cell).
VERDICT_LABEL = {NOT_TESTED: "not testable"}
_BADGE = {AGREE: "agree", DISAGREE: "disagree", INCONCLUSIVE: "inconclusive", MIXED: "mixed",
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


def reliability_grids(data: StudyData) -> list[dict[str, Any]]:
    """One stage x method grid per task: rows are the life rows (``life.life_rows``: the lifecycle
    spine, then every other model's last revision), columns every method scored on the task, so every
    task x method of the study is drawn. Each grid: title, alt text, data URI."""
    n_bins = int(data.settings.get("n_bins", 10))
    rows = life_rows(data.units)
    out = []
    for task in dict.fromkeys(u.task for u in data.units):
        diagrams: dict[tuple[str, str], Any] = {}
        present: list[str] = []
        methods = list(dict.fromkeys(m for u in data.units if u.task == task for m in u.methods))
        for step in rows:
            u = unit_of(data.units, step, task)
            if u is None:
                continue
            rec = data.records(u.key)
            for method in methods:
                r = rec[rec["method"] == method]
                if len(r):
                    diagrams[(step.row, method)] = reliability_diagram(
                        r["confidence"].to_numpy(dtype=float), r["correct"].to_numpy(dtype=float), n_bins=n_bins)
            if any(k[0] == step.row for k in diagrams):
                present.append(step.row)
        if not diagrams:
            continue
        drawn = [m for m in methods if any(k[1] == m for k in diagrams)]
        fig = plot_matrix(diagrams, present, drawn)
        alt = (f"Reliability diagrams of task {task}: one row per model revision ({', '.join(present)}), "
               f"one column per method ({', '.join(drawn)}); bars are accuracy per confidence bin, the "
               "hatched part the gap to mean confidence, below each a histogram of confidences.")
        out.append({"task": task, "rows": present, "methods": drawn, "alt": alt, "uri": png_data_uri(fig, dpi=DPI)})
    return out


# -- tables as data for the template ----------------------------------------------------------------------

Validity = Callable[[EvalUnit, str], "tuple[bool, str]"]


def _no_gate(u: EvalUnit, method: str) -> tuple[bool, str]:
    return True, ""


def validity_of(source: Any) -> Validity:
    """(passes, reason) of a unit x method by the claims' validity gates (``calibench.validity``)."""

    def check(u: EvalUnit, method: str) -> tuple[bool, str]:
        v = source.validity(u, method)
        return bool(v.valid), str(v.reason)

    return check


def stage_tables(data: StudyData, valid: Validity = _no_gate) -> list[dict[str, Any]]:
    """Per stage: the shown metrics with 95% CIs per unit x method (None: not stored for that row), and
    whether the unit x method passes the validity gates (with the reason when it does not)."""
    m = data.metrics
    by_key = {u.key: u for u in data.units}
    out = []
    stages = [s for s in STAGES if s in set(m["stage"])] + sorted(set(m["stage"]) - set(STAGES))
    for stage in stages:
        sm = m[m["stage"] == stage]
        rows = []
        for (key, unit, task, method), g in sm.groupby(["key", "unit", "task", "method"], sort=False):
            by = {r["metric"]: r for _, r in g.iterrows()}
            cells = [fmt_ci(by[k]["estimate"], by[k]["low"], by[k]["high"]) if k in by else None
                     for k in data.shown_metrics]
            ok, why = valid(by_key[key], method) if key in by_key else (True, "")
            rows.append({"unit": unit, "task": task, "method": method, "n": int(g["n"].iloc[0]), "cells": cells,
                         "valid": ok, "why": why})
        out.append({"title": STAGE_TITLES.get(stage, stage), "open": stage == stages[0], "rows": rows,
                    "n_invalid": sum(not r["valid"] for r in rows)})
    return out


def _effect(f: Finding) -> dict[str, Any] | None:
    if not f.cells or not math.isfinite(f.effect):
        return None
    return {"est": fmt_num(f.effect), "low": fmt_num(f.low), "high": fmt_num(f.high), "level": f"{f.level:.0%}",
            "p": fmt_num(f.p_value, 3), "p_holm": fmt_num(f.p_adjusted, 3),
            "sig": math.isfinite(f.p_adjusted) and f.p_adjusted < ALPHA}


def statistic_name(claim: Claim) -> str:
    """What a claim's effect measures, as a header cell says it."""
    metric = claim.metric.upper()
    if claim.comparison == "full_vs_lora":
        return f"|\u0394{metric} full| \u2212 |\u0394{metric} LoRA|"
    return f"\u0394{metric} (b \u2212 a)"


def findings_rows(findings: list[Finding]) -> list[dict[str, Any]]:
    """Each claim with its verdict, pooled effect (CI, p, Holm p), cell tally, the cells left out by the
    validity gates (with why) and, where not tested, the reason."""
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
        rows.append({"claim": f.claim, "verdict": VERDICT_LABEL.get(f.verdict, f.verdict),
                     "badge": _BADGE.get(f.verdict, "untested"),
                     "evidence": evidence, "reason": f.reason, "effect": _effect(f),
                     "metric": f.claim.metric, "method": f.claim.method or "every method",
                     "invalid": list(f.invalid)})
    return rows


_SAY = {AGREE: "The numbers agree with", DISAGREE: "The numbers contradict",
        MIXED: "Mixed (significant cells on both sides):", INCONCLUSIVE: "Inconclusive on"}


def summary(data: StudyData, findings: list[Finding], valid: Validity) -> dict[str, Any]:
    """The plain-language summary: one sentence per claim (computed from its verdict and effect) and the
    caveats that bound what the study can say (simulation, toy models, synthetic world, n, validity)."""
    counts = {VERDICT_LABEL.get(v, v): sum(f.verdict == v for f in findings)
              for v in dict.fromkeys(f.verdict for f in findings)}
    lines = []
    for f in findings:
        c = f.claim
        if not f.cells:
            lines.append(f"{c.paper}, \u201c{c.text}\u201d: not testable here ({f.reason}).")
            continue
        e = _effect(f)
        stat = f"pooled {statistic_name(c)}"
        ci = f"{e['est']} [{e['low']}, {e['high']}] ({e['level']} CI)" if e else "n/a"
        what = _SAY.get(f.verdict, f"{f.verdict}:")
        extra = f", {f.n_invalid} cells left out by validity gates" if f.n_invalid else ""
        p = f"Holm-adjusted p = {e['p_holm']}" if e else ""
        cells = f"{len(f.cells)} cell" + ("s" if len(f.cells) != 1 else "")
        lines.append(f"{what} {c.paper}, \u201c{c.text}\u201d: {stat} = {ci}, {p}, over {cells}{extra}.")
    caveats = []
    if data.synthetic:
        caveats.append("Simulated models: these numbers describe a simulation with known calibration curves, "
                       "not a language model.")
    tasks = list(dict.fromkeys(u.task for u in data.units))
    params = [float(u.labels["params"]) for u in data.units if u.labels.get("params")]
    if any(t.startswith("lab-") for t in tasks):
        size = f" (the largest has {count_label(max(params))} parameters)" if params else ""
        caveats.append(f"Toy models{size} trained from scratch on a synthetic world of invented people "
                       "(calibench.world): the papers studied models of 10^8 to 10^11 parameters trained on web "
                       "text, so agreement here shows the effect can arise, not that it holds at scale.")
    elif params and max(params) < 1e9 and not data.synthetic:
        caveats.append(f"Small models: the largest declares {count_label(max(params))} parameters.")
    m = data.metrics
    if len(m):
        n = m.drop_duplicates(["key", "method"])["n"]
        ece = m[(m["metric"] == "ece")]
        half = ((ece["high"] - ece["low"]) / 2).dropna()
        width = f"; the median 95% CI of an ECE is \u00b1{fmt_num(half.median())}" if len(half) else ""
        caveats.append(f"Sample size: {int(n.min())} to {int(n.max())} items per evaluation (unit x method)"
                       f"{width}. With n this small an \u201cinconclusive\u201d verdict is a lack of power, "
                       "not evidence of no effect.")
    pairs = {(u.key, mm) for u in data.units for mm in u.methods}
    bad = sum(not valid(u, mm)[0] for u in data.units for mm in u.methods)
    if bad:
        caveats.append(f"{bad} of {len(pairs)} evaluations (unit x method) fail a validity gate (accuracy not "
                       "above chance, too little probability mass on the options, parse failures or degenerate "
                       "confidences): they are marked in the tables and every claim cell using them is left out.")
    tested = sum(bool(f.cells) for f in findings)
    caveats.append(f"Verdicts: a pooled effect per claim from a joint paired bootstrap "
                   f"({int(data.settings.get('bootstrap', 0) or 0)} resamples stored per metric, at least "
                   f"{MIN_RESAMPLES} for the claims), Holm-corrected across the {tested} testable claims at "
                   f"alpha = {ALPHA}; the rules were fixed before any lifecycle run (docs/lifecycle-lab.md).")
    return {"counts": counts, "lines": lines, "caveats": caveats}


def exposure_tables(data: StudyData, valid: Validity = _no_gate) -> list[dict[str, Any]]:
    """Per task whose item ids carry an exposure bucket: every shown metric per life row x method x bucket
    (often | rare | never) with a 95% bootstrap CI over the bucket's items, and pooled (the stored
    estimate with its 95% CI)."""
    out = []
    metrics = list(data.shown_metrics)
    m = data.metrics
    resamples = int(data.settings.get("bootstrap", 0) or 0) or 200
    for task in dict.fromkeys(u.task for u in data.units):
        rows = []
        for step in life_rows(data.units):
            u = unit_of(data.units, step, task)
            if u is None:
                continue
            table = bucket_metrics(data, u, metrics, n_resamples=resamples)
            if not len(table):
                continue
            for method in u.methods:
                mt = table[table["method"] == method]
                if not len(mt):
                    continue
                ok, why = valid(u, method)
                first = True
                for bucket in BUCKETS:
                    b = mt[mt["bucket"] == bucket]
                    if len(b):
                        r = b.iloc[0]
                        rows.append({"unit": step.row if first else "", "method": method if first else "",
                                     "bucket": bucket, "n": int(r["n"]), "pooled": False, "valid": ok, "why": why,
                                     "cells": [fmt_ci(r[k], r[f"{k}_low"], r[f"{k}_high"])
                                               if math.isfinite(float(r[k])) else None for k in metrics]})
                        first = False
                stored = m[(m["key"] == u.key) & (m["method"] == method)]
                by = {r["metric"]: r for _, r in stored.iterrows()}
                rows.append({"unit": "", "method": "", "bucket": "pooled", "pooled": True, "valid": ok, "why": why,
                             "n": int(next(iter(by.values()))["n"]) if by else int(mt["n"].sum()),
                             "cells": [fmt_ci(by[k]["estimate"], by[k]["low"], by[k]["high"]) if k in by else None
                                       for k in metrics]})
        if rows:
            out.append({"task": task, "rows": rows})
    return out


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


def side_by_side(data: StudyData, *, deltas: bool = True) -> list[dict[str, Any]]:
    """Per task with two or more models: metric table and (with ``deltas``) paired-delta table; its
    reliability diagrams are the task's grid in the reliability section."""
    out = []
    for task, models in compared_models(data.units).items():
        out.append({"task": task, "models": [u.name for u in models], "metrics": metric_rows(data, models),
                    "deltas": pair_deltas(data, models) if deltas else []})
    return out


def lifecycle_figure(data: StudyData, valid: Validity = _no_gate) -> dict[str, Any] | None:
    """The opening figure (ECE with CI per method along the model's life, accuracy beside it, SCE where
    the study shows it) with its alt text; None for a study without a lifecycle spine."""
    metrics = ["ece", "accuracy"] + (["sce"] if "sce" in data.shown_metrics else [])
    chart = life_chart(data, metrics, valid)
    if chart is None:
        return None
    steps = spine(data.units)
    stages = list(dict.fromkeys(s.row.split("@")[0] for s in steps))
    alt = (f"Lifecycle figure: {', '.join(metric_title(m) for m in metrics)} (columns) per task (rows) along the "
           f"life of the model ({' -> '.join(stages)}; x ticks: {', '.join(s.label for s in steps)}), one line "
           "per confidence method with 95% bootstrap CIs; hollow circles fail a validity gate.")
    return {"uri": png_data_uri(plot_life(chart), dpi=DPI), "alt": alt, "models": stages,
            "steps": [s.row for s in steps], "metrics": [metric_title(m) for m in metrics]}


def _environment() -> Environment:
    """Templates ship as package data (``calibench/study/templates``); every ``{{ }}`` is escaped."""
    return Environment(loader=PackageLoader("calibench.study", "templates"),
                       autoescape=True, undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True)


def _nav_label(title: str) -> str:
    return title.split(":")[0].split("(")[0].strip()


def render(data: StudyData) -> str:
    """The complete HTML document of a study."""
    source = RecordSource.from_study(data)
    valid = validity_of(source)
    findings = evaluate_claims(data.units, source, CLAIMS)
    methods = list(dict.fromkeys(m for u in data.units for m in u.methods))
    alignment = []
    for method in methods:
        fig = alignment_figure(data, method)
        if fig is not None:
            alignment.append((method, png_data_uri(fig, dpi=DPI)))
    scale, dynamics = scale_figure(data), dynamics_figure(data)
    # A lifecycle study's comparisons are its claims and the deltas vs base: its side-by-side section
    # keeps the tables and skips the neighbour pairs' deltas (hundreds of bootstraps).
    lifecycle = bool(spine(data.units))
    sides = side_by_side(data, deltas=not lifecycle)
    acc_ece = accuracy_ece_figure(data, compared_models(data.units))
    life = lifecycle_figure(data, valid)
    exposure = exposure_tables(data, valid)
    titles = {
        "lifecycle": "The life of the model: ECE (95% CI) and accuracy per method, stage by stage",
        "findings": "Verdicts: the papers' claims against this study",
        "summary": "Summary in plain words, and its caveats",
        "sidebyside": "Models side by side (same items; paired deltas B - A, bold: p < 0.05)",
        "stages": "Metrics per stage (95% bootstrap CIs)",
        "exposure": "Per exposure bucket: how often pretraining stated the fact (often / rare / never)",
        "reliability": "Reliability diagrams: every task x method, stage by stage",
        "scale": "ECE vs parameters (declared params:, last revision of each model)",
        "dynamics": "ECE vs training step (dynamics)",
        "alignment": "Alignment: ECE per epoch (base, SFT full / LoRA, diverse / narrow, RL, DPO)",
        "deltas": "Paired deltas vs the base model (aligned - base; bold: p < 0.05)",
    }
    if life is None:
        del titles["lifecycle"]
    if not exposure:
        del titles["exposure"]
    deltas = delta_rows(data)
    context = {
        "name": data.name, "description": data.description, "n_units": len(data.units), "version": __version__,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "synthetic": data.synthetic,
        "folder": data.root.name, "titles": titles, "nav": [(sid, _nav_label(t)) for sid, t in titles.items()],
        "life": life, "findings": findings_rows(findings), "summary": summary(data, findings, valid),
        "statistic": {c.id: statistic_name(c) for c in CLAIMS}, "metric_names": list(data.shown_metrics),
        "stages": stage_tables(data, valid), "reliability": reliability_grids(data), "exposure": exposure,
        "sides": sides, "lifecycle": lifecycle, "buckets": BUCKETS,
        "figures": {"scale": png_data_uri(scale, dpi=DPI) if scale is not None else None,
                    "acc_ece": png_data_uri(acc_ece, dpi=DPI) if acc_ece is not None else None,
                    "dynamics": png_data_uri(dynamics, dpi=DPI) if dynamics is not None else None},
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
