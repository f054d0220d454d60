"""summarize(): every applicable metric per (task, method), with bootstrap CIs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from calibench.errors import CalibenchError
from calibench.metrics import METRICS, ace, aurc, ece, metric_function, nll, sce, summarize
from calibench.records import make_records

TOP_NAMES = ["accuracy", "ece", "ace", "mce", "rmsce", "dce", "ece_sweep", "brier_top", "auroc", "aurc",
             "smooth_ece"]
ALL_NAMES = [
    "accuracy",
    "ece",
    "ace",
    "mce",
    "rmsce",
    "dce",
    "ece_sweep",
    "sce",
    "brier",
    "brier_top",
    "nll",
    "auroc",
    "aurc",
    "smooth_ece",
]


@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):  # multiple choice with probs over 3 options
        p = rng.dirichlet([2.0, 1.0, 1.0])
        label = int(rng.choice(3, p=p))
        pred = int(np.argmax(p))
        rows.append(
            {
                "task": "mc",
                "method": "choice",
                "item_id": f"q{i}",
                "probs": p.tolist(),
                "label": label,
                "pred": str(pred),
                "confidence": float(p[pred]),
                "correct": pred == label,
            }
        )
    for i in range(40):  # open answers: no probs
        c = float(rng.random())
        rows.append(
            {
                "task": "facts",
                "method": "first-token",
                "item_id": f"f{i}",
                "confidence": c,
                "correct": bool(rng.random() < c),
            }
        )
    return make_records(rows)


def test_registry_lists_every_metric_with_its_input_kind() -> None:
    assert list(METRICS) == ALL_NAMES
    kinds = {name: spec.kind for name, spec in METRICS.items()}
    assert kinds["accuracy"] == "correct"
    assert {n for n, k in kinds.items() if k == "probs"} == {"sce", "brier", "nll"}
    assert all(callable(spec.function) for spec in METRICS.values())


def test_summarize_rows_and_columns(records: pd.DataFrame) -> None:
    out = summarize(records, n_resamples=0)
    assert list(out.columns) == ["task", "method", "metric", "estimate", "low", "high", "n"]
    mc = out[(out.task == "mc") & (out.method == "choice")]
    facts = out[(out.task == "facts") & (out.method == "first-token")]
    assert mc["metric"].tolist() == ALL_NAMES
    assert facts["metric"].tolist() == TOP_NAMES  # no probs: no sce/brier/nll
    assert set(mc["n"]) == {60} and set(facts["n"]) == {40}
    assert len(out) == len(ALL_NAMES) + len(TOP_NAMES)


def test_summarize_estimates_equal_the_functions(records: pd.DataFrame) -> None:
    out = summarize(records, n_resamples=0, n_bins=8).set_index(["task", "metric"])["estimate"]
    mc = records[records.task == "mc"]
    p = np.asarray(list(mc["probs"]))
    labels = mc["label"].to_numpy(dtype=int)
    assert out[("mc", "ece")] == pytest.approx(ece(mc.confidence, mc.correct, n_bins=8))
    assert out[("mc", "ace")] == pytest.approx(ace(mc.confidence, mc.correct, n_bins=8))
    assert out[("mc", "sce")] == pytest.approx(sce(p, labels, n_bins=8))
    assert out[("mc", "nll")] == pytest.approx(nll(p, labels))
    assert out[("mc", "accuracy")] == pytest.approx(mc.correct.mean())
    facts = records[records.task == "facts"]
    assert out[("facts", "aurc")] == pytest.approx(aurc(facts.confidence, facts.correct))


def test_summarize_intervals_are_seeded_and_sane(records: pd.DataFrame) -> None:
    small = records[records.task == "facts"]  # fewer groups: the per-resample metrics dominate the time
    a = summarize(small, n_resamples=40, seed=3)
    pd.testing.assert_frame_equal(a, summarize(small, n_resamples=40, seed=3))
    c = summarize(small, n_resamples=40, seed=4)
    assert not np.allclose(a["low"], c["low"])
    assert a[["low", "high"]].notna().all().all()
    assert (a["high"] > a["low"]).all()
    # accuracy is a plain mean: its percentile interval must bracket it. (Binned errors are biased
    # upward under resampling, so their interval need not contain the estimate.)
    acc = a.set_index("metric").loc["accuracy"]
    assert acc["low"] < acc["estimate"] < acc["high"]
    narrow = summarize(small, n_resamples=40, seed=3, level=0.5)
    assert ((narrow["high"] - narrow["low"]).to_numpy() <= (a["high"] - a["low"]).to_numpy() + 1e-12).all()


def test_summarize_binning_option(records: pd.DataFrame) -> None:
    width = summarize(records, n_resamples=0).set_index(["task", "metric"])["estimate"]
    mass = summarize(records, n_resamples=0, binning="mass").set_index(["task", "metric"])["estimate"]
    assert mass[("mc", "ece")] == pytest.approx(mass[("mc", "ace")])  # ece now uses equal-mass bins
    assert width[("mc", "ece")] != pytest.approx(mass[("mc", "ece")])
    assert width[("mc", "sce")] == mass[("mc", "sce")]  # sce is always equal-width


def test_summarize_without_bootstrap_and_undefined_metric() -> None:
    df = make_records([{"confidence": c, "correct": True} for c in (0.6, 0.7, 0.9)])
    out = summarize(df, n_resamples=0).set_index("metric")
    assert out["low"].isna().all() and out["high"].isna().all()
    assert math.isnan(out.loc["auroc", "estimate"])  # all correct: AUROC undefined
    assert out.loc["accuracy", "estimate"] == 1.0
    assert out.loc["ece", "estimate"] == pytest.approx((0.4 + 0.3 + 0.1) / 3)


def test_summarize_accepts_raw_frames_and_rejects_bad_options(records: pd.DataFrame) -> None:
    raw = pd.DataFrame({"confidence": [0.2, 0.8, 0.6], "correct": [0, 1, 1]})
    out = summarize(raw, n_resamples=0)
    assert set(out["task"]) == {"task"} and set(out["method"]) == {"method"}  # contract defaults
    with pytest.raises(CalibenchError, match="n_bins must be a positive integer"):
        summarize(records, n_bins=0)
    with pytest.raises(CalibenchError, match="binning must be"):
        summarize(records, binning="quantile")
    with pytest.raises(CalibenchError, match="n_resamples must be a non-negative integer"):
        summarize(records, n_resamples=-1)
    with pytest.raises(CalibenchError, match="level must be in"):
        summarize(records, level=95)
    with pytest.raises(CalibenchError, match=r"confidence must be a finite number in \[0, 1\]"):
        summarize(pd.DataFrame({"confidence": [0.2, 1.5], "correct": [0, 1]}))


def test_metric_function_binds_only_accepted_options() -> None:
    c, y = [0.1, 0.4, 0.45, 0.9], [0, 1, 0, 1]
    assert metric_function("ece", n_bins=3, binning="mass")(c, y) == ece(c, y, n_bins=3, binning="mass")
    assert metric_function("ace", n_bins=3, binning="width")(c, y) == ace(c, y, n_bins=3)
    assert metric_function("aurc", n_bins=3)(c, y) == aurc(c, y)
    with pytest.raises(CalibenchError, match="unknown metric 'ecee'"):
        metric_function("ecee")


def test_class_wise_metrics_need_probs_on_every_row() -> None:
    rows = [
        {"confidence": 0.7, "correct": True, "probs": [0.7, 0.3], "label": 0},
        {"confidence": 0.6, "correct": False, "probs": [0.4, 0.6], "label": 0},
        {"confidence": 0.8, "correct": True},  # open answer: no probs
    ]
    out = summarize(make_records(rows), n_resamples=0)
    assert not {"sce", "brier", "nll"} & set(out["metric"])
    out = summarize(make_records(rows[:2]), n_resamples=0).set_index("metric")
    assert out.loc["brier", "estimate"] == pytest.approx((0.09 + 0.09 + 0.36 + 0.36) / 2)
