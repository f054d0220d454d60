"""One set of validity rules: ``calibench eval``'s warning and the study's claim gate read the same
records the same way, on a record set with one cell failing by each rule (and one valid cell)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from calibench.records import make_records
from calibench.study.claims import RecordSource, chance_rate, check_validity
from calibench.study.findings import EvalUnit
from calibench.validity import ALPHA, MAX_DEGENERATE, MAX_UNPARSED, MIN_MASS, assess, validity_table, warnings

N = 40
SPREAD = np.linspace(0.3, 0.8, N)
# gold option per item: 16 of 40 are B (40% > 1/4), the rest A, C, D in turn
LABELS = [1] * 16 + [0, 2, 3] * 8


def _row(task, method, i, conf, correct, **kw):
    return {"task": task, "method": method, "item_id": f"{task}{i:02d}", "confidence": float(conf),
            "correct": bool(correct), "pred": "x", **kw}


def _records() -> pd.DataFrame:
    rows = []
    for i in range(N):
        gold = LABELS[i]
        rest = (1 - SPREAD[i]) / 3
        probs = [rest, SPREAD[i], rest, rest]  # B on top, with confidence max(probs) as the contract asks
        # always answers B: right exactly on gold B (40%), above 1/4 but not above the gold-B share
        rows.append(_row("mc", "choice", i, SPREAD[i], gold == 1, probs=probs, label=gold,
                         extra={"letter_mass": 0.7}))
        rows.append(_row("mc", "probe", i, SPREAD[i], i % 4 == 0, extra={"n_options": 4}))           # 1/4: chance
        rows.append(_row("mc", "p-true", i, SPREAD[i], i % 10 != 0, extra={"p_true": 0.05, "p_false": 0.05}))
        rows.append(_row("mc", "consistency", i, 1.0 if i % 20 else 0.5, i % 10 != 0))              # 95% at 1
        rows.append(_row("mc", "semantic", i, 0.6, i % 10 != 0))                                    # one value
        rows.append(_row("mc", "sequence", i, SPREAD[i], i % 10 != 0))                              # valid
        # open answers: gold token 7 on half the items, the model right on 45%
        rows.append(_row("facts", "first-token", i, SPREAD[i], i % 20 < 9, extra={"gold_id": 7 if i < 20 else i}))
        rows.append(_row("facts", "verbalized", i, SPREAD[i], i % 2 == 0,
                         extra={"n_items": 100, "n_unparsed": 60, "unparsed": {"no confidence": 60}}))
        rows.append(_row("facts", "sequence", i, SPREAD[i], False))                                 # never right
        # CLM tokens: target 5 is half the corpus; right on half the tokens
        row = _row("corpus", "token", i, SPREAD[i], i % 2 == 0, extra={"target": 5 if i % 2 else i})
        rows.append({**row, "item_id": f"d{i // 10}:{i % 10}"})
    return make_records(rows)


EXPECTED = {  # (task, method) -> the one rule it fails, as its reason begins
    ("mc", "choice"): "accuracy 0.40 not above chance 0.40 of always giving the most common gold",
    ("mc", "probe"): "accuracy 0.25 not above chance 0.25 (binomial",
    ("mc", "p-true"): f"mean mass on the read tokens 0.10 < {MIN_MASS}",
    ("mc", "consistency"): "95% of confidences at 0 or 1",
    ("mc", "semantic"): "every confidence is 0.6",
    ("facts", "first-token"): "accuracy 0.45 not above chance 0.50 of always giving the most common gold",
    ("facts", "verbalized"): "60% of answers state no parseable confidence",
    ("facts", "sequence"): "no correct answer",
    ("corpus", "token"): "accuracy 0.50 not above chance 0.50 of always giving the most common gold",
}


def test_eval_warning_and_claim_gate_agree_rule_by_rule() -> None:
    records = _records()
    table = validity_table(records)
    lines = warnings(table)
    assert len(table) == 10 and len(lines) == len(EXPECTED)
    for (task, method), start in EXPECTED.items():
        (line,) = [ln for ln in lines if ln.startswith(f"not valid: {task} · {method}: ")]
        assert line.split(": ", 2)[2].startswith(start) and "; " not in line   # fails by that rule alone
    row = table.set_index(["task", "method"]).loc[("mc", "sequence")]
    assert row["valid"] and row["reason"] == ""

    # the study: one unit per task (one model), gated per method by claims.check_validity
    units = {t: EvalUnit(f"m/{t}", "m", "final", t, {"stage": "pretrained"}, ()) for t in ("mc", "facts", "corpus")}
    src = RecordSource(lambda key: records[records["task"] == key.split("/")[1]])
    for r in table.to_dict("records"):
        v = src.validity(units[r["task"]], r["method"])
        assert v.valid == r["valid"] and v.reason == r["reason"]
        assert v.accuracy == pytest.approx(r["accuracy"])
        assert (not r["valid"]) == (f"not valid: {r['task']} · {r['method']}: {v.reason}" in lines)


def test_chance_is_the_larger_of_one_over_k_and_the_most_common_gold() -> None:
    records = _records()
    mc = records[records["task"] == "mc"]
    choice = mc[mc["method"] == "choice"]
    assert chance_rate(choice) == pytest.approx(16 / 40)
    # a method whose records carry no options reads them from the task's other records
    probe = mc[mc["method"] == "probe"]
    assert chance_rate(probe) == pytest.approx(0.25) and chance_rate(probe, mc) == pytest.approx(16 / 40)
    a = assess(choice, mc)
    assert a.chance == pytest.approx(0.25) and a.majority == pytest.approx(0.4)
    assert a.p_value == pytest.approx(binomtest(16, 40, 0.25, alternative="greater").pvalue) and a.p_value < ALPHA
    assert a.p_value_majority == pytest.approx(binomtest(16, 40, 0.4, alternative="greater").pvalue)
    assert a.p_value_majority >= ALPHA
    assert not a.valid and a.chance_rate == pytest.approx(0.4)
    assert check_validity(choice, mc).chance == pytest.approx(0.4)
    # the same gold-B model right on 26 of 40 items beats both rates
    better = choice.assign(correct=[x == 1 or i >= 30 for i, x in enumerate(LABELS)])
    assert assess(better, mc).valid


def test_thresholds_are_the_documented_constants() -> None:
    assert (ALPHA, MIN_MASS, MAX_UNPARSED, MAX_DEGENERATE) == (0.05, 0.25, 0.5, 0.9)
    empty = _records().iloc[:0]
    assert assess(empty).reason == "no records" and not assess(empty).valid
