"""Claim rules on simulated studies with known truth: true effects agree, reversed ones disagree, and a
null study gives a decisive verdict no more often than the nominal 5% (plus binomial slack)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from calibench.study.claims import (
    MIN_RESAMPLES,
    DeltaSource,
    RecordSource,
    chance_rate,
    check_validity,
    holm,
    two_sided_p,
)
from calibench.study.findings import (
    AGREE,
    CLAIMS,
    DISAGREE,
    INCONCLUSIVE,
    MIXED,
    NOT_TESTED,
    Claim,
    EvalUnit,
    cmp_aligned_vs_base,
    evaluate_claims,
    final_revisions,
)

CLAIM = {c.id: c for c in CLAIMS}
METHODS = ("m1", "m2")
TASKS = ("t1", "t2")
N_SIMS = 200
# the false-verdict rate may exceed 5% by two binomial standard errors of 200 simulations
NULL_BOUND = 0.05 + 2 * math.sqrt(0.05 * 0.95 / N_SIMS)


def unit(key: str, model: str, task: str, stage: str, *, base: str | None = None, epoch: int | None = None,
         step: int | None = None, **labels) -> EvalUnit:
    return EvalUnit(key, model, f"step{step}" if step is not None else f"epoch{epoch}" if epoch else "", task,
                    {"stage": stage, "base": base, "epoch": epoch, "step": step, **labels}, METHODS)


def difficulty(task: str, n: int, seed: int) -> np.ndarray:
    """Per-item skill u in (0, 1), shared by every model on the task (so comparisons are paired)."""
    return np.random.default_rng([seed, sum(map(ord, task))]).beta(2.0, 2.0, size=n)


def model_records(u: np.ndarray, *, sharpness: float, rng: np.random.Generator, shift: float = 0.0,
                  k: int = 4) -> pd.DataFrame:
    """Records of one simulated model on one task for every method: right with p = 1/k + (1-1/k) u
    (+ shift), confidence 1/k + (1-1/k) u**(1/sharpness): calibrated at sharpness 1, overconfident above."""
    rows = []
    for method in METHODS:
        p = np.clip(1 / k + (1 - 1 / k) * u + shift, 0, 1)
        conf = 1 / k + (1 - 1 / k) * u ** (1 / sharpness)
        rows.append(pd.DataFrame({"item_id": [f"i{i:04d}" for i in range(u.size)], "method": method,
                                  "confidence": conf, "correct": rng.random(u.size) < p}))
    return pd.concat(rows, ignore_index=True)


def sft_study(base_sharp: float, sft_sharp: float, *, seed: int, n: int = 150, tasks=TASKS,
              sft_shift: float = 0.0):
    """A base model and an SFT model tuned from it on ``tasks``; records keyed by unit key."""
    rng = np.random.default_rng(seed)
    units, records = [], {}
    for task in tasks:
        u = difficulty(task, n, seed)
        b = unit(f"base/{task}", "base", task, "pretrained", epoch=0)
        s = unit(f"sft/{task}", "sft", task, "sft", base="base", epoch=1)
        records[b.key] = model_records(u, sharpness=base_sharp, rng=rng)
        records[s.key] = model_records(u, sharpness=sft_sharp, rng=rng, shift=sft_shift)
        units += [b, s]
    return units, records


def verdict(claim: Claim, units, records, seed: int = 0):
    (f,) = evaluate_claims(units, RecordSource(records.__getitem__, seed=seed), (claim,))
    return f


# -- known truth ---------------------------------------------------------------------------------------


def test_true_effect_agrees_reversed_disagrees():
    units, recs = sft_study(1.0, 3.0, seed=1)
    f = verdict(CLAIM["zhu-sft-hurts"], units, recs)
    assert f.verdict == AGREE and len(f.cells) == 4 and f.effect > 0.05 and f.low > 0
    assert f.p_adjusted < 0.05 and all(c.n == 150 for c in f.cells)
    units, recs = sft_study(3.0, 1.0, seed=1)
    f = verdict(CLAIM["zhu-sft-hurts"], units, recs)
    assert f.verdict == DISAGREE and f.effect < -0.05 and f.high < 0


def _null_rate(claim: Claim, n_sims: int = N_SIMS, **kw) -> tuple[float, list[str]]:
    verdicts = [verdict(claim, *sft_study(1.5, 1.5, seed=1000 + s, **kw), seed=s).verdict for s in range(n_sims)]
    return sum(v in (AGREE, DISAGREE) for v in verdicts) / n_sims, verdicts


@pytest.mark.slow
def test_pooled_claim_under_the_null_is_decisive_at_most_at_the_nominal_rate():
    rate, verdicts = _null_rate(CLAIM["zhu-sft-hurts"])
    assert rate <= NULL_BOUND, rate
    assert verdicts.count(INCONCLUSIVE) + verdicts.count(MIXED) >= N_SIMS * (1 - NULL_BOUND)


@pytest.mark.slow
def test_sometimes_claim_tests_cells_with_holm_and_keeps_the_rate():
    rate, _ = _null_rate(CLAIM["oh-ece-harmless"], n=100)
    assert rate <= NULL_BOUND, rate
    # a real improvement in one cell out of four is enough for "sometimes"
    units, recs = sft_study(1.5, 1.5, seed=3)
    u = difficulty("t1", 150, 3)
    recs["base/t1"] = model_records(u, sharpness=4.0, rng=np.random.default_rng(9))
    recs["sft/t1"] = model_records(u, sharpness=1.0, rng=np.random.default_rng(10))
    f = verdict(CLAIM["oh-ece-harmless"], units, recs)
    assert f.verdict == AGREE
    assert sum(c.verdict == AGREE for c in f.cells) >= 1 and all(c.p_holm >= c.p_value for c in f.cells)


@pytest.mark.slow
def test_equivalence_at_the_margin_is_rarely_called_equivalent():
    claim = Claim("eq", "test", "no change", "accuracy within +-0.03", "sft_vs_base", metric="accuracy",
                  direction=0, margin=0.03)
    wins = 0
    for s in range(N_SIMS):
        units, recs = sft_study(1.0, 1.0, seed=2000 + s, n=400, sft_shift=0.03)
        wins += verdict(claim, units, recs, seed=s).verdict == AGREE
    assert wins / N_SIMS <= NULL_BOUND, wins
    # a truly unchanged model on many items is equivalent; a large change is not
    units, recs = sft_study(1.0, 1.0, seed=5, n=3000, tasks=("t1",))
    recs["sft/t1"] = recs["base/t1"].copy()
    assert verdict(claim, units, recs).verdict == AGREE
    units, recs = sft_study(1.0, 1.0, seed=5, n=1500, sft_shift=0.15)
    f = verdict(claim, units, recs)
    assert f.verdict == DISAGREE and f.level == 0.9


def test_cells_on_both_sides_are_mixed_not_inconclusive():
    rng = np.random.default_rng(4)
    units, recs = sft_study(1.0, 1.0, seed=4, n=400)
    u1, u2 = difficulty("t1", 400, 4), difficulty("t2", 400, 4)
    recs["base/t1"], recs["sft/t1"] = model_records(u1, sharpness=1.0, rng=rng), model_records(u1, sharpness=3.0, rng=rng)
    recs["base/t2"], recs["sft/t2"] = model_records(u2, sharpness=3.0, rng=rng), model_records(u2, sharpness=1.0, rng=rng)
    f = verdict(CLAIM["zhu-sft-hurts"], units, recs)
    assert f.verdict == MIXED
    assert {c.verdict for c in f.cells} == {AGREE, DISAGREE}


# -- the joint bootstrap, Holm, p-values ----------------------------------------------------------------


def test_units_of_a_task_share_bootstrap_draws():
    units, recs = sft_study(1.0, 1.0, seed=6)
    recs["sft/t1"] = recs["base/t1"].sample(frac=1.0, random_state=0)   # same records, another row order
    src = RecordSource(recs.__getitem__, seed=0)
    same = src.delta_values(units[0], units[1], "m1", "ece")
    assert same.estimate == 0 and np.all(same.replicates == 0) and same.replicates.size == MIN_RESAMPLES
    other = src.delta_values(units[2], units[3], "m1", "ece")
    assert np.std(other.replicates) > 0
    # two tasks are resampled independently, two methods of one task on the same draws
    a1, a2 = src.unit_values(units[0], "m1", "accuracy")[1], src.unit_values(units[2], "m1", "accuracy")[1]
    b1 = src.unit_values(units[0], "m2", "accuracy")[1]
    assert abs(np.corrcoef(a1, a2)[0, 1]) < 0.15
    assert np.corrcoef(a1, b1)[0, 1] > 0.05 or np.array_equal(recs["base/t1"]["correct"].to_numpy()[:150],
                                                               recs["base/t1"]["correct"].to_numpy()[150:])


def test_holm_and_two_sided_p():
    assert np.allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    assert np.allclose(holm([0.5, float("nan"), 0.01]), [0.5, float("nan"), 0.02], equal_nan=True)
    assert two_sided_p(np.full(999, 0.1)) == pytest.approx(2 / 1000)
    assert two_sided_p(np.zeros(10)) == 1.0


def test_holm_runs_across_the_claims_of_a_report():
    units, recs = sft_study(1.0, 2.0, seed=7)
    findings = evaluate_claims(units, RecordSource(recs.__getitem__), CLAIMS)
    tested = [f for f in findings if f.cells]
    assert {f.claim.id for f in tested} == {"zhu-sft-hurts", "oh-ece-harmless"}
    p = [f.p_value for f in tested]
    assert [f.p_adjusted for f in tested] == pytest.approx(list(holm(p)))
    for f in findings:
        if not f.cells:
            assert f.verdict == NOT_TESTED and f.reason


def test_delta_function_source_is_conservative():
    src = DeltaSource(lambda a, b, m, metric: (0.05, 0.01, 0.09, 0.01, 100))
    v = src.delta_values(None, None, "m", "ece")
    lo, hi = np.quantile(v.replicates, [0.025, 0.975])
    assert lo == pytest.approx(0.01, abs=0.006) and hi == pytest.approx(0.09, abs=0.006)
    assert src.delta_values(None, None, "m", "ece").replicates is not v.replicates


# -- validity, dynamics, comparisons ----------------------------------------------------------------------


def test_validity_binomial_against_chance_and_degenerate_confidences():
    rng = np.random.default_rng(0)
    n = 200
    probs = [[0.25, 0.25, 0.25, 0.25]] * n
    at_chance = pd.DataFrame({"probs": probs, "confidence": rng.uniform(0.3, 0.9, n), "correct": rng.random(n) < 0.25})
    assert chance_rate(at_chance) == pytest.approx(0.25)
    v = check_validity(at_chance)
    assert not v.valid and "not above chance" in v.reason
    good = at_chance.assign(correct=rng.random(n) < 0.6)
    assert check_validity(good).valid
    degenerate = good.assign(confidence=np.where(rng.random(n) < 0.95, 0.999, 0.5))
    assert "confidences at 0 or 1" in check_validity(degenerate).reason
    constant = good.assign(confidence=0.7)
    assert "every confidence is 0.7" in check_validity(constant).reason
    # open answers: chance is always guessing the most common gold token
    golds = pd.DataFrame({"confidence": rng.uniform(0.2, 0.8, 100), "correct": [True] * 40 + [False] * 60,
                          "extra": ['{"gold_id": 7}'] * 50 + ['{"gold_id": 8}'] * 50})
    assert chance_rate(golds) == 0.5 and not check_validity(golds).valid


def test_invalid_cells_are_left_out_and_counted():
    units, recs = sft_study(1.0, 3.0, seed=8)
    for key in ("base/t2", "sft/t2"):
        recs[key] = recs[key].assign(correct=False)          # no correct answer: not measuring anything
    f = verdict(CLAIM["zhu-sft-hurts"], units, recs)
    assert len(f.cells) == 2 and f.n_invalid == 2 and all("no correct answer" in r for r in f.invalid)
    for key in ("base/t1", "sft/t1"):
        recs[key] = recs[key].assign(correct=False)
    f = verdict(CLAIM["zhu-sft-hurts"], units, recs)
    assert f.verdict == NOT_TESTED and f.n_invalid == 4 and "failed validity" in f.reason


def test_dynamics_starts_at_the_first_checkpoint_above_chance():
    rng = np.random.default_rng(11)
    u = difficulty("t1", 200, 11)
    units, recs = [], {}
    for step, acc_shift, sharp in ((0, -1.0, 1.0), (16, -1.0, 1.0), (64, 0.0, 4.0), (256, 0.0, 1.0)):
        x = unit(f"pt/step{step}", "pt", "t1", "pretrained", step=step, epoch=0)
        units.append(x)
        recs[x.key] = model_records(u, sharpness=sharp, rng=rng, shift=acc_shift)   # shift -1: never right
    f = verdict(CLAIM["zhu-dynamics"], units, recs)
    assert {c.pair.a.revision for c in f.cells} == {"step64"} and {c.pair.b.revision for c in f.cells} == {"step256"}
    assert f.verdict == AGREE and f.effect < 0


def test_final_revision_follows_the_stage_progress_not_the_listing():
    listed = [unit(f"k{s}", "pt", "t", "pretrained", step=s, epoch=0) for s in (300, 16, 64)]
    assert final_revisions(listed)[("pt", "t")].labels["step"] == 300
    sft = [unit(f"e{e}", "sft", "t", "sft", epoch=e, base="pt") for e in (3, 1, 2)]
    assert final_revisions(sft)[("sft", "t")].labels["epoch"] == 3


def test_aligned_models_are_compared_with_the_pretrained_base():
    units = [unit("pt", "pt", "t", "pretrained", epoch=0), unit("sft", "sft", "t", "sft", base="pt", epoch=2),
             EvalUnit("rl", "rl", "final", "t", {"stage": "rl", "base": "sft"}, METHODS),
             EvalUnit("dpo", "dpo", "final", "t", {"stage": "dpo", "base": "sft"}, METHODS)]
    pairs = {p.b.model: p.a.model for p in cmp_aligned_vs_base(units)}
    assert pairs == {"sft": "pt", "rl": "pt", "dpo": "pt"}


def test_lora_claim_compares_distances_from_the_base():
    rng = np.random.default_rng(12)
    units, recs = [], {}
    for task in TASKS:
        u = difficulty(task, 300, 12)
        for model, stage, tuning, sharp in (("pt", "pretrained", None, 1.0), ("full", "sft", "full", 3.0),
                                            ("lora", "sft", "lora", 1.1)):
            x = unit(f"{model}/{task}", model, task, stage, epoch=1 if stage == "sft" else 0,
                     base="pt" if stage == "sft" else None, tuning=tuning, data="diverse")
            units.append(x)
            recs[x.key] = model_records(u, sharpness=sharp, rng=rng)
    f = verdict(CLAIM["zhu-lora"], units, recs)
    assert f.verdict == AGREE and all(c.pair.ref.model == "pt" for c in f.cells)
    # full fine-tuning that moves ECE DOWN by as much still counts as moving it (the old test said no)
    for task in TASKS:
        recs[f"pt/{task}"] = model_records(difficulty(task, 300, 12), sharpness=3.0, rng=rng)
        recs[f"full/{task}"] = model_records(difficulty(task, 300, 12), sharpness=1.0, rng=rng)
        recs[f"lora/{task}"] = model_records(difficulty(task, 300, 12), sharpness=2.9, rng=rng)
    assert verdict(CLAIM["zhu-lora"], units, recs).verdict == AGREE


def test_validity_catches_a_collapsed_letter_reader():
    """A model that answers "B" to everything scores the share of gold B, and reads almost no mass on
    the letters: both gates say it measures nothing."""
    n = 40
    labels = [1] * 17 + [0, 2, 3] * 7 + [0, 2]
    frame = pd.DataFrame({"method": "choice", "probs": [[0.2, 0.4, 0.2, 0.2]] * n, "label": labels,
                          "confidence": 0.4, "correct": [x == 1 for x in labels],
                          "extra": ['{"letter_mass": 0.03}'] * n})
    assert chance_rate(frame) == pytest.approx(17 / 40)
    v = check_validity(frame.assign(confidence=np.linspace(0.3, 0.5, n)))
    assert not v.valid and "not above chance" in v.reason and "mass on the read tokens 0.03" in v.reason


def test_clm_tokens_are_resampled_by_document():
    """Tokens of one document move together: a model right on whole documents has a wide interval."""
    rng = np.random.default_rng(13)
    docs = np.repeat(np.arange(20), 50)
    good_doc = rng.random(20) < 0.5
    ids = [f"clm-{d:04d}:{p}" for d, p in zip(docs, np.tile(np.arange(50), 20), strict=True)]
    rec = pd.DataFrame({"item_id": ids, "method": "token", "confidence": 0.7, "correct": good_doc[docs],
                        "extra": ['{"target": 1}'] * 1000})
    a = unit("a", "a", "clm", "pretrained", epoch=0)
    b = unit("b", "b", "clm", "sft", base="a", epoch=1)
    src = RecordSource({"a": rec, "b": rec.assign(confidence=0.5)}.__getitem__)
    reps = src.unit_values(a, "token", "accuracy")[1]
    # 20 documents: sd of the accuracy is about sqrt(.25 / 20) = 0.11, not sqrt(.25 / 1000) = 0.016
    assert 0.07 < np.std(reps) < 0.16
    d = src.delta_values(a, b, "token", "accuracy")
    assert np.all(d.replicates == 0)      # the same documents drawn for both units
