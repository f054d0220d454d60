"""End to end: a tiny GPT-NeoX made in the test, small local MC / facts / CLM tasks, every method.

The numbers of three methods are recomputed here straight from transformers (one forward pass per
prompt), so a bug in the engine or the methods cannot hide behind agreeing with itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from calibench.cli import main
from calibench.evaluate import run_eval
from calibench.records import COLUMNS, read_records

CAPITALS = [("France", "Paris"), ("Peru", "Lima"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"),
            ("Chile", "Santiago"), ("Egypt", "Cairo")]
TEXT = ("The capital of France is Paris. The capital of Peru is Lima. Tokyo is in Japan. "
        "Nairobi is the capital of Kenya. Question: Answer: True False A B C D")


def write_tasks(root: Path) -> dict[str, str]:
    """Native JSONL multiple-choice and facts files, and a small text corpus."""
    cities = [c for _, c in CAPITALS]
    mc, facts = [], []
    for i, (country, city) in enumerate(CAPITALS):
        others = [c for c in cities if c != city][i % 3: i % 3 + 3]
        options = sorted([city, *others])
        mc.append({"id": f"mc{i}", "question": f"What is the capital of {country}?", "options": options,
                   "label": options.index(city)})
        facts.append({"id": f"f{i}", "subject": country, "relation": "capital",
                      "template": "The capital of [X] is [Y].", "object": city,
                      "aliases": [f"{city} City"]})
    paths = {"mc": root / "toy_mc.jsonl", "facts": root / "toy_facts.jsonl", "clm": root / "toy_clm.txt"}
    paths["mc"].write_text("".join(json.dumps(r) + "\n" for r in mc))
    paths["facts"].write_text("".join(json.dumps(r) + "\n" for r in facts))
    paths["clm"].write_text(TEXT + "\n\nLima is the capital of Peru. Cairo is in Egypt.\n")
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from calibench.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("eval")
    tasks = write_tasks(root)
    texts = [TEXT] * 5 + [Path(p).read_text() for p in tasks.values()]
    model_a = build_tiny_model(root / "model_a", texts, vocab_size=400, hidden=32, layers=2, heads=2,
                               context=128, seed=0)
    return {"root": root, "tasks": tasks, "a": model_a}


@pytest.fixture(scope="module")
def engine(world):
    """A ScoringEngine on model A for method-level checks (no run folder)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from calibench.models.engine import ScoringEngine

    tok = AutoTokenizer.from_pretrained(world["a"])
    return ScoringEngine(AutoModelForCausalLM.from_pretrained(world["a"]), tok, batch_size=2, progress=False)


def reinitialised(src: Path, dst: Path, seed: int) -> Path:
    """The same architecture and tokenizer as ``src`` with fresh weights (a second, different model)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    GPTNeoXForCausalLM(AutoConfig.from_pretrained(src)).save_pretrained(dst, safe_serialization=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def run_all(world):
    tasks = world["tasks"]
    out = world["root"] / "run_all"
    result = run_eval(f"pretrained={world['a']}", [tasks["mc"], tasks["facts"], tasks["clm"]], "all", out,
                      batch_size=4, bootstrap=10, progress=False, command="test")
    return result


def test_all_methods_write_a_complete_run(world, run_all):
    out = run_all.out_dir
    for name in ("records.parquet", "metrics.json", "config.json"):
        assert (out / name).is_file()
    pngs = sorted(p.name for p in out.glob("reliability_*.png"))
    assert len(pngs) == 3
    recs = read_records(out / "records.parquet")  # validates every row against the contract
    assert list(recs.columns) == list(COLUMNS)
    units = recs.groupby(["task", "method"], sort=False).size()
    methods_by_kind = {
        "mc": ["choice", "continuation-sum", "continuation-mean", "continuation-min", "p-true"],
        "facts": ["first-token", "sequence", "p-true"],
        "clm": ["token"],
    }
    assert sorted(recs["method"].unique()) == sorted({m for ms in methods_by_kind.values() for m in ms})
    n_items = len(CAPITALS)
    for (_task, method), n in units.items():
        if method != "token":
            assert n == n_items
    # one token record per text token (the engine scores every token of every document once)
    from transformers import AutoTokenizer

    from calibench.tasks import load_task

    tok = AutoTokenizer.from_pretrained(world["a"])
    docs = load_task(world["tasks"]["clm"]).items
    n_text_tokens = sum(len(tok.encode(d.text, add_special_tokens=False)) for d in docs)
    assert units[(units.index.get_level_values(1) == "token")].iloc[0] == n_text_tokens
    assert set(recs["model"]) == {str(world["a"])}
    # class records: pred is the argmax index, confidence its probability, correct = pred is the label
    cls = recs[recs["probs"].notna()]
    assert set(cls["method"]) == set(methods_by_kind["mc"]) - {"p-true"}
    assert (cls["pred"] == cls["label"].astype(str)).eq(cls["correct"]).all()
    assert np.allclose(cls["confidence"], [max(p) for p in cls["probs"]])
    assert (cls["pred"].astype(int) == [int(np.argmax(p)) for p in cls["probs"]]).all()
    # class-wise metrics exist for MC methods only
    m = run_all.metrics
    assert set(m[m["metric"] == "sce"]["method"]) == set(methods_by_kind["mc"]) - {"p-true"}
    ece = m[(m["metric"] == "ece")]
    assert ((ece["low"] <= ece["estimate"] + 1e-12) & (ece["estimate"] <= ece["high"] + 1e-12)).all()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 0 and cfg["command"] == "test"
    assert len(cfg["model"]["weights_hash"]) == 64
    assert [t["kind"] for t in cfg["tasks"]] == ["mc", "facts", "clm"]
    assert all(len(t["content_hash"]) == 64 for t in cfg["tasks"])
    assert cfg["versions"]["torch"].startswith("2.")
    metrics_json = json.loads((out / "metrics.json").read_text())
    assert len(metrics_json["metrics"]) == len(m)


def _direct_next_logprobs(model_dir, prompts):
    """log-softmax of the next token after each prompt, straight from transformers (no batching)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([tok.encode(p)])
            out.append(torch.log_softmax(model(ids).logits[0, -1].double(), -1).numpy())
    return tok, out


def test_choice_and_first_token_match_direct_transformers(world, run_all):
    from calibench.methods import answer_token_ids
    from calibench.tasks import load_task
    from calibench.tasks.prompts import fact_prompt, mc_choice_prompt

    recs = run_all.records
    mc = load_task(world["tasks"]["mc"])
    tok, lps = _direct_next_logprobs(world["a"], [mc_choice_prompt(it, fewshot=[]) for it in mc.items])
    letters, _ = answer_token_ids(tok, "ABCD")
    got = recs[recs["method"] == "choice"].set_index("item_id")
    for item, lp in zip(mc.items, lps, strict=True):
        raw = np.exp(lp[letters[: len(item.options)]])
        np.testing.assert_allclose(got.loc[item.item_id, "probs"], raw / raw.sum(), atol=1e-6)
        assert json.loads(got.loc[item.item_id, "extra"])["letter_mass"] == pytest.approx(raw.sum(), rel=1e-5)

    facts = load_task(world["tasks"]["facts"])
    _, lps = _direct_next_logprobs(world["a"], [fact_prompt(it).rstrip(" ") for it in facts.items])
    got = recs[recs["method"] == "first-token"].set_index("item_id")
    for item, lp in zip(facts.items, lps, strict=True):
        assert got.loc[item.item_id, "confidence"] == pytest.approx(np.exp(lp.max()), rel=1e-5)
        assert got.loc[item.item_id, "pred"] == tok.decode([int(lp.argmax())])


def test_continuation_sum_matches_direct_loglikelihood(world, run_all):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from calibench.tasks import load_task
    from calibench.tasks.prompts import mc_continuation_context

    tok = AutoTokenizer.from_pretrained(world["a"])
    model = AutoModelForCausalLM.from_pretrained(world["a"]).eval()
    item = load_task(world["tasks"]["mc"]).items[0]
    ctx = mc_continuation_context(item, fewshot=[])
    lls = []
    with torch.no_grad():
        for opt in item.options:
            c_ids, w_ids = tok.encode(ctx), tok.encode(ctx + " " + opt)
            logits = model(torch.tensor([w_ids])).logits[0].double()
            lp = torch.log_softmax(logits, -1)
            lls.append(sum(float(lp[i - 1, w_ids[i]]) for i in range(len(c_ids), len(w_ids))))
    recs = run_all.records
    row = recs[(recs["method"] == "continuation-sum") & (recs["item_id"] == item.item_id)].iloc[0]
    assert json.loads(row["extra"])["loglik"] == pytest.approx(lls, abs=1e-4)
    e = np.exp(np.asarray(lls) - max(lls))
    np.testing.assert_allclose(row["probs"], e / e.sum(), atol=1e-5)


def test_chat_template_reads_bare_letters_after_the_assistant_turn(world, engine):
    from calibench import methods
    from calibench.records import make_records
    from calibench.tasks import load_task
    from calibench.tasks.prompts import mc_choice_prompt

    tok = engine.tokenizer
    tok.chat_template = ("{% for m in messages %}<|user|>\n{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    task = load_task(world["tasks"]["mc"], limit=3)
    recs = methods.choice(engine, task, options={"chat_template": True})
    prompts = [mc_choice_prompt(it, chat_template=tok) for it in task.items]
    assert prompts[0].endswith("<|assistant|>\n")
    _, lps = _direct_next_logprobs(world["a"], prompts)
    for rec, p, lp, item in zip(recs, prompts, lps, task.items, strict=True):
        ids = [tok.encode(p + L)[len(tok.encode(p)):] for L in "ABCD"[: len(item.options)]]
        assert all(len(i) == 1 for i in ids)  # "A" right after the newline is one token
        raw = np.exp(lp[[i[0] for i in ids]])
        np.testing.assert_allclose(rec["probs"], raw / raw.sum(), atol=1e-6)
        assert rec["extra"]["letter_tokens"] == "bare"
    facts = load_task(world["tasks"]["facts"], limit=2)
    for name in ("first-token", "sequence", "p-true"):
        make_records(methods.METHODS[name](engine, facts, options={"chat_template": True}))


def test_token_records_stream_in_batches_and_cover_every_token_once(world, engine):
    from calibench import methods
    from calibench.tasks import load_task

    tok = engine.tokenizer
    task = load_task(world["tasks"]["clm"])
    frames = list(methods.iter_token_records(engine, task, options={"window": 16, "stride": 8}))
    assert len(frames) > 2  # streamed: one frame per engine batch
    ids = pd.concat(frames)["item_id"].tolist()
    expected = [f"{d.item_id}:{i}" for d in task.items for i in range(len(tok.encode(d.text, add_special_tokens=False)))]
    assert sorted(ids) == sorted(expected)


def test_fewshot_prompts_change_the_numbers_but_not_the_contract(world, engine):
    from calibench import methods
    from calibench.records import make_records
    from calibench.tasks import load_task

    task = load_task(world["tasks"]["mc"])
    zero = methods.choice(engine, task)
    two = methods.choice(engine, task, options={"num_fewshot": 2, "seed": 0})
    again = methods.choice(engine, task, options={"num_fewshot": 2, "seed": 0})
    make_records(two)
    assert [r["probs"] for r in two] == [r["probs"] for r in again]  # few-shot choice is seeded
    assert any(abs(a["confidence"] - b["confidence"]) > 1e-6 for a, b in zip(zero, two, strict=True))
    facts = load_task(world["tasks"]["facts"])
    make_records(methods.first_token(engine, facts, options={"num_fewshot": 1}))


def test_a_failing_method_leaves_the_previous_records_untouched(world, engine, monkeypatch, tmp_path):
    import calibench.methods as registry
    from calibench.errors import CalibenchError
    from calibench.models.loading import LoadedModel, parse_model_args

    out = tmp_path / "run"
    out.mkdir()
    (out / "records.parquet").write_bytes(b"previous run")

    def boom(*args, **kwargs):
        raise CalibenchError("boom")

    monkeypatch.setitem(registry.METHODS, "continuation-sum", boom)
    loaded = LoadedModel(engine.model, engine.tokenizer, parse_model_args(f"pretrained={world['a']}"),
                         str(world["a"]), None, "0" * 64)
    with pytest.raises(CalibenchError, match="boom"):
        run_eval("pretrained=x", [world["tasks"]["mc"]], "choice,continuation-sum", out, loaded=loaded,
                 progress=False, bootstrap=0, figures=False)
    assert (out / "records.parquet").read_bytes() == b"previous run"
    assert sorted(p.name for p in out.iterdir()) == ["records.parquet"]  # no temporary file left


def test_an_unmeasurable_method_is_reported_and_the_run_goes_on(world, monkeypatch, capsys):
    import calibench.methods as registry
    from calibench.errors import NotMeasurable

    def unmeasurable(*args, **kwargs):
        raise NotMeasurable("method 'continuation-sum' on task 'toy_mc': none of the 6 answers states a confidence")

    monkeypatch.setitem(registry.METHODS, "continuation-sum", unmeasurable)
    out = world["root"] / "not_measured"
    args = ["eval", "--model-args", f"pretrained={world['a']}", "--tasks", world["tasks"]["mc"], "--methods",
            "choice,continuation-sum", "--out", str(out), "--bootstrap", "0", "--quiet", "--no-figures"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "not measured: toy_mc · continuation-sum: method 'continuation-sum'" in text
    records = pd.read_parquet(out / "records.parquet")
    assert set(records["method"]) == {"choice"} and len(records) == 6
    units = json.loads((out / "config.json").read_text())["units"]
    assert units[0] == {"task": "toy_mc", "method": "choice", "n_records": 6}
    assert units[1]["n_records"] == 0 and "none of the 6 answers" in units[1]["not_measured"]
    # nothing measurable at all: a one-line error, not an empty run
    args[args.index("--methods") + 1] = "continuation-sum"
    assert main(args) == 2
    assert "no method measured anything" in capsys.readouterr().err


def test_same_command_twice_gives_identical_records(world, run_all):
    tasks = world["tasks"]
    same = run_eval(f"pretrained={world['a']}", [tasks["mc"], tasks["facts"], tasks["clm"]], "all",
                    world["root"] / "run_same", batch_size=4, bootstrap=10, progress=False, figures=False)
    a = pd.read_parquet(run_all.out_dir / "records.parquet")
    b = pd.read_parquet(same.out_dir / "records.parquet")
    pd.testing.assert_frame_equal(a, b)  # bit-identical, probs and extra included
    pd.testing.assert_frame_equal(run_all.metrics, same.metrics)
    assert not list(same.out_dir.glob("*.png"))


def test_cli_eval_prints_summary_and_rejects_bad_input(world, capsys):
    tasks, out = world["tasks"], world["root"] / "cli_run"
    args = ["eval", "--model-args", f"pretrained={world['a']}", "--tasks", tasks["mc"], "--methods",
            "choice,continuation-sum", "--out", str(out), "--bootstrap", "20", "--quiet", "--limit", "4"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "choice" in text and "continuation-sum" in text and "ECE" in text
    assert len(pd.read_parquet(out / "records.parquet")) == 8

    def bad(replace: dict[str, str], message: str) -> None:
        argv = list(args)
        for flag, value in replace.items():
            argv[argv.index(flag) + 1] = value
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err

    bad({"--methods": "choice,magic"}, "unknown method 'magic'")
    bad({"--methods": "sequence"}, "method 'sequence' does not apply")
    bad({"--tasks": "no-such-task"}, "no-such-task")
    bad({"--model-args": "pretrained=/no/such/dir"}, "/no/such/dir")
    bad({"--tasks": f"{tasks['mc']},{tasks['mc']}"}, "given twice")
    bad({"--model-args": f"pretrained={world['a']},colour=red"}, "unknown key 'colour'")
    assert main([*args[:1], "--model", "vllm", *args[1:]]) == 2
    assert "not supported" in capsys.readouterr().err


def test_compare_two_models(world, run_all, capsys):
    from calibench.compare import compare_runs

    tasks = world["tasks"]
    model_b = reinitialised(world["a"], world["root"] / "model_b", seed=1)
    run_b = run_eval(f"pretrained={model_b}", [tasks["mc"], tasks["clm"]], "choice,continuation-sum,token",
                     world["root"] / "run_b", bootstrap=10, progress=False, figures=False)
    comp = compare_runs(run_all.out_dir, run_b.out_dir, n_resamples=10)
    assert list(dict.fromkeys(comp.table["method"])) == ["choice", "continuation-sum", "token"]
    assert {m for _, m in comp.only_a} == {"continuation-mean", "continuation-min", "p-true", "first-token",
                                          "sequence"}
    # a and b are each run's own metric on the same items; delta = b - a
    ma = run_all.metrics.set_index(["task", "method", "metric"])["estimate"]
    mb = run_b.metrics.set_index(["task", "method", "metric"])["estimate"]
    for r in comp.table.to_dict("records"):
        key = (r["task"], r["method"], r["metric"])
        assert r["a"] == pytest.approx(ma[key], abs=1e-9, nan_ok=True)
        assert r["b"] == pytest.approx(mb[key], abs=1e-9, nan_ok=True)
        assert r["delta"] == pytest.approx(r["b"] - r["a"], abs=1e-9, nan_ok=True)
    assert comp.table["delta"].abs().max() > 0  # different weights, different numbers

    out = world["root"] / "cmp"
    assert main(["compare", str(run_all.out_dir), str(run_b.out_dir), "--out", str(out), "--bootstrap", "20"]) == 0
    printed = capsys.readouterr().out
    assert "continuation-sum" in printed and "only in A" in printed
    saved = json.loads((out / "compare.json").read_text())
    assert saved["delta"] == "b - a" and saved["n_resamples"] == 20 and len(saved["rows"]) == len(comp.table)
    assert (out / "reliability_compare.png").stat().st_size > 1000


def test_cli_threads_pins_torch_for_the_run_only(world, capsys, monkeypatch):
    """--threads changes how many threads score, not what is scored, and restores torch's setting."""
    import torch

    import calibench.evaluate as evaluate

    seen: list[int] = []
    real_run_eval = evaluate.run_eval

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_run_eval(*args, **kwargs)

    monkeypatch.setattr(evaluate, "run_eval", spy)
    tasks, root = world["tasks"], world["root"]
    base = ["eval", "--model-args", f"pretrained={world['a']}", "--tasks", tasks["mc"], "--methods",
            "choice,continuation-sum", "--bootstrap", "0", "--quiet", "--limit", "4", "--no-figures"]
    before = torch.get_num_threads()
    assert main([*base, "--out", str(root / "threads_default")]) == 0
    assert main([*base, "--out", str(root / "threads_one"), "--threads", "1"]) == 0
    assert seen == [1, 1]  # the default for a model this small is one thread (calibench.threads.choose_threads)
    assert torch.get_num_threads() == before
    a = pd.read_parquet(root / "threads_default" / "records.parquet")
    b = pd.read_parquet(root / "threads_one" / "records.parquet")
    # Thread count changes float summation order (1e-16 noise), not what is scored.
    assert a[["item_id", "method", "pred", "label", "correct"]].equals(b[["item_id", "method", "pred", "label",
                                                                           "correct"]])
    np.testing.assert_allclose(a["confidence"], b["confidence"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.vstack(a["probs"]), np.vstack(b["probs"]), atol=1e-6, rtol=0)
    assert main([*base, "--out", str(root / "threads_zero"), "--threads", "0"]) == 2
    assert "threads" in capsys.readouterr().err
