"""The papers' claims as data, and their verdicts computed from a study's paired bootstrap CIs.

Each claim names a comparison (which pairs of units to compare: b vs a on the same items), a metric,
optionally a method, the claimed direction of ``metric(b) - metric(a)`` and a quantifier. A cell is one
pair on one task with one method; its verdict comes from the 95% paired-bootstrap CI of the delta:

- claimed increase (+1): CI above 0 -> agree; CI below 0 -> disagree; else inconclusive;
- claimed decrease (-1): the mirror image;
- claimed no harm (0): CI above 0 -> disagree (significant harm); CI below ``margin`` -> agree; else
  inconclusive.

Quantifiers turn cells into the claim's verdict: ``consensus`` (a tendency: agree if some cells agree
and none disagree, disagree in the mirror case, else inconclusive), ``some`` (agree if any cell
agrees, disagree if every cell disagrees) and ``every`` (agree if every cell agrees, disagree if any
disagrees). A claim with no cells in this study is ``not tested``, with the one-line reason
(``NEEDS``: what the study would have to contain). Nothing here is written by hand
about a particular study: change the numbers and the verdicts change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

AGREE, DISAGREE, INCONCLUSIVE, NOT_TESTED = "agree", "disagree", "inconclusive", "not tested"


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, and how a study's numbers test it."""

    id: str
    paper: str
    text: str
    test: str
    comparison: str            # key of COMPARISONS: which unit pairs (a, b) to compare
    metric: str = "ece"
    direction: int = 1         # claimed sign of metric(b) - metric(a); 0 = "no harm"
    quantifier: str = "consensus"
    method: str | None = None  # only this confidence method, or every method
    margin: float = 0.02       # for direction 0: largest harmless increase


ZHU = "Zhu et al. 2023"
OH = "Oh & Hwang 2024"

CLAIMS: tuple[Claim, ...] = (
    Claim("zhu-scale", ZHU, "Larger models are better calibrated.",
          "ECE of the largest minus the smallest pretrained model (same task, method) is below 0.",
          "scale", direction=-1),
    Claim("zhu-dynamics", ZHU, "Longer pretraining improves calibration.",
          "ECE at the last checkpoint minus the earliest checkpoint after step 0 is below 0.",
          "dynamics", direction=-1),
    Claim("zhu-sft-hurts", ZHU, "Instruction tuning hurts calibration.",
          "ECE of each instruction-tuned model (last epoch) minus its base model is above 0.",
          "sft_vs_base", direction=1),
    Claim("zhu-epochs", ZHU, "More epochs of instruction tuning hurt calibration more.",
          "ECE at the last epoch minus the first epoch of each instruction-tuning run is above 0.",
          "epochs", direction=1),
    Claim("zhu-narrow-data", ZHU, "Narrow synthetic instruction data hurts calibration more than diverse data.",
          "ECE after tuning on narrow data minus on diverse data (same tuning, epoch, base) is above 0.",
          "narrow_vs_diverse", direction=1),
    Claim("zhu-lora", ZHU, "LoRA barely moves calibration, while full fine-tuning does.",
          "ECE after full fine-tuning minus after LoRA (same data, epoch, base) is above 0.",
          "full_vs_lora", direction=1),
    Claim("zhu-rlhf", ZHU, "RLHF adds no harm to calibration after instruction tuning.",
          "ECE after RL minus the model RL started from: the CI stays below +0.02 (agree) or lies "
          "above 0 (disagree).", "rl_vs_parent", direction=0, margin=0.02),
    Claim("oh-ece-harmless", OH, "Judged by ECE alone, alignment sometimes looks harmless.",
          "ECE of an aligned model minus its base: some cell (model x task x method) has a CI below 0.",
          "aligned_vs_base", direction=-1, quantifier="some"),
    Claim("oh-sce-choice", OH, "Under SCE with the choice method, the aligned model is worse in every "
          "model x task cell.",
          "SCE (choice method) of each aligned model minus its base is above 0 in every cell.",
          "aligned_vs_base", metric="sce", direction=1, quantifier="every", method="choice"),
)


@dataclass(frozen=True)
class EvalUnit:
    """A finished eval unit as the report sees it."""

    key: str
    model: str
    revision: str
    task: str
    labels: dict[str, Any]
    methods: tuple[str, ...]

    @property
    def name(self) -> str:
        """``model@revision`` (a lab revision ``model/stepN`` shows as ``model@stepN``)."""
        rev = self.revision.removeprefix(f"{self.model}/")
        return f"{self.model}@{rev}" if rev else self.model


@dataclass(frozen=True)
class Pair:
    a: EvalUnit
    b: EvalUnit
    what: str


@dataclass
class Cell:
    pair: Pair
    method: str
    delta: float
    low: float
    high: float
    p_value: float
    n: int
    verdict: str


@dataclass
class Finding:
    claim: Claim
    verdict: str
    cells: list[Cell] = field(default_factory=list)
    reason: str | None = None   # why a claim is not tested here (one line); None when it is

    def counts(self) -> dict[str, int]:
        out = {AGREE: 0, DISAGREE: 0, INCONCLUSIVE: 0}
        for c in self.cells:
            out[c.verdict] += 1
        return out


# -- comparisons: which unit pairs each claim looks at ---------------------------------------------------


def final_revisions(units: list[EvalUnit]) -> dict[tuple[str, str], EvalUnit]:
    """(model, task) -> the model's last revision on that task (last epoch or step, else last listed)."""
    out: dict[tuple[str, str], EvalUnit] = {}
    for u in units:
        k = (u.model, u.task)
        if k not in out or _order(u) >= _order(out[k]):
            out[k] = u
    return out


def _order(u: EvalUnit) -> float:
    lab = u.labels
    for name in ("epoch", "step"):
        if lab.get(name) is not None:
            return float(lab[name])
    return 0.0


def base_models(units: list[EvalUnit]) -> list[EvalUnit]:
    return [u for u in units if u.labels.get("stage") in ("pretrained", "base") and not u.labels.get("base")]


def cmp_scale(units: list[EvalUnit]) -> list[Pair]:
    final = final_revisions([u for u in base_models(units) if u.labels.get("params")])
    pairs = []
    for task in sorted({t for _, t in final}):
        cands = sorted((u for (_, t), u in final.items() if t == task), key=lambda u: u.labels["params"])
        if len(cands) >= 2 and cands[0].labels["params"] < cands[-1].labels["params"]:
            pairs.append(Pair(cands[0], cands[-1], "smallest vs largest"))
    return pairs


def cmp_dynamics(units: list[EvalUnit]) -> list[Pair]:
    pairs = []
    by: dict[tuple[str, str], list[EvalUnit]] = {}
    for u in units:
        if u.labels.get("step") is not None and u.labels["step"] > 0:
            by.setdefault((u.model, u.task), []).append(u)
    for (_, _task), us in sorted(by.items()):
        us.sort(key=lambda u: u.labels["step"])
        if len(us) >= 2:
            pairs.append(Pair(us[0], us[-1], "earliest vs last checkpoint"))
    return pairs


def _parents(units: list[EvalUnit], stages: tuple[str, ...]) -> list[Pair]:
    final = final_revisions(units)
    pairs = []
    for (model, task), u in final.items():
        parent = u.labels.get("base")
        if u.labels.get("stage") in stages and parent and (parent, task) in final:
            pairs.append(Pair(final[(parent, task)], u, f"{parent} -> {model}"))
    return pairs


def cmp_sft_vs_base(units: list[EvalUnit]) -> list[Pair]:
    return _parents(units, ("sft",))


def cmp_rl_vs_parent(units: list[EvalUnit]) -> list[Pair]:
    return _parents(units, ("rl",))


def cmp_aligned_vs_base(units: list[EvalUnit]) -> list[Pair]:
    return _parents(units, ("sft", "rl", "dpo"))


def cmp_epochs(units: list[EvalUnit]) -> list[Pair]:
    by: dict[tuple[str, str], list[EvalUnit]] = {}
    for u in units:
        if u.labels.get("stage") == "sft" and u.labels.get("epoch") is not None:
            by.setdefault((u.model, u.task), []).append(u)
    pairs = []
    for _, us in sorted(by.items()):
        us.sort(key=lambda u: u.labels["epoch"])
        if len(us) >= 2 and us[0].labels["epoch"] < us[-1].labels["epoch"]:
            pairs.append(Pair(us[0], us[-1], "first vs last epoch"))
    return pairs


def _sft_contrast(units: list[EvalUnit], field_name: str, a_value: str, b_value: str, same: tuple[str, ...]) -> list[Pair]:
    sft = [u for u in units if u.labels.get("stage") == "sft"]
    pairs = []
    for b in sft:
        if b.labels.get(field_name) != b_value:
            continue
        for a in sft:
            if (a.labels.get(field_name) == a_value and a.task == b.task and a.revision == b.revision
                    and all(a.labels.get(f) == b.labels.get(f) for f in same)):
                pairs.append(Pair(a, b, f"{a.name} vs {b.name}"))
    final = {(u.model, u.task): u for u in final_revisions(sft).values()}
    return [p for p in pairs if final.get((p.b.model, p.b.task)) is p.b]


def cmp_narrow_vs_diverse(units: list[EvalUnit]) -> list[Pair]:
    return _sft_contrast(units, "data", "diverse", "narrow", ("tuning", "base", "epoch"))


def cmp_full_vs_lora(units: list[EvalUnit]) -> list[Pair]:
    return _sft_contrast(units, "tuning", "lora", "full", ("data", "base", "epoch"))


COMPARISONS: dict[str, Callable[[list[EvalUnit]], list[Pair]]] = {
    "scale": cmp_scale, "dynamics": cmp_dynamics, "sft_vs_base": cmp_sft_vs_base, "epochs": cmp_epochs,
    "narrow_vs_diverse": cmp_narrow_vs_diverse, "full_vs_lora": cmp_full_vs_lora,
    "rl_vs_parent": cmp_rl_vs_parent, "aligned_vs_base": cmp_aligned_vs_base,
}

# What a study must contain for each comparison to find pairs: the one line a report shows for a claim
# this study cannot test.
NEEDS: dict[str, str] = {
    "scale": "needs two or more pretrained/base models of different declared sizes (params:) on one task",
    "dynamics": "needs pretraining checkpoints: one model at two or more steps after step 0 (revisions:)",
    "sft_vs_base": "needs an instruction-tuned model (stage: sft) and the base model it was tuned from (base:)",
    "epochs": "needs an instruction-tuning run evaluated after two or more epochs (revisions: [epoch1, ...])",
    "narrow_vs_diverse": "needs SFT models tuned on narrow and on diverse data (data:) with the same tuning, "
                         "base and epoch",
    "full_vs_lora": "needs SFT models tuned fully and with LoRA (tuning:) on the same data, base and epoch",
    "rl_vs_parent": "needs an RL model (stage: rl) and the model RL started from (base:)",
    "aligned_vs_base": "needs an aligned model (stage: sft, rl or dpo) and its base model (base:)",
}


# -- verdicts ------------------------------------------------------------------------------------------


def cell_verdict(low: float, high: float, direction: int, margin: float = 0.02) -> str:
    """Verdict of one paired-delta CI for a claimed direction (see the module docstring)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    if direction > 0:
        return AGREE if low > 0 else DISAGREE if high < 0 else INCONCLUSIVE
    if direction < 0:
        return AGREE if high < 0 else DISAGREE if low > 0 else INCONCLUSIVE
    return DISAGREE if low > 0 else AGREE if high < margin else INCONCLUSIVE


def combine(verdicts: list[str], quantifier: str) -> str:
    """A claim's verdict from its cells' verdicts."""
    if not verdicts:
        return NOT_TESTED
    n_agree, n_dis = verdicts.count(AGREE), verdicts.count(DISAGREE)
    if quantifier == "every":
        return DISAGREE if n_dis else AGREE if n_agree == len(verdicts) else INCONCLUSIVE
    if quantifier == "some":
        return AGREE if n_agree else DISAGREE if n_dis == len(verdicts) else INCONCLUSIVE
    if n_agree and not n_dis:
        return AGREE
    if n_dis and not n_agree:
        return DISAGREE
    return INCONCLUSIVE


DeltaFn = Callable[[EvalUnit, EvalUnit, str, str], "tuple[float, float, float, float, int] | None"]


def evaluate_claims(units: list[EvalUnit], delta: DeltaFn, claims: tuple[Claim, ...] = CLAIMS) -> list[Finding]:
    """Verdict of every claim; ``delta(a, b, method, metric)`` gives (delta, low, high, p, n) of b - a."""
    findings = []
    for claim in claims:
        cells: list[Cell] = []
        pairs = COMPARISONS[claim.comparison](units)
        has_method = False
        for pair in pairs:
            methods = [m for m in pair.b.methods if m in pair.a.methods]
            if claim.method is not None:
                methods = [m for m in methods if m == claim.method]
            has_method = has_method or bool(methods)
            for method in methods:
                d = delta(pair.a, pair.b, method, claim.metric)
                if d is None:
                    continue
                est, low, high, p, n = d
                cells.append(Cell(pair, method, est, low, high, p, n,
                                  cell_verdict(low, high, claim.direction, claim.margin)))
        reason = None
        if not cells:
            reason = (NEEDS[claim.comparison] if not pairs
                      else f"needs the {claim.method} method on both units of a compared pair" if not has_method
                      else "the compared units share no items the metric is defined on")
        findings.append(Finding(claim, combine([c.verdict for c in cells], claim.quantifier), cells, reason))
    return findings


def claims_table() -> pd.DataFrame:
    """The claims as a table (for docs and the report)."""
    return pd.DataFrame([{"id": c.id, "paper": c.paper, "claim": c.text, "test": c.test, "metric": c.metric,
                          "method": c.method or "every", "quantifier": c.quantifier} for c in CLAIMS])
