"""Preference data split, held-out training signals and the RL manipulation check (issue 10)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibench.train.formats import load_preference_data, pair_group, split_preferences
from calibench.train.signals import (
    MANIPULATION,
    NOT_CHANGED,
    ManipulationRule,
    manipulation_verdict,
)
from calibench.world import WorldConfig, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prefworld") / "world"
    build_world(out, WorldConfig(seed=0, people=40), n_instructions=8, n_preferences=200)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, world) -> dict[str, Path]:
    """A lab-20k model (a few pretraining steps) and a reward model started from it (one epoch)."""
    from calibench.train.preference import PrefSettings, run_reward
    from calibench.train.pretrain import PretrainConfig, pretrain_family

    root = tmp_path_factory.mktemp("preftiny")
    pretrain_family(world, root / "pt", ["lab-20k"], PretrainConfig(steps=6, batch_size=4, first_checkpoint=4,
                                                                    warmup=2),
                    vocab_size=320, eval_items=8, progress=False)
    rows = load_preference_data("world", world)[:40]
    run_reward(root / "pt" / "lab-20k", rows, root / "rm", PrefSettings(batch_size=8, progress=False))
    return {"base": root / "pt" / "lab-20k", "rm": root / "rm"}


def test_split_keeps_each_fact_on_one_side_and_is_seeded(world):
    rows = load_preference_data("world", world)
    train, held = split_preferences(rows, 0.25, seed=0)
    assert len(train) + len(held) == len(rows)
    g_train, g_held = {pair_group(r) for r in train}, {pair_group(r) for r in held}
    assert not g_train & g_held
    assert all(g.startswith("fact:") for g in g_train | g_held)
    assert abs(len(g_held) / len(g_train | g_held) - 0.25) < 0.01
    assert split_preferences(list(reversed(rows)), 0.25, seed=0)[1] == list(reversed(held))
    assert {pair_group(r) for r in split_preferences(rows, 0.25, seed=1)[1]} != g_held


def test_split_without_facts_groups_by_prompt():
    rows = [{"prompt": f"p{i % 5}", "chosen": " a", "rejected": " b"} for i in range(20)]
    train, held = split_preferences(rows, 0.4, seed=0)
    assert len({r["prompt"] for r in held}) == 2 and len(held) == 8
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}
    with pytest.raises(Exception, match="held-out fraction"):
        split_preferences(rows, 1.0)


def test_world_pairs_say_how_the_rejected_answer_is_wrong(world):
    from calibench.world.build import load_world
    from calibench.world.derived import PAIR_KINDS

    w = load_world(world)
    person = {p.name: p for p in w.train_people}
    rows = load_preference_data("world", world)
    kinds = {r["kind"] for r in rows}
    assert kinds == set(PAIR_KINDS)
    for r in rows:
        p = person[r["subject"]]
        assert r["chosen"].endswith(p.value(r["relation"]) + ".")
        assert r["chosen"] != r["rejected"]
        if r["kind"] == "truncated":
            assert r["chosen"].startswith(r["rejected"]) and len(r["rejected"]) < len(r["chosen"])
        elif r["kind"] == "ramble":
            assert r["rejected"].startswith(r["chosen"] + " ")
        else:  # value / type: same sentence, another value
            prefix = r["chosen"][: r["chosen"].index(p.value(r["relation"]))]
            assert r["rejected"].startswith(prefix) and p.value(r["relation"]) not in r["rejected"][len(prefix):]


def test_manipulation_verdict_needs_both_reward_gain_and_kl():
    rng = np.random.default_rng(0)
    up = 0.5 + 0.1 * rng.standard_normal(48)          # gains clearly above 0
    flat = 0.1 * rng.standard_normal(48) - 0.01       # gains around 0
    ok = manipulation_verdict(up, np.full(192, MANIPULATION.kl_min + 0.2))
    assert ok["passed"] and ok["not_testable"] is None and ok["reward_gain_low"] > 0
    low_kl = manipulation_verdict(up, np.full(192, MANIPULATION.kl_min / 2))
    assert not low_kl["passed"] and low_kl["not_testable"].startswith(NOT_CHANGED) and "KL" in low_kl["not_testable"]
    no_gain = manipulation_verdict(flat, np.full(192, 5.0))
    assert not no_gain["passed"] and "reward gain" in no_gain["not_testable"] and no_gain["reward_gain_low"] < 0
    strict = manipulation_verdict(up, np.full(192, 1.0), ManipulationRule(kl_min=2.0))
    assert not strict["passed"]


def test_reward_scores_read_at_the_eos_the_trainer_appends(tiny):
    from calibench.train.sft import load_base
    from calibench.train.signals import reward_scores

    rm, tok = load_base(tiny["rm"], kind="scorer")
    rm.eval()
    text = "User: Where was Vora Lin born?\nAssistant: Vora Lin was born in Kelmar."
    with_eos, without = reward_scores(rm, tok, [text + tok.eos_token, text])
    assert with_eos == pytest.approx(without)
    # padding next to a longer text does not move the score
    assert reward_scores(rm, tok, [text, text + " And more words follow here."])[0] == pytest.approx(without, abs=1e-5)


def test_an_unchanged_policy_fails_the_manipulation_check(tiny, world):
    from calibench.train.sft import load_base
    from calibench.train.signals import manipulation_check

    policy, tok = load_base(tiny["base"])
    rm, rm_tok = load_base(tiny["rm"], kind="scorer")
    prompts = [r["prompt"] for r in load_preference_data("world", world)[:12]]
    check = manipulation_check(policy, policy, tok, rm, rm_tok, prompts, max_new_tokens=6, seed=0)
    assert check["kl"] == pytest.approx(0.0, abs=1e-5)
    assert check["reward_gain"] == pytest.approx(0.0, abs=1e-5)   # same seed, same samples
    assert check["greedy_changed"] == 0.0
    assert not check["passed"] and check["not_testable"].startswith(NOT_CHANGED)


def test_dpo_signal_of_the_reference_itself_is_a_tie(tiny, world):
    from calibench.train.sft import load_base
    from calibench.train.signals import dpo_signal

    model, tok = load_base(tiny["base"])
    rows = load_preference_data("world", world)[:10]
    s = dpo_signal(model, model, tok, rows, beta=0.1)
    assert s["margin"] == pytest.approx(0.0, abs=1e-6) and s["accuracy"] == 0.5 and s["n"] == 10


def test_stages_write_their_held_out_signal(tiny, world, tmp_path):
    from calibench.train.preference import PrefSettings, run_dpo, run_rl

    rows = load_preference_data("world", world)[:40]
    reward = json.loads((tiny["rm"] / "training_signal.json").read_text())
    assert reward["stage"] == "reward" and reward["held_out"]["n"] + reward["train"]["n"] == 40
    assert 0 <= reward["held_out"]["low"] <= reward["held_out"]["accuracy"] <= reward["held_out"]["high"] <= 1

    r = run_rl(tiny["base"], tiny["rm"], rows, tmp_path / "rl", PrefSettings(steps=1, batch_size=4, num_generations=2,
               max_completion_length=4, progress=False))
    check = json.loads((tmp_path / "rl" / "training_signal.json").read_text())
    assert check == json.loads(json.dumps(r["signal"]))
    assert check["rule"]["kl_min"] == MANIPULATION.kl_min
    assert check["prompts"] == len({x["prompt"] for x in split_preferences(rows, 0.25, 0)[1]})
    assert check["passed"] == (check["not_testable"] is None)

    run_dpo(tiny["base"], rows, tmp_path / "dpo", PrefSettings(batch_size=8, default_lr=1e-3, progress=False))
    dpo = json.loads((tmp_path / "dpo" / "training_signal.json").read_text())
    assert dpo["stage"] == "dpo" and dpo["held_out"]["n"] == reward["held_out"]["n"]
    assert dpo["held_out"]["margin_low"] <= dpo["held_out"]["margin"] <= dpo["held_out"]["margin_high"]


def test_a_model_marked_not_testable_leaves_its_cells_out():
    from calibench.study.findings import CLAIMS, NOT_TESTED, EvalUnit, evaluate_claims

    methods = ("m",)
    base = EvalUnit("pt", "pt", "step10", "t", {"stage": "pretrained", "step": 10}, methods)
    sft = EvalUnit("sft", "sft", "epoch1", "t", {"stage": "sft", "base": "pt", "epoch": 1}, methods)
    rl = EvalUnit("rl", "rl", "final", "t", {"stage": "rl", "base": "sft",
                                              "not_testable": f"{NOT_CHANGED} (KL 0.01 < 0.5)"}, methods)
    claims = tuple(c for c in CLAIMS if c.id in ("zhu-rlhf", "oh-ece-harmless"))
    out = {f.claim.id: f for f in evaluate_claims([base, sft, rl], lambda a, b, m, k: (0.0, -0.01, 0.01, 1.0, 50),
                                                  claims)}
    rlhf = out["zhu-rlhf"]
    assert rlhf.verdict == NOT_TESTED and rlhf.reason == f"not testable: {NOT_CHANGED} (KL 0.01 < 0.5)"
    harmless = out["oh-ece-harmless"]   # the SFT cell stays, the RL cell is left out with the reason
    assert [c.pair.b.model for c in harmless.cells] == ["sft"]
    assert any("rl@final: not testable" in why for why in harmless.invalid)


def test_study_data_marks_every_eval_unit_of_an_untestable_train_unit(tmp_path):
    from calibench.records import make_records
    from calibench.study.results import load_study_data
    from calibench.study.store import Store

    reason = f"{NOT_CHANGED} (KL 0.010 nats per completion < 0.5)"
    records = make_records([{"item_id": "a", "confidence": 0.5, "correct": True}])
    with Store.open(tmp_path) as store:
        for key, manifest in (("t-rl", {"checkpoints": {}, "not_testable": reason}), ("t-dpo", {"checkpoints": {}})):
            staged = store.staging_dir(key)
            store.mark_started(key, "train", {"kind": "train"})
            store.finish_train(key, {"kind": "train"}, staged, manifest)
        for key, train_key in (("e-rl", "t-rl"), ("e-dpo", "t-dpo"), ("e-hub", None)):
            spec = {"kind": "eval", "model": key, "task": "t", "train_key": train_key, "methods": ["m"],
                    "labels": {"stage": "rl"}}
            store.mark_started(key, "eval", spec)
            store.finish_eval(key, spec, records, [])
    data = load_study_data(tmp_path)
    try:
        labels = {u.key: u.labels.get("not_testable") for u in data.units}
    finally:
        data.store.close()
    assert labels == {"e-rl": reason, "e-dpo": None, "e-hub": None}


def test_reward_model_is_deterministic_given_the_seed(tiny, world, tmp_path):
    from calibench.train.preference import PrefSettings, run_reward

    rows = load_preference_data("world", world)[:40]
    again = run_reward(tiny["base"], rows, tmp_path / "rm", PrefSettings(batch_size=8, progress=False))["signal"]
    first = json.loads((tiny["rm"] / "training_signal.json").read_text())
    assert again["held_out"] == first["held_out"] and again["train"] == first["train"]


def test_study_adapters_put_the_signal_in_the_manifest(tiny, world, tmp_path):
    from calibench.study.lab import train_dpo, train_rl

    common = {"world": str(world), "base": str(tiny["base"]), "batch_size": 4, "eval_items": 4}
    rl = train_rl({"name": "rl", "seed": 0, "device": "cpu",
                   "options": {**common, "reward_model": str(tiny["rm"]), "steps": 1, "num_generations": 2,
                               "max_completion_length": 4}}, tmp_path / "rl")
    signal = json.loads((tmp_path / "rl" / "training_signal.json").read_text())
    assert rl["training_signal"] == signal and rl["checkpoints"] == {"final": "."}
    assert rl.get("not_testable") == signal["not_testable"]   # present exactly when the check failed
    dpo = train_dpo({"name": "dpo", "seed": 0, "device": "cpu", "options": {**common, "epochs": 1}}, tmp_path / "dpo")
    assert dpo["training_signal"]["stage"] == "dpo" and "not_testable" not in dpo
