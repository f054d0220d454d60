"""The papers' claims as data, the unit pairs each one compares, and the verdicts of a study.

Each claim names a comparison (which units to compare: b vs a on the same items), a metric,
optionally a method, the claimed direction of ``metric(b) - metric(a)`` and a quantifier. A cell is
one pair on one task with one method. How cells become a verdict (validity gates, one pooled effect
per claim from a joint paired bootstrap, Holm across the claims of a report, the verdicts agree /
disagree / mixed / inconclusive / not tested) lives in ``calibench.study.claims``; the rules are
written out in docs/lifecycle-lab.md and were fixed before any lifecycle run.

A claim with no cells in this study is ``not tested``, with the one-line reason (``NEEDS``: what
the study would have to contain). ``cell_verdict`` and ``combine`` are the per-cell CI reading and the cell tally kept for display; the
claim verdict does not use them. Nothing here is written by hand about a particular study: change
the numbers and the verdicts change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from calibench.study import claims as stats

AGREE, DISAGREE, INCONCLUSIVE, MIXED, NOT_TESTED = "agree", "disagree", "inconclusive", "mixed", "not tested"
VERDICTS = (AGREE, DISAGREE, MIXED, INCONCLUSIVE, NOT_TESTED)
UNTESTABLE = ": not testable: "  # joins a unit name and the reason its model is marked not testable


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, and how a study's numbers test it."""

    id: str
    paper: str
    text: str
    test: str
    comparison: str            # key of COMPARISONS: which unit pairs (a, b) to compare
    metric: str = "ece"
    direction: int = 1         # claimed sign of metric(b) - metric(a); 0 = "no change" (equivalence)
    quantifier: str = "pooled"  # pooled (mean over cells) | some | every
    method: str | None = None  # only this confidence method, or every method
    margin: float = 0.03       # for direction 0: the equivalence band +-margin


ZHU = "Zhu et al. 2023"
OH = "Oh & Hwang 2024"

CLAIMS: tuple[Claim, ...] = (
    Claim("zhu-scale", ZHU, "Larger models are better calibrated.",
          "Pooled ECE of the largest minus the smallest pretrained model (same task, method) is below 0.",
          "scale", direction=-1),
    Claim("zhu-dynamics", ZHU, "Longer pretraining improves calibration.",
          "Pooled ECE at the last checkpoint minus the first checkpoint whose accuracy is significantly "
          "above chance (per task and method) is below 0.", "dynamics", direction=-1),
    Claim("zhu-sft-hurts", ZHU, "Instruction tuning hurts calibration.",
          "Pooled ECE of each instruction-tuned model (last epoch) minus its base model is above 0.",
          "sft_vs_base", direction=1),
    Claim("zhu-epochs", ZHU, "More epochs of instruction tuning hurt calibration more.",
          "Pooled ECE at the last epoch minus the first epoch of each instruction-tuning run is above 0.",
          "epochs", direction=1),
    Claim("zhu-narrow-data", ZHU, "Narrow synthetic instruction data hurts calibration more than diverse data.",
          "Pooled ECE after tuning on narrow data minus on diverse data (same tuning, epoch, base) is above 0.",
          "narrow_vs_diverse", direction=1),
    Claim("zhu-lora", ZHU, "LoRA barely moves calibration, while full fine-tuning does.",
          "Pooled |ECE(full) - ECE(base)| - |ECE(LoRA) - ECE(base)| (same data, epoch, base) is above 0.",
          "full_vs_lora", direction=1),
    Claim("zhu-rlhf", ZHU, "RLHF adds no harm to calibration after instruction tuning.",
          "Equivalence: the 90% CI of the pooled ECE after RL minus the model RL started from lies "
          "inside +-0.03 (agree); the pooled delta lies significantly outside the band (disagree).",
          "rl_vs_parent", direction=0, margin=0.03),
    Claim("oh-ece-harmless", OH, "Judged by ECE alone, alignment sometimes looks harmless.",
          "ECE of each aligned model (SFT, RL, DPO) minus the pretrained base, per cell with Holm "
          "correction within the claim: some cell is significantly below 0.",
          "aligned_vs_base", direction=-1, quantifier="some"),
    Claim("oh-sce-choice", OH, "Under SCE with the choice method, the aligned model is worse in every "
          "model x task cell.",
          "SCE (choice method) of each aligned model (SFT, RL, DPO) minus the pretrained base is "
          "significantly above 0 in every cell (intersection-union test).",
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
    """Units compared on one task: b against a; with ``ref``, |b - ref| against |a - ref|.

    ``candidates`` (dynamics): the checkpoints that may serve as a, earliest first; per method the
    first one that passes validity is used.
    """

    a: EvalUnit
    b: EvalUnit
    what: str
    ref: EvalUnit | None = None
    candidates: tuple[EvalUnit, ...] = ()

    def units(self) -> tuple[EvalUnit, ...]:
        return (self.a, self.b) if self.ref is None else (self.a, self.b, self.ref)


@dataclass
class Cell:
    pair: Pair
    method: str
    delta: float            # the cell statistic (a delta, or a difference of |deltas| for a ref pair)
    low: float              # 95% bootstrap interval of the statistic
    high: float
    p_value: float          # two-sided bootstrap p
    n: int
    verdict: str            # from the Holm-adjusted p within the claim (see ``claims``)
    p_holm: float = float("nan")
    replicates: np.ndarray | None = field(default=None, repr=False)


@dataclass
class Finding:
    claim: Claim
    verdict: str
    cells: list[Cell] = field(default_factory=list)
    reason: str | None = None     # why a claim is not tested here (one line); None when it is
    effect: float = float("nan")  # pooled effect: mean of the cell statistics
    low: float = float("nan")     # its bootstrap interval at ``level`` (90% for equivalence, else 95%)
    high: float = float("nan")
    level: float = 0.95
    p_value: float = float("nan")     # the claim test's p
    p_adjusted: float = float("nan")  # Holm across the report's testable claims
    invalid: list[str] = field(default_factory=list)   # cells left out by validity, with why
    side: int = 0                 # where the claim test points: +1 towards the claim, -1 against

    @property
    def n_invalid(self) -> int:
        return len(self.invalid)

    def counts(self) -> dict[str, int]:
        out = {AGREE: 0, DISAGREE: 0, INCONCLUSIVE: 0}
        for c in self.cells:
            out[c.verdict] += 1
        return out


# -- comparisons: which unit pairs each claim looks at ---------------------------------------------------

# The label that orders a stage's revisions (its declared progress), then the other one.
PROGRESS: dict[str, tuple[str, ...]] = {
    "pretrained": ("step", "epoch"), "base": ("step", "epoch"), "sft": ("epoch", "step"),
    "dpo": ("epoch", "step"), "rl": ("step", "epoch"),
}


def revision_order(u: EvalUnit) -> tuple[float, ...]:
    """Sort key of a unit among its model's revisions: the stage's progress labels (missing = -1)."""
    names = PROGRESS.get(str(u.labels.get("stage")), ("step", "epoch"))
    return tuple(float(u.labels[n]) if u.labels.get(n) is not None else -1.0 for n in names)


def final_revisions(units: list[EvalUnit]) -> dict[tuple[str, str], EvalUnit]:
    """(model, task) -> the model's last revision on that task: largest step for pretraining, largest
    epoch for tuning (``PROGRESS``); ties go to the one listed last."""
    out: dict[tuple[str, str], EvalUnit] = {}
    for u in units:
        k = (u.model, u.task)
        if k not in out or revision_order(u) >= revision_order(out[k]):
            out[k] = u
    return out


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
    """Last checkpoint vs the earliest one that is valid (chosen per method from ``candidates``)."""
    pairs = []
    by: dict[tuple[str, str], list[EvalUnit]] = {}
    for u in units:
        if u.labels.get("step") is not None:
            by.setdefault((u.model, u.task), []).append(u)
    for (_, _task), us in sorted(by.items()):
        us.sort(key=lambda u: u.labels["step"])
        if len(us) >= 2 and us[0].labels["step"] < us[-1].labels["step"]:
            pairs.append(Pair(us[0], us[-1], "first valid vs last checkpoint", candidates=tuple(us[:-1])))
    return pairs


def _parents(units: list[EvalUnit], stages: tuple[str, ...], *, to_root: bool = False) -> list[Pair]:
    """Each model of ``stages`` (last revision) against the model it was tuned from, or, with
    ``to_root``, against the pretrained/base model at the root of its ``base`` chain."""
    final = final_revisions(units)
    pairs = []
    for (model, task), u in final.items():
        parent = u.labels.get("base")
        if u.labels.get("stage") not in stages or not parent:
            continue
        seen = {model}
        while to_root and (parent, task) in final and final[(parent, task)].labels.get("base") and parent not in seen:
            seen.add(parent)
            parent = final[(parent, task)].labels["base"]
        if (parent, task) in final:
            pairs.append(Pair(final[(parent, task)], u, f"{parent} -> {model}"))
    return pairs


def cmp_sft_vs_base(units: list[EvalUnit]) -> list[Pair]:
    return _parents(units, ("sft",))


def cmp_rl_vs_parent(units: list[EvalUnit]) -> list[Pair]:
    return _parents(units, ("rl",))


def cmp_aligned_vs_base(units: list[EvalUnit]) -> list[Pair]:
    """Every aligned model (SFT, RL, DPO) against the pretrained base its chain starts from."""
    return _parents(units, ("sft", "rl", "dpo"), to_root=True)


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
    """Full (b) vs LoRA (a) on the same data, epoch and base, each measured from that base (ref)."""
    final = final_revisions(units)
    out = []
    for p in _sft_contrast(units, "tuning", "lora", "full", ("data", "base", "epoch")):
        ref = final.get((str(p.b.labels.get("base")), p.b.task))
        if ref is not None:
            out.append(Pair(p.a, p.b, f"|{p.b.name} - {ref.name}| vs |{p.a.name} - {ref.name}|", ref=ref))
    return out


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


# -- per-cell reading and tallies (display) ------------------------------------------------------------------


def cell_verdict(low: float, high: float, direction: int, margin: float = 0.02) -> str:
    """Reading of one CI for a claimed direction: above/below 0, or for direction 0 (no harm) below
    ``margin`` (agree) or above 0 (disagree). Display only; claims use ``calibench.study.claims``."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    if direction > 0:
        return AGREE if low > 0 else DISAGREE if high < 0 else INCONCLUSIVE
    if direction < 0:
        return AGREE if high < 0 else DISAGREE if low > 0 else INCONCLUSIVE
    return DISAGREE if low > 0 else AGREE if high < margin else INCONCLUSIVE


def combine(verdicts: list[str], quantifier: str) -> str:
    """A tally of cell readings (display only: it is not a test; see ``calibench.study.claims``)."""
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


def untested_reason(claim: Claim, n_pairs: int, n_methods: int, n_invalid: int,
                    invalid: list[str] | None = None) -> str:
    """One line on why a claim has no testable cell in this study."""
    if not n_pairs:
        return NEEDS[claim.comparison]
    if not n_methods:
        return f"needs the {claim.method} method on both units of a compared pair"
    marked = {why.split(UNTESTABLE, 1)[1] for why in invalid or [] if UNTESTABLE in why}
    if invalid and len(marked) == 1 and all(UNTESTABLE in why for why in invalid):
        return f"not testable: {marked.pop()}"   # one model marked not testable (e.g. RL that changed nothing)
    if n_invalid:
        return f"all {n_invalid} cells failed validity (calibench.validity: chance, mass, parse failures, degenerate confidences)"
    return "the compared units share no items the metric is defined on"


DeltaFn = Callable[[EvalUnit, EvalUnit, str, str], "tuple[float, float, float, float, int] | None"]


def evaluate_claims(units: list[EvalUnit], source: Any, claims: tuple[Claim, ...] = CLAIMS) -> list[Finding]:
    """Verdict of every claim, Holm-corrected across ``claims`` (the rules: ``calibench.study.claims``).

    ``source``: study data (``StudyData`` or its bound ``delta``: records, validity and a joint
    bootstrap), a ``claims.CellSource``, or a plain ``delta(a, b, method, metric)`` giving
    (delta, low, high, p, n) of b - a (conservative pseudo-replicates; see ``claims.DeltaSource``).
    """
    src = stats.as_source(source)
    findings = [_claim_cells(claim, units, src) for claim in claims]
    tested = [f for f in findings if f.cells]
    adjusted = stats.holm([f.p_value for f in tested])
    for f, p_adj in zip(tested, adjusted, strict=True):
        f.p_adjusted = float(p_adj)
        if math.isfinite(p_adj) and p_adj < stats.ALPHA and f.side:
            f.verdict = AGREE if f.side > 0 else DISAGREE
        else:
            sig = [c for c in f.cells if math.isfinite(c.p_holm) and c.p_holm < stats.ALPHA]
            both = any(c.delta > 0 for c in sig) and any(c.delta < 0 for c in sig)
            f.verdict = MIXED if both else INCONCLUSIVE
    return findings


def _claim_cells(claim: Claim, units: list[EvalUnit], src: Any) -> Finding:
    """The claim's valid cells (statistics, replicates, within-claim Holm) and its test, before Holm
    across claims; invalid cells are listed with their reason."""
    pairs = COMPARISONS[claim.comparison](units)
    cells: list[Cell] = []
    invalid: list[str] = []
    n_methods = 0
    for pair in pairs:
        shared = set.intersection(*(set(u.methods) for u in pair.units()))
        methods = [m for m in pair.b.methods if m in shared and (claim.method is None or m == claim.method)]
        n_methods += len(methods)
        for method in methods:
            cell_pair, why = _valid_pair(pair, method, src)
            if cell_pair is None:
                invalid.append(f"{pair.what} · {pair.b.task} · {method}: {why}")
                continue
            values = _cell_values(cell_pair, method, claim.metric, src)
            if values is None:
                continue
            low, high = stats.interval(values.replicates, 0.95)
            cells.append(Cell(cell_pair, method, values.estimate, low, high, stats.two_sided_p(values.replicates),
                              values.n, INCONCLUSIVE, replicates=values.replicates))
    if not cells:
        return Finding(claim, NOT_TESTED, [], untested_reason(claim, len(pairs), n_methods, len(invalid), invalid),
                       invalid=invalid)
    cell_holm = stats.holm([c.p_value for c in cells])
    for c, ph in zip(cells, cell_holm, strict=True):
        c.p_holm = float(ph)
        c.verdict = _cell_reading(c, claim, stats.ALPHA)
    reps = np.vstack([c.replicates for c in cells])
    result = stats.run_test(stats.claim_test_kind(claim.quantifier, claim.direction), claim.direction, claim.margin,
                            np.array([c.delta for c in cells]), reps, np.array([c.p_value for c in cells]),
                            cell_holm)
    return Finding(claim, INCONCLUSIVE, cells, None, result.effect, result.low, result.high, result.level,
                   result.p_value, invalid=invalid, side=result.side)


def _valid_pair(pair: Pair, method: str, src: Any) -> tuple[Pair | None, str]:
    """The pair with its a chosen (dynamics: first valid candidate) if every unit passes validity."""
    a = pair.a
    if pair.candidates:
        a = next((u for u in pair.candidates if src.validity(u, method).valid), None)
        if a is None:
            return None, "no checkpoint before the last is significantly above chance"
    chosen = Pair(a, pair.b, pair.what, pair.ref)
    for u in chosen.units():
        if u.labels.get("not_testable"):  # e.g. RL whose manipulation check failed (calibench.train.signals)
            return None, f"{u.name}{UNTESTABLE}{u.labels['not_testable']}"
        v = src.validity(u, method)
        if not v.valid:
            return None, f"{u.name}: {v.reason}"
    return chosen, ""


def _cell_values(pair: Pair, method: str, metric: str, src: Any) -> Any:
    """b - a, or |b - ref| - |a - ref| for a pair with a reference unit (replicates on shared draws)."""
    if pair.ref is None:
        return src.delta_values(pair.a, pair.b, method, metric)
    db = src.delta_values(pair.ref, pair.b, method, metric)
    da = src.delta_values(pair.ref, pair.a, method, metric)
    if db is None or da is None:
        return None
    return stats.Values(abs(db.estimate) - abs(da.estimate), np.abs(db.replicates) - np.abs(da.replicates), min(db.n, da.n))


def _cell_reading(c: Cell, claim: Claim, alpha: float) -> str:
    """A cell's verdict from its Holm-adjusted p within the claim (direction 0: its 90% CI in the band)."""
    if claim.direction == 0:
        lo, hi = stats.interval(c.replicates, 1 - 2 * alpha) if c.replicates is not None else (c.low, c.high)
        if -claim.margin < lo and hi < claim.margin:
            return AGREE
        return DISAGREE if c.p_holm < alpha else INCONCLUSIVE
    if not c.p_holm < alpha:
        return INCONCLUSIVE
    return AGREE if c.delta * claim.direction > 0 else DISAGREE


def claims_table() -> pd.DataFrame:
    """The claims as a table (for docs and the report)."""
    return pd.DataFrame([{"id": c.id, "paper": c.paper, "claim": c.text, "test": c.test, "metric": c.metric,
                          "method": c.method or "every", "quantifier": c.quantifier} for c in CLAIMS])
