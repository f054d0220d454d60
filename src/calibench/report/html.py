"""The study report: ONE self-contained HTML file (figures as base64 PNG data URIs, inline CSS, no
scripts, no external resources), readable offline and safe to mail around.

Sections: findings (each claim of the two papers with a verdict computed from paired bootstrap CIs,
see ``calibench.report.findings``), metrics per stage with 95% CIs, reliability diagram grids, ECE vs
parameters (scale), ECE vs training step (dynamics), ECE per alignment epoch, and paired deltas with
p-values. Every piece of text that comes from a study (model, task, method names, descriptions) goes
through ``html.escape``; a record cannot inject markup.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from calibench import __version__
from calibench.errors import CalibenchError
from calibench.io import write_text
from calibench.report.findings import (
    AGREE,
    CLAIMS,
    DISAGREE,
    INCONCLUSIVE,
    NOT_TESTED,
    EvalUnit,
    Finding,
    evaluate_claims,
)
from calibench.study.store import Store

TABLE_METRICS = ("accuracy", "ece", "ace", "sce", "brier", "nll", "auroc")
DELTA_METRICS = ("accuracy", "ece", "sce", "brier")
STAGE_ORDER = ("pretrained", "base", "sft", "rl", "dpo")
STAGE_TITLES = {"pretrained": "Pretrained", "base": "Base", "sft": "Instruction tuned (SFT)",
                "rl": "RL (preference)", "dpo": "DPO"}
MAX_GRID = 12      # models per reliability grid
MAX_GRIDS = 4      # reliability grids per report
_PALETTE = ("#3b6ea8", "#c0392b", "#2e8b57", "#8e44ad", "#d35400", "#16a085", "#7f8c8d", "#b8860b")


def esc(value: Any) -> str:
    """Escape anything for HTML text or attribute context."""
    return html.escape(str(value), quote=True)


@dataclass
class StudyData:
    """Everything the report needs, loaded once from a study folder."""

    root: Path
    name: str
    description: str
    settings: dict[str, Any]
    units: list[EvalUnit]
    metrics: pd.DataFrame                  # one row per unit x method x metric
    store: Store
    synthetic: bool = False
    _records: dict[str, pd.DataFrame] = field(default_factory=dict)
    _deltas: dict[tuple[str, str, str, str], Any] = field(default_factory=dict)

    def records(self, key: str) -> pd.DataFrame:
        if key not in self._records:
            self._records[key] = self.store.read_records(key)
        return self._records[key]

    def delta(self, a: EvalUnit, b: EvalUnit, method: str, metric: str) -> tuple[float, float, float, float, int] | None:
        """Paired bootstrap delta metric(b) - metric(a) for one method, cached; None if not computable."""
        from calibench.metrics import metric_function, paired_delta

        ck = (a.key, b.key, method, metric)
        if ck not in self._deltas:
            ra = self.records(a.key)
            rb = self.records(b.key)
            ra, rb = ra[ra["method"] == method], rb[rb["method"] == method]
            try:
                d = paired_delta(metric_function(metric, n_bins=int(self.settings.get("n_bins", 10))), ra, rb,
                                 n_resamples=int(self.settings.get("bootstrap", 1000)) or 200,
                                 seed=int(self.settings.get("seed", 0)))
                self._deltas[ck] = (d.delta, d.low, d.high, d.p_value, d.n)
            except CalibenchError:
                self._deltas[ck] = None
        return self._deltas[ck]


def load_study_data(study_dir: str | Path) -> StudyData:
    """Open a study folder read-only and collect its finished eval units and their metrics."""
    root = Path(study_dir)
    store = Store.open(root, read_only=True)
    meta_path = root / "study.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    units: list[EvalUnit] = []
    rows: list[dict[str, Any]] = []
    settings: dict[str, Any] = {}
    synthetic = False
    for su in store.finished("eval"):
        spec = su.spec
        synthetic = synthetic or spec.get("source") == "synthetic" or spec.get("train_recipe") == "synthetic"
        settings = spec.get("settings", settings)
        u = EvalUnit(key=su.key, model=spec["model"], revision=spec.get("revision", ""), task=spec["task"],
                     labels=dict(spec.get("labels", {})), methods=tuple(spec.get("methods", ())))
        units.append(u)
        for m in su.metrics or []:
            rows.append({"key": su.key, "unit": u.name, "model": u.model, "revision": u.revision,
                         "stage": u.labels.get("stage", "base"), **m})
    if not units:
        store.close()
        raise CalibenchError(f"{root}: the study has no finished evaluation units yet")
    order = {k: i for i, k in enumerate(meta.get("units", []))}
    if order:  # units the study file no longer lists stay in the store but not in the report
        keep = {u.key for u in units if u.key in order}
        units = [u for u in units if u.key in keep]
        rows = [r for r in rows if r["key"] in keep]
    units.sort(key=lambda u: order.get(u.key, len(order)))
    return StudyData(root=root, name=meta.get("name", root.name), description=meta.get("description", ""),
                     settings=settings, units=units, metrics=pd.DataFrame(rows), store=store,
                     synthetic=synthetic)


# -- figures ---------------------------------------------------------------------------------------------


def fig_uri(fig: Figure, *, dpi: int = 80) -> str:
    """A PNG data URI of ``fig`` (no timestamp metadata, so the same study gives the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None}, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{esc(alt)}">'


def _style(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(True, color="0.9", lw=0.6)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _metric_rows(data: StudyData, keys: list[str], metric: str) -> pd.DataFrame:
    m = data.metrics
    return m[(m["metric"] == metric) & (m["key"].isin(keys))]


def _errbar(ax: Any, x: list[float], rows: pd.DataFrame, label: str, color: str) -> None:
    y = rows["estimate"].to_numpy(dtype=float)
    lo = rows["low"].to_numpy(dtype=float)
    hi = rows["high"].to_numpy(dtype=float)
    yerr = [[max(0.0, v) if math.isfinite(v) else 0.0 for v in y - lo],
            [max(0.0, v) if math.isfinite(v) else 0.0 for v in hi - y]]
    ax.errorbar(x, y, yerr=yerr, marker="o", ms=4, lw=1.4, capsize=3, label=label, color=color)


def _line_figure(data: StudyData, series: dict[str, list[tuple[float, EvalUnit]]], *, metric: str, xlabel: str,
                 logx: bool, title: str, hlines: dict[str, dict[str, float]] | None = None) -> Figure | None:
    """One panel per task, one line per (series, method): ``metric`` with 95% CIs against x."""
    tasks = sorted({u.task for pts in series.values() for _, u in pts})
    if not tasks:
        return None
    fig = Figure(figsize=(7.6 * min(len(tasks), 2), 3.6 * math.ceil(len(tasks) / 2)), layout="constrained")
    for ti, task in enumerate(tasks):
        ax = fig.add_subplot(math.ceil(len(tasks) / 2), min(len(tasks), 2), ti + 1)
        ci = 0
        for sname, pts in series.items():
            pts = sorted(((x, u) for x, u in pts if u.task == task), key=lambda t: t[0])
            if not pts:
                continue
            for method in pts[0][1].methods:
                rows = []
                xs = []
                for x, u in pts:
                    r = _metric_rows(data, [u.key], metric)
                    r = r[r["method"] == method]
                    if len(r):
                        rows.append(r.iloc[0])
                        xs.append(x)
                if rows:
                    if len(series) == 1:
                        label = method
                    else:
                        label = sname if len(pts[0][1].methods) == 1 else f"{sname} · {method}"
                    _errbar(ax, xs, pd.DataFrame(rows), label, _PALETTE[ci % len(_PALETTE)])
                    ci += 1
        for hname, values in (hlines or {}).items():
            if task in values:
                ax.axhline(values[task], ls=":", color="0.3", lw=1.2, label=hname)
        if logx:
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)
        _style(ax, xlabel, metric.upper() if metric != "accuracy" else "accuracy", f"{title}: {task}")
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # never over data
    return fig


def scale_figure(data: StudyData, metric: str = "ece") -> Figure | None:
    """ECE vs parameter count of the pretrained/base models (last revision of each)."""
    from calibench.report.findings import _base_models, _final

    final = _final([u for u in _base_models(data.units) if u.labels.get("params")])
    if len({u.labels["params"] for u in final.values()}) < 2:
        return None
    return _line_figure(data, {"pretrained": [(u.labels["params"], u) for u in final.values()]}, metric=metric,
                        xlabel="parameters", logx=True, title="scale")


def dynamics_figure(data: StudyData, metric: str = "ece") -> Figure | None:
    """ECE vs training step for every model evaluated at >= 2 step checkpoints."""
    series: dict[str, list[tuple[float, EvalUnit]]] = {}
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
    from calibench.report.findings import _final

    def epoch_of(u: EvalUnit) -> int | None:
        # a single RL/DPO output (revision "final") counts as one epoch after the model it started from
        epoch = u.labels.get("epoch")
        return 1 if epoch is None and u.labels.get("stage") in ("rl", "dpo") else epoch

    aligned = [u for u in data.units if u.labels.get("stage") in ("sft", "rl", "dpo") and epoch_of(u) is not None
               and method in u.methods]
    if not aligned:
        return None
    series: dict[str, list[tuple[float, EvalUnit]]] = {}
    last_epoch = {}
    for u in aligned:
        last_epoch[u.model] = max(last_epoch.get(u.model, 0), int(epoch_of(u) or 0))
    for u in aligned:
        lab = u.labels
        parts = [lab.get("stage", ""), lab.get("tuning") or "", lab.get("data") or ""]
        # RL/DPO epochs continue the epochs of the SFT model they started from, as in the paper's plots.
        offset = last_epoch.get(lab.get("base") or "", 0) if lab.get("stage") in ("rl", "dpo") else 0
        series.setdefault(f"{u.model} ({' '.join(p for p in parts if p)})", []).append(
            (float(epoch_of(u) or 0) + offset, u))
    final = _final(data.units)
    hlines: dict[str, dict[str, float]] = {}
    for base in sorted({u.labels["base"] for u in aligned if u.labels.get("base")}):
        for (model, task), u in final.items():
            if model == base and u.labels.get("stage") in ("pretrained", "base"):
                r = _metric_rows(data, [u.key], metric)
                r = r[r["method"] == method]
                if len(r):
                    hlines.setdefault(f"base {base}", {})[task] = float(r["estimate"].iloc[0])
    restricted = {k: [(x, _only(u, method)) for x, u in v] for k, v in series.items()}
    return _line_figure(data, restricted, metric=metric, xlabel="epoch", logx=False,
                        title=f"alignment ({method})", hlines=hlines)


def _only(u: EvalUnit, method: str) -> EvalUnit:
    return EvalUnit(key=u.key, model=u.model, revision=u.revision, task=u.task, labels=u.labels, methods=(method,))


def reliability_figures(data: StudyData) -> list[tuple[str, str]]:
    """(title, data URI) of one reliability grid per task x method over each model's last revision."""
    from calibench.report.diagrams import reliability_diagram
    from calibench.report.findings import _final
    from calibench.report.plots import plot_grid

    final = _final(data.units)
    out = []
    n_bins = int(data.settings.get("n_bins", 10))
    tasks = list(dict.fromkeys(u.task for u in data.units))
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
            out.append((f"{task} · {method}", fig_uri(fig, dpi=70)))
    return out


# -- HTML pieces -----------------------------------------------------------------------------------------


def _num(x: Any, digits: int = 3) -> str:
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(xf):
        return "n/a"
    if xf != 0 and abs(xf) < 0.5 * 10 ** -digits:
        return f"{xf:.1e}"  # tiny but not zero: keep the sign and size visible instead of "-0.000"
    return f"{xf:.{digits}f}"


def _ci(est: Any, low: Any, high: Any) -> str:
    if not (isinstance(low, (int, float)) and math.isfinite(low)):
        return f"{_num(est)}"
    return f"{_num(est)}<span class=ci>[{_num(low)}, {_num(high)}]</span>"


def _table(headers: list[str], rows: list[list[str]], *, cls: str = "") -> str:
    """``rows`` cells are already-escaped HTML; headers are escaped here."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return (f'<div class=scroll><table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def stage_tables(data: StudyData) -> str:
    """Per stage: metrics with 95% CIs per unit x method."""
    m = data.metrics
    parts = []
    stages = [s for s in STAGE_ORDER if s in set(m["stage"])] + sorted(set(m["stage"]) - set(STAGE_ORDER))
    for stage in stages:
        sm = m[m["stage"] == stage]
        rows = []
        for (unit, task, method), g in sm.groupby(["unit", "task", "method"], sort=False):
            by = {r["metric"]: r for _, r in g.iterrows()}
            cells = [esc(unit), esc(task), esc(method), esc(int(g["n"].iloc[0]))]
            for metric in TABLE_METRICS:
                r = by.get(metric)
                cells.append(_ci(r["estimate"], r["low"], r["high"]) if r is not None else "&ndash;")
            rows.append(cells)
        n = len(rows)
        parts.append(f"<details{' open' if stage == stages[0] else ''}><summary>{esc(STAGE_TITLES.get(stage, stage))}"
                     f" <span class=muted>({n} rows)</span></summary>"
                     + _table(["model", "task", "method", "n", *TABLE_METRICS], rows, cls="metrics") + "</details>")
    return "\n".join(parts)


_BADGE = {AGREE: "agree", DISAGREE: "disagree", INCONCLUSIVE: "inconclusive", NOT_TESTED: "untested"}


def findings_html(findings: list[Finding]) -> str:
    rows = []
    for f in findings:
        c = f.counts()
        if f.cells:
            evidence = (f"{len(f.cells)} cells: {c[AGREE]} agree, {c[DISAGREE]} disagree, {c[INCONCLUSIVE]} "
                        "inconclusive")
            worst = sorted(f.cells, key=lambda x: x.delta)
            ex = worst[len(worst) // 2]
            evidence += (f"; median cell {esc(ex.pair.b.name)} vs {esc(ex.pair.a.name)} on {esc(ex.pair.b.task)}"
                         f" ({esc(ex.method)}): &Delta;{esc(f.claim.metric)} = {_num(ex.delta)} "
                         f"[{_num(ex.low)}, {_num(ex.high)}]")
        else:
            evidence = "the study has no units this claim compares"
        rows.append([esc(f.claim.id), esc(f.claim.paper), esc(f.claim.text), esc(f.claim.test),
                     f'<span class="badge {_BADGE[f.verdict]}">{esc(f.verdict)}</span>', evidence])
    return _table(["claim", "paper", "statement", "test (95% paired bootstrap CI)", "verdict", "evidence"], rows,
                  cls="findings")


def deltas_html(data: StudyData) -> str:
    """Paired deltas (child - parent) of each aligned model's last revision vs the model it was tuned from."""
    from calibench.report.findings import cmp_aligned_vs_base

    rows = []
    for pair in cmp_aligned_vs_base(data.units):
        for method in [m for m in pair.b.methods if m in pair.a.methods]:
            for metric in DELTA_METRICS:
                d = data.delta(pair.a, pair.b, method, metric)
                if d is None:
                    continue
                est, low, high, p, n = d
                sig = "sig" if p < 0.05 else ""
                rows.append([esc(pair.b.name), esc(pair.a.name), esc(pair.b.task), esc(method), esc(metric),
                             f'<span class="{sig}">{_num(est)}</span>', f"[{_num(low)}, {_num(high)}]",
                             _num(p, 3), esc(n)])
    if not rows:
        return "<p class=muted>No aligned model with a base model in this study.</p>"
    return f"<details{' open' if len(rows) <= 60 else ''}><summary>{len(rows)} comparisons</summary>" + _table(["model", "vs base", "task", "method", "metric", "delta", "95% CI", "p", "n"], rows,
                  cls="deltas") + "</details>"


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d232b;margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 10px;border-bottom:1px solid #e3e6ea;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.muted{color:#6b7480}.ci{display:block;color:#6b7480;font-size:11px}.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;margin:8px 0 14px;font-size:12.5px}
th,td{border-bottom:1px solid #eceef1;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f3f5f7;font-weight:600;position:sticky;top:0}
table.metrics td:nth-child(n+4),table.deltas td:nth-child(n+6){font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;white-space:nowrap}
.agree{background:#d9f2e3;color:#17633a}.disagree{background:#f9dcd9;color:#8f2417}
.inconclusive{background:#fbefcf;color:#7a5a00}.untested{background:#eceef1;color:#5a626d}
.sig{font-weight:700}img{max-width:100%;height:auto;display:block;margin:6px 0 16px;border:1px solid #eceef1}
details{margin:6px 0}summary{cursor:pointer;font-weight:600;padding:4px 0}
.note{background:#fff8e1;border-left:4px solid #f0c040;padding:8px 12px;margin:12px 0}
nav a{margin-right:14px;color:#3b6ea8;text-decoration:none}footer{margin-top:40px;font-size:12px;color:#6b7480}
"""


def render(data: StudyData) -> str:
    """The complete HTML document of a study."""
    findings = evaluate_claims(data.units, data.delta, CLAIMS)
    synthetic = data.synthetic
    sections: list[tuple[str, str, str]] = []
    sections.append(("findings", "Findings: the papers' claims against this study",
                     "<p class=muted>Verdicts are computed from 95% paired bootstrap CIs of each comparison "
                     "(cells = model pair x task x method); see docs/study.md for the rules.</p>"
                     + findings_html(findings)))
    sections.append(("stages", "Metrics per stage (95% bootstrap CIs)", stage_tables(data)))
    figs = [(t, uri) for t, uri in reliability_figures(data)]
    sections.append(("reliability", "Reliability diagrams (last revision of each model)",
                     "".join(f"<h3>{esc(t)}</h3>{_img(uri, 'reliability diagrams ' + t)}" for t, uri in figs)))
    for sid, title, fig in (("scale", "ECE vs parameters (scale)", scale_figure(data)),
                            ("dynamics", "ECE vs training step (dynamics)", dynamics_figure(data))):
        body = _img(fig_uri(fig), title) if fig is not None else "<p class=muted>Not in this study.</p>"
        sections.append((sid, title, body))
    methods = list(dict.fromkeys(m for u in data.units for m in u.methods))
    align = []
    for method in methods:
        fig = alignment_figure(data, method)
        if fig is not None:
            align.append(f"<h3>{esc(method)}</h3>" + _img(fig_uri(fig), f"alignment {method}"))
    sections.append(("alignment", "Alignment: ECE per epoch (base, SFT full / LoRA, diverse / narrow, RL, DPO)",
                     "".join(align) or "<p class=muted>Not in this study.</p>"))
    sections.append(("deltas", "Paired deltas vs the base model (aligned - base; bold: p < 0.05)",
                     deltas_html(data)))
    nav = "".join(f'<a href="#{sid}">{esc(title.split(":")[0].split("(")[0].strip())}</a>' for sid, title, _ in sections)
    body = "\n".join(f'<section id="{sid}"><h2>{esc(title)}</h2>{content}</section>'
                     for sid, title, content in sections)
    note = ('<div class=note>This study contains <b>simulated (synthetic) models</b>: its numbers describe the '
            "simulation and test the tooling, not any real language model.</div>") if synthetic else ""
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>calibench study {esc(data.name)}</title><style>{_CSS}</style></head><body><main>"
            f"<h1>calibench study: {esc(data.name)}</h1><p class=muted>{esc(data.description)}</p>"
            f"<p class=muted>{len(data.units)} evaluation units · calibench {esc(__version__)} · {esc(generated)}</p>"
            f"{note}<nav>{nav}</nav>{body}"
            f"<footer>Generated by calibench {esc(__version__)} from {esc(data.root.name)}.</footer></main></body></html>")


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
