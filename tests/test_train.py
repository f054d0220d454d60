"""Lifecycle-lab training stages at test size: each runs in seconds and writes loadable checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calibench.errors import CalibenchError
from calibench.train.config import LAB_SIZES, checkpoint_steps, count_parameters, get_size
from calibench.train.formats import (
    load_alpaca,
    load_hh_rlhf,
    load_instruction_data,
    load_oasst,
    load_preference_data,
    parse_hh_dialogue,
)
from calibench.world import WorldConfig, build_world

FIXTURES = Path(__file__).parent / "fixtures" / "lab"
EVAL = 16  # facts and MC items scored per checkpoint in tests


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict[str, Path]:
    """A tiny world and a lab-20k model pretrained for 20 steps (checkpoints 0, 8, 16, 20)."""
    from calibench.train.pretrain import PretrainConfig, pretrain_family

    root = tmp_path_factory.mktemp("lab")
    world = root / "world"
    build_world(world, WorldConfig(seed=0, people=30), n_instructions=32, n_preferences=16)
    cfg = PretrainConfig(steps=20, batch_size=4, first_checkpoint=8, warmup=4)
    pretrain_family(world, root / "pt", ["lab-20k"], cfg, vocab_size=320, eval_items=EVAL, progress=False)
    return {"root": root, "world": world, "base": root / "pt" / "lab-20k"}


def _forward_ok(folder: Path, kind: str = "causal") -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    cls = AutoModelForCausalLM if kind == "causal" else AutoModelForSequenceClassification
    model = cls.from_pretrained(folder)
    ids = tok("Where was someone born?", return_tensors="pt")
    with torch.no_grad():
        out = model(**ids).logits
    assert torch.isfinite(out).all()
    assert out.shape[-1] == (len(tok) if kind == "causal" else 1)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def _changed(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return any(not (wa[k] == wb[k]).all() for k in wa if k in wb)


# ------------------------------------------------------------------ sizes and schedule

def test_parameter_formula_matches_transformers_and_names():
    from transformers import GPTNeoXForCausalLM

    from calibench.threads import torch_threads

    with torch_threads(1):
        for size in LAB_SIZES.values():
            model = GPTNeoXForCausalLM(size.config(512))
            assert count_parameters(size, 512) == sum(p.numel() for p in model.parameters())
    for name in ("lab-70k", "lab-300k", "lab-1m"):
        n = count_parameters(get_size(name), 512)
        want = {"k": 1e3, "m": 1e6}[name[-1]] * float(name[4:-1])
        assert 0.85 * want < n < 1.15 * want, (name, n)
    # Pythia shapes with the Pythia vocabulary give the published sizes
    assert count_parameters(get_size("pythia-70m"), 50304) == pytest.approx(70.4e6, rel=0.01)
    assert count_parameters(get_size("pythia-1.4b"), 50304) == pytest.approx(1.41e9, rel=0.01)
    with pytest.raises(CalibenchError, match="unknown model size"):
        get_size("lab-9z")


def test_checkpoint_steps_are_log_spaced():
    assert checkpoint_steps(300) == [0, 16, 32, 64, 128, 256, 300]
    assert checkpoint_steps(16) == [0, 16]
    assert checkpoint_steps(5, first=8) == [0, 5]
    with pytest.raises(CalibenchError):
        checkpoint_steps(0)


@pytest.mark.parametrize("preset", ["default", "quick"])
def test_lifecycle_presets_score_every_item_on_a_scale_axis(preset):
    """All items of every lab task, >= 1000 resamples, >= 3 sizes spanning >= 10x parameters, one
    pretraining unit per size (so two workers can train sizes side by side)."""
    from calibench.study.lifecycle import lifecycle_study
    from calibench.train.config import PRESETS

    study = lifecycle_study(preset)
    assert study["settings"]["limit"] is None and study["settings"]["bootstrap"] >= 1000
    assert all("limit" not in t for t in study["tasks"])
    sizes = PRESETS[preset].sizes
    params = [count_parameters(get_size(s), 800) for s in sizes]
    assert len(sizes) >= 3 and params == sorted(params) and params[-1] >= 10 * params[0]
    pretrain = [t for t in study["train"] if t["recipe"] == "pretrain"]
    assert sorted(t["options"]["sizes"][0] for t in pretrain) == sorted(sizes)
    assert pretrain[0]["options"]["sizes"] == [sizes[-1]]  # the largest (the alignment base) first
    largest = next(m for m in study["models"] if m["name"] == sizes[-1])
    assert len(largest["revisions"]) >= 3 and largest["revisions"][0].endswith("/step0")


# ------------------------------------------------------------------ pretraining

def test_pretrain_writes_pythia_style_revisions(lab):
    base = lab["base"]
    for step in (0, 8, 16, 20):
        assert (base / f"step{step}" / "model.safetensors").is_file()
        assert (base / f"step{step}" / "tokenizer.json").is_file()
    _forward_ok(base)
    _forward_ok(base / "step8")
    assert _changed(base / "step0", base / "step20")
    assert not _changed(base / "step20", base)  # top level = final checkpoint
    log = json.loads((base / "train_log.json").read_text())
    assert log["parameters"] == log["parameters_formula"]
    assert log["loss"][-1]["loss"] < log["loss"][0]["loss"]
    curve = json.loads((base / "calibration_curve.json").read_text())["points"]
    assert [p["step"] for p in curve] == [0, 8, 16, 20]
    for p in curve:
        for task in ("facts", "mc"):
            assert p[task]["n"] == EVAL and 0.0 <= p[task]["ece"] <= 1.0 and 0.0 <= p[task]["accuracy"] <= 1.0


def test_pretraining_is_deterministic_given_the_seed(lab, tmp_path):
    from calibench.train.pretrain import PretrainConfig, build_tokenizer, load_corpus, pretrain_one

    docs = load_corpus(lab["world"] / "corpus.txt")
    tok = build_tokenizer(docs, tmp_path / "tok", vocab_size=300)
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        pretrain_one("lab-20k", docs, tok, tmp_path / name, PretrainConfig(steps=3, batch_size=2, seed=seed),
                     progress=False)
        runs[name] = tmp_path / name
    assert not _changed(runs["a"], runs["b"])
    assert _changed(runs["a"], runs["c"])


def test_revisions_load_through_calibench_loader(lab):
    loading = pytest.importorskip("calibench.models.loading")
    loaded = loading.load_model(loading.parse_model_args(f"pretrained={lab['base']},revision=step8"))
    final = loading.load_model(loading.parse_model_args(f"pretrained={lab['base']}"))
    assert loaded.weights_hash != final.weights_hash


def test_calibration_probe_agrees_with_scoring_engine(lab):
    """The in-training probe and calibench's engine give the same MC probabilities."""
    import numpy as np

    engine_mod = pytest.importorskip("calibench.models.engine")
    from calibench.train.callbacks import CalibrationProbe, mc_context
    from calibench.train.sft import load_base

    model, tok = load_base(lab["base"])
    probe = CalibrationProbe.from_world(lab["world"], None, n_items=6)
    engine = engine_mod.ScoringEngine(model, tok, batch_size=4, progress=False)
    scores = engine.score_options([(mc_context(it), [" " + o for o in it["options"]]) for it in probe.mc])
    conf = []
    for item_scores in scores:
        s = np.array([sc.sum for sc in item_scores])
        p = np.exp(s - s.max())
        conf.append((p / p.sum()).max())
    got = probe.score_mc(model, tok)
    assert got["confidence"] == pytest.approx(float(np.mean(conf)), abs=1e-4)


# ------------------------------------------------------------------ alignment stages

def test_sft_full_writes_an_epoch_folder_per_epoch(lab):
    from calibench.train.sft import SFTSettings, run_sft

    out = lab["root"] / "sft-full"
    data = load_instruction_data("narrow", lab["world"])
    r = run_sft(lab["base"], data, out, SFTSettings(method="full", epochs=2, batch_size=8), world_dir=lab["world"],
                eval_items=EVAL)
    assert r["epochs"] == ["epoch1", "epoch2"]
    for folder in (out / "epoch1", out / "epoch2", out):
        _forward_ok(folder)
    assert _changed(lab["base"], out / "epoch1") and _changed(out / "epoch1", out / "epoch2")
    curve = json.loads((out / "calibration_curve.json").read_text())["points"]
    assert [p["epoch"] for p in curve] == [0, 1, 2]


def test_sft_lora_saves_merged_weights_and_a_peft_adapter(lab):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from calibench.train.sft import SFTSettings, run_sft

    out = lab["root"] / "sft-lora"
    data = load_instruction_data("diverse", lab["world"])
    r = run_sft(lab["base"], data, out, SFTSettings(method="lora", epochs=1, batch_size=8))
    base_params = json.loads((lab["base"] / "train_log.json").read_text())["parameters"]
    assert 0 < r["trainable_parameters"] < base_params
    adapter = out / "epoch1" / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    tok = AutoTokenizer.from_pretrained(lab["base"])
    ids = tok("Where was someone born?", return_tensors="pt")
    with torch.no_grad():
        peft_logits = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lab["base"]), adapter)(**ids).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(out / "epoch1")(**ids).logits
        base_logits = AutoModelForCausalLM.from_pretrained(lab["base"])(**ids).logits
    assert torch.allclose(peft_logits, merged_logits, atol=1e-4)
    assert not torch.allclose(base_logits, merged_logits, atol=1e-4)


def test_reward_rl_and_dpo_write_loadable_models(lab):
    from calibench.train.preference import PrefSettings, run_dpo, run_reward, run_rl

    rows = load_preference_data("world", lab["world"])
    rm = lab["root"] / "rm"
    r = run_reward(lab["base"], rows, rm, PrefSettings(batch_size=8))
    assert 0.0 <= r["pairwise_accuracy"] <= 1.0
    _forward_ok(rm, kind="reward")

    rl = lab["root"] / "rl"
    r = run_rl(lab["base"], rm, rows, rl, PrefSettings(steps=2, batch_size=4, num_generations=2,
               max_completion_length=6, default_lr=1e-3), world_dir=lab["world"], eval_items=EVAL)
    assert r["mean_reward_first"] is not None
    _forward_ok(rl)
    assert _changed(lab["base"], rl)
    curve = json.loads((rl / "calibration_curve.json").read_text())["points"]
    assert curve[0]["step"] == 0 and curve[-1]["step"] == 2

    dpo = lab["root"] / "dpo"
    run_dpo(lab["base"], rows, dpo, PrefSettings(batch_size=8, default_lr=1e-3))
    _forward_ok(dpo / "epoch1")
    assert _changed(lab["base"], dpo)


def test_rl_rejects_batch_not_divisible_by_generations(lab):
    from calibench.train.preference import PrefSettings, run_rl

    with pytest.raises(CalibenchError, match="multiple of num_generations"):
        run_rl(lab["base"], lab["base"], [{"prompt": "x"}], lab["root"] / "bad",
               PrefSettings(batch_size=6, num_generations=4))


def test_cli_pretrain_and_sft_errors_are_one_line(lab, tmp_path, capsys):
    from calibench.cli import main

    assert main(["train", "pretrain", "--world", str(lab["world"]), "--out", str(tmp_path), "--sizes", "lab-9z"]) == 2
    assert "unknown model size" in capsys.readouterr().err
    assert main(["train", "sft", "--base", str(lab["base"]), "--out", str(tmp_path / "s"), "--data", "diverse",
                 "--world", str(lab["world"]), "--method", "qlora"]) == 2
    assert "full or lora" in capsys.readouterr().err
    assert main(["train", "sft", "--base", str(tmp_path), "--out", str(tmp_path / "s"), "--data", "narrow",
                 "--world", str(lab["world"])]) == 2
    assert "not a model folder" in capsys.readouterr().err


def test_cli_pretrain_runs_end_to_end(lab, tmp_path):
    from calibench.cli import main

    rc = main(["train", "pretrain", "--world", str(lab["world"]), "--out", str(tmp_path), "--sizes", "lab-20k",
               "--steps", "4", "--batch-size", "2", "--vocab-size", "300", "--first-checkpoint", "2",
               "--eval-items", "4"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "lab-20k").glob("step*")) == ["step0", "step2", "step4"]


# ------------------------------------------------------------------ real-format loaders

def test_alpaca_fixture():
    rows = load_alpaca(FIXTURES / "alpaca.json")
    assert len(rows) == 3
    assert rows[0]["prompt"] == "User: Give three tips for staying healthy.\nAssistant:"
    assert "The cat sleeps on the mat." in rows[1]["prompt"]  # input follows the instruction
    assert rows[2]["completion"] == " Reptile"
    assert load_instruction_data(FIXTURES / "alpaca.json") == rows


def test_oasst_flat_messages_fixture():
    rows = load_oasst(FIXTURES / "oasst1_messages.jsonl")
    completions = [r["completion"] for r in rows]
    assert len(rows) == 3  # rank-0 reply, the unranked follow-up reply, the Spanish reply
    assert not any("spam" in c or "bread dough" in c for c in completions)  # deleted / rank 1 dropped
    follow_up = next(r for r in rows if "twice a day" in r["completion"])
    assert follow_up["prompt"].count("User:") == 2 and follow_up["prompt"].count("Assistant:") == 2
    assert follow_up["prompt"].endswith("How often should I feed it?\nAssistant:")
    assert len(load_oasst(FIXTURES / "oasst1_messages.jsonl", lang="en")) == 2
    assert len(load_oasst(FIXTURES / "oasst1_messages.jsonl", best_only=False)) == 4


def test_oasst_trees_fixture_matches_flat_form():
    rows = load_oasst(FIXTURES / "oasst1_trees.jsonl")
    assert len(rows) == 2
    assert rows[1]["prompt"].startswith("User: Can you explain what a sourdough starter is?\nAssistant: A sourdough")
    assert load_instruction_data(FIXTURES / "oasst1_trees.jsonl") == rows


def test_hh_rlhf_fixture():
    rows = load_hh_rlhf(FIXTURES / "hh_rlhf.jsonl")
    assert len(rows) == 2
    assert rows[0]["prompt"] == "User: What is a good way to keep basil fresh?\nAssistant:"
    assert rows[0]["chosen"].startswith(" Trim the stems") and rows[0]["rejected"].startswith(" Put it")
    assert rows[1]["prompt"].count("User:") == 2
    assert load_preference_data(FIXTURES / "hh_rlhf.jsonl") == rows


def test_format_loaders_reject_bad_input(tmp_path):
    bad = tmp_path / "a.json"
    bad.write_text('{"instruction": "x"}')
    with pytest.raises(CalibenchError, match="JSON list"):
        load_alpaca(bad)
    bad.write_text('[{"instruction": "x", "input": ""}]')
    with pytest.raises(CalibenchError, match="field 'output'"):
        load_alpaca(bad)
    hh = tmp_path / "hh.jsonl"
    hh.write_text(json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: z\n\nAssistant: c"}) + "\n")
    with pytest.raises(CalibenchError, match=r"hh.jsonl:1: chosen and rejected differ"):
        load_hh_rlhf(hh)
    hh.write_text(json.dumps({"chosen": "\n\nHuman: a", "rejected": "\n\nHuman: a"}) + "\n")
    with pytest.raises(CalibenchError, match="end with an Assistant turn"):
        load_hh_rlhf(hh)
    hh.write_text(json.dumps({"chosen": 3, "rejected": "x"}) + "\n")
    with pytest.raises(CalibenchError, match="field 'chosen'"):
        load_hh_rlhf(hh)
    with pytest.raises(CalibenchError, match="must start with"):
        parse_hh_dialogue("hello\n\nAssistant: hi")
    oa = tmp_path / "o.jsonl"
    oa.write_text(json.dumps({"message_id": "1", "parent_id": None, "role": "bot", "text": "x"}) + "\n")
    with pytest.raises(CalibenchError, match="field 'role'"):
        load_oasst(oa)
    with pytest.raises(CalibenchError, match="not found"):
        load_instruction_data(tmp_path / "missing.json")
    with pytest.raises(CalibenchError, match="needs --world"):
        load_instruction_data("diverse")


# ------------------------------------------------------------------ learning the world (slow)

@pytest.mark.slow
def test_pretrained_model_learns_the_world(tmp_path):
    """At the default preset's schedule, lab-1m learns the seen people's facts (the accuracy targets
    of issue 10: facts first-token >= 0.5, MC continuation-sum >= 0.6 on seen people) and stays
    near chance on never-seen ones."""
    from calibench.train.config import PRESETS
    from calibench.train.pretrain import PretrainConfig, pretrain_family

    p = PRESETS["default"]
    world = tmp_path / "world"
    build_world(world, WorldConfig(seed=0, people=60), n_instructions=8, n_preferences=8)
    # half the default world, so 300 steps pass over the corpus about as often as 500 do by default
    cfg = PretrainConfig(steps=300, batch_size=p.batch_size, lr=p.lr, first_checkpoint=300)
    pretrain_family(world, tmp_path / "pt", ["lab-1m"], cfg, eval_items=10_000, progress=False)
    last = json.loads((tmp_path / "pt" / "lab-1m" / "calibration_curve.json").read_text())["points"][-1]
    mc, facts = last["mc"]["accuracy_by_bucket"], last["facts"]["accuracy_by_bucket"]
    print("learned:", json.dumps({"mc": mc, "facts": facts}))
    seen = lambda acc: (2 * acc["often"] + acc["rare"]) / 3  # noqa: E731  (often : rare = 2 : 1)
    assert seen(facts) >= 0.5 and seen(mc) >= 0.6
    assert mc["often"] > mc["never"] + 0.4 and facts["often"] > facts["never"] + 0.4
    assert mc["never"] < 0.4  # chance is 0.25


def test_cli_alignment_stages_on_real_format_fixtures(lab, tmp_path):
    """sft on Alpaca JSON, reward + DPO on HH-RLHF, RL with world prompts, diversity: all via the CLI."""
    from calibench.cli import main

    common = ["--batch-size", "2"]
    assert main(["train", "sft", "--base", str(lab["base"]), "--out", str(tmp_path / "sft"), "--data",
                 str(FIXTURES / "alpaca.json"), "--method", "lora", "--epochs", "1", *common]) == 0
    _forward_ok(tmp_path / "sft" / "epoch1")
    hh = str(FIXTURES / "hh_rlhf.jsonl")
    # the fixture's two pairs split one / one; seed 1 trains on the short one (the two-turn dialogue is
    # longer than the reward trainer's 128 tokens under the test tokenizer, which drops it)
    assert main(["train", "reward", "--base", str(lab["base"]), "--out", str(tmp_path / "rm"), "--data", hh,
                 "--seed", "1", *common]) == 0
    assert main(["train", "dpo", "--base", str(tmp_path / "sft"), "--out", str(tmp_path / "dpo"), "--data", hh,
                 *common]) == 0
    assert main(["train", "rl", "--policy", str(tmp_path / "sft"), "--reward-model", str(tmp_path / "rm"),
                 "--out", str(tmp_path / "rl"), "--world", str(lab["world"]), "--steps", "1",
                 "--num-generations", "2", "--max-completion-length", "4", "--eval-items", "4", *common]) == 0
    for stage in ("dpo", "rl"):
        _forward_ok(tmp_path / stage)
    assert main(["train", "diversity", "--world", str(lab["world"]), "--embedding", "tfidf",
                 "--plot", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").stat().st_size > 0
