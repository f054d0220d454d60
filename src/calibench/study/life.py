"""The life of a model as the report shows it: which revisions make the lifecycle axis, and their numbers.

A study that links its models with ``base:`` (pretrained -> SFT -> RL/DPO) and evaluates revisions
(``step...``, ``epoch...``) has a *spine*: the root pretrained model's checkpoints, then the deepest
child chain's epochs, then every model tuned from the last link (RL and DPO side by side). That spine is
the x axis of the report's opening figure (ECE with CI per method, accuracy beside it) and the rows of
its reliability grids, followed by the other models' last revisions (sibling SFT runs, smaller sizes).
This module only decides which units and numbers; drawing lives in ``calibench.report.life``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from calibench.report.life import LifeChart, LifePanel, LifeSeries, StageSpan
from calibench.report.lines import Line
from calibench.study.findings import EvalUnit, final_revisions, revision_order
from calibench.study.results import StudyData

STAGE_NAMES = {"pretrained": "pretraining", "base": "pretraining", "sft": "SFT", "rl": "RL", "dpo": "DPO"}
MAX_ROWS = 20          # rows of a reliability grid (spine checkpoints are thinned beyond it)


@dataclass(frozen=True)
class LifeStep:
    """One point of a model's life: a (model, revision) across tasks, with its place on the axis."""

    model: str
    revision: str
    stage: str
    label: str            # the x tick: "step16", "epoch2", "RL"
    branch: bool = False  # a terminal branch (RL, DPO): drawn from the previous link's last point

    @property
    def row(self) -> str:
        """The name of this point in grids and tables: ``model@revision``."""
        rev = self.revision.removeprefix(f"{self.model}/")
        return f"{self.model}@{rev}" if rev else self.model


def _short(u: EvalUnit) -> str:
    rev = u.revision.rsplit("/", 1)[-1]
    stage = str(u.labels.get("stage", ""))
    if stage in ("rl", "dpo") and rev in ("", "final"):
        return stage.upper()
    return rev or u.model


def _revisions(units: list[EvalUnit]) -> dict[str, list[EvalUnit]]:
    """model -> one unit per revision (the first task's), in revision order."""
    out: dict[str, dict[str, EvalUnit]] = {}
    for u in units:
        out.setdefault(u.model, {}).setdefault(u.revision, u)
    return {m: sorted(revs.values(), key=revision_order) for m, revs in out.items()}


def spine(units: list[EvalUnit]) -> list[LifeStep]:
    """The lifecycle axis: root checkpoints, the deepest ``base:`` chain's revisions, then every model
    tuned from the chain's last link (as branches). Empty when that gives fewer than two points."""
    revs = _revisions(units)
    labels = {m: us[0].labels for m, us in revs.items()}
    children: dict[str, list[str]] = {}
    for m, lab in labels.items():
        parent = lab.get("base")
        if parent in revs and parent != m:
            children.setdefault(str(parent), []).append(m)

    def depth(m: str, seen: frozenset[str] = frozenset()) -> int:
        kids = [c for c in children.get(m, []) if c not in seen]
        return 1 + max((depth(c, seen | {m}) for c in kids), default=0)

    roots = [m for m in revs if not labels[m].get("base") and labels[m].get("stage", "base") in ("pretrained", "base")]
    if not roots:
        return []
    order = {m: i for i, m in enumerate(revs)}
    root = max(roots, key=lambda m: (depth(m), len(revs[m]), -order[m]))
    chain, branches = [root], set()
    node = root
    while True:
        kids = sorted((c for c in children.get(node, []) if c not in chain),
                      key=lambda c: (-depth(c, frozenset(chain)), order[c]))
        if not kids:
            break
        if node != root and len(kids) > 1 and not any(children.get(k) for k in kids):
            chain.extend(kids)        # the last link's children side by side (RL, DPO): branches
            branches.update(kids)
            break
        node = kids[0]
        chain.append(node)
    steps = [LifeStep(u.model, u.revision, str(labels[m].get("stage", "base")), _short(u), branch=m in branches)
             for m in chain for u in revs[m]]
    return steps if len(steps) >= 2 else []


def _thin(steps: list[LifeStep], keep: int) -> list[LifeStep]:
    """At most ``keep`` steps: every non-pretraining step, pretraining checkpoints evenly thinned
    (first and last always kept)."""
    if len(steps) <= keep:
        return steps
    pre = [i for i, s in enumerate(steps) if s.stage in ("pretrained", "base")]
    room = max(2, keep - (len(steps) - len(pre)))
    if len(pre) <= room:
        return steps[:keep]
    pick = {pre[round(j * (len(pre) - 1) / (room - 1))] for j in range(room)}
    return [s for i, s in enumerate(steps) if i in pick or i not in pre]


def life_rows(units: list[EvalUnit], max_rows: int = MAX_ROWS) -> list[LifeStep]:
    """Rows of the reliability grids and exposure tables: the spine, then every other model's last
    revision (study order); without a spine, each model's last revision."""
    sp = _thin(spine(units), max_rows)
    seen = {(s.model, s.revision) for s in sp}
    rows = list(sp)
    lasts: dict[str, EvalUnit] = {}
    for u in final_revisions(units).values():
        lasts.setdefault(u.model, u)
    for m, u in lasts.items():
        if (m, u.revision) not in seen and len(rows) < max_rows:
            rows.append(LifeStep(m, u.revision, str(u.labels.get("stage", "base")), _short(u)))
    return rows


def unit_of(units: list[EvalUnit], step: LifeStep, task: str) -> EvalUnit | None:
    """The eval unit of a life step on one task (None: not scored there)."""
    return next((u for u in units if u.model == step.model and u.revision == step.revision and u.task == task),
                None)


Valid = Callable[[EvalUnit, str], "tuple[bool, str]"]


def life_chart(data: StudyData, metrics: Sequence[str], valid: Valid | None = None) -> LifeChart | None:
    """The opening figure's numbers: per task (rows) x metric (columns), one series per method along the
    spine, stored estimates with 95% CIs; points failing validity are listed apart (drawn hollow)."""
    steps = spine(data.units)
    if not steps:
        return None
    xs = {(s.model, s.revision): float(i) for i, s in enumerate(steps)}
    ticks = {float(i): s.label for i, s in enumerate(steps)}
    spans: list[StageSpan] = []
    for i, s in enumerate(steps):
        name = STAGE_NAMES.get(s.stage, s.stage)
        if s.branch or not spans or spans[-1].label != name:
            spans.append(StageSpan(name if not s.branch else s.label, float(i), float(i)))
        else:
            spans[-1] = StageSpan(name, spans[-1].start, float(i))
    m = data.metrics
    tasks = [t for t in dict.fromkeys(u.task for u in data.units)
             if any(unit_of(data.units, s, t) is not None for s in steps)]
    rows = []
    for task in tasks:
        units = [(s, unit_of(data.units, s, task)) for s in steps]
        methods = list(dict.fromkeys(mm for _, u in units if u is not None for mm in u.methods))
        panels = []
        for metric in metrics:
            mrows = m[(m["metric"] == metric) & (m["task"] == task)] if len(m) else m
            series = []
            for method in methods:
                main: list[tuple[float, float, float, float]] = []
                branches: list[list[tuple[float, float, float, float]]] = []
                invalid: list[tuple[float, float]] = []
                last_main: tuple[float, float, float, float] | None = None
                for s, u in units:
                    if u is None or method not in u.methods:
                        continue
                    r = mrows[(mrows["key"] == u.key) & (mrows["method"] == method)]
                    if not len(r):
                        continue
                    est, low, high = (float(r[c].iloc[0]) for c in ("estimate", "low", "high"))
                    if not math.isfinite(est):
                        continue
                    pt = (xs[(s.model, s.revision)], est, low, high)
                    if valid is not None and not valid(u, method)[0]:
                        invalid.append((pt[0], est))
                    if s.branch:
                        if branches and branches[-1] and _same_model(steps, branches[-1][-1][0], s):
                            branches[-1].append(pt)
                        else:
                            branches.append([last_main, pt] if last_main else [pt])
                    else:
                        main.append(pt)
                        last_main = pt
                segs = [_line(method, main)] if main else []
                segs += [_line(method, b) for b in branches]
                if segs:
                    series.append(LifeSeries(method, segs, invalid))
            panels.append(LifePanel(f"{task}: {metric_title(metric)}", metric_title(metric), series)
                          if series else None)
        if any(panels):
            rows.append(panels)
    if not rows:
        return None
    return LifeChart(ticks, spans, rows)


def _same_model(steps: list[LifeStep], x: float, s: LifeStep) -> bool:
    other = steps[int(x)]
    return other.model == s.model


def _line(label: str, pts: list[tuple[float, float, float, float]]) -> Line:
    return Line(label, [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts], [p[3] for p in pts])


def metric_title(metric: str) -> str:
    return "accuracy" if metric == "accuracy" else metric.upper()
