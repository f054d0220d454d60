"""Smoke runs of the engine benchmarks' core functions on a very small model (no timing assertions).

Each benchmark must compare like with like, so what is asserted is that the two sides agree: the
same log-likelihoods and accuracies as lm-eval, the same forward shapes as the bare replay, the
same per-token numbers streamed to Parquet as the engine yields directly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import _common as C  # noqa: E402


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory):
    """The benchmark model recipe at toy size (the corpus makes " A".." D" single tokens)."""
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bench-model") / "m"
    model, tok, _ = C.load_bench_model("tiny10m", model_dir=str(C.build_tiny10m(out, hidden=32, layers=2,
                                                                                    vocab_size=512)))
    return model, tok


def test_vs_lm_eval_numbers_agree(small_model, tmp_path: Path) -> None:
    import bench_vs_lm_eval as B

    model, tok = small_model
    for task, shots in ((C.mc_task(5), 0), (C.mmlu_task(3, tmp_path), 5)):
        res = B.compare(model, tok, task, num_fewshot=shots, batch_size=3, repeats=1)
        assert res["items"] == len(task.items)
        assert res["letter_tokens"] == "space"  # the letters both sides score are the same tokens
        assert res["lm_eval_requests"] == {"letters": 4 * len(task.items), "continuations": 4 * len(task.items)}
        assert res["loglik_agree_1e-4"], res["max_abs_diff"]
        assert res["accuracy_equal"] and res["is_greedy_equal"]
        assert res["option_tokens_max"] > 1  # multi-token options, so the shared-prefix path is exercised
        tokens = res["model_tokens"]
        assert 0 < tokens["distinct_prefixes"] <= tokens["calibench"] < tokens["per_request"]


def test_mmlu_files_have_the_original_layout(tmp_path: Path) -> None:
    import csv

    root = C.write_mmlu_csv(tmp_path, per_subject=2)
    for subject in C.MMLU_SUBJECT_OF.values():
        dev = list(csv.reader((root / "dev" / f"{subject}_dev.csv").read_text(encoding="utf-8").splitlines()))
        test = list(csv.reader((root / "test" / f"{subject}_test.csv").read_text(encoding="utf-8").splitlines()))
        assert len(dev) == 5 and len(test) == 2
        assert all(len(r) == 6 and r[5] in "ABCD" for r in dev + test)
    task = C.mmlu_task(4, tmp_path / "again")
    choice, _ = C.prompts_for(task, 5)
    assert len({it.subject for it in task.items}) == 3  # subjects interleaved
    assert choice[0].startswith("The following are multiple choice questions") and choice[0].count("Answer:") == 6


def test_throughput_replays_the_engine_shapes(small_model, tmp_path: Path) -> None:
    import bench_throughput as T

    model, tok = small_model
    _, cont = C.prompts_for(C.mc_task(7), 0)
    res = T.measure(model, tok, "mc", "score_options", cont, batch_size=3, repeats=1)
    assert res["shapes_match"] and res["forward_calls"] == 3  # 7 items, 3 per batch: one packed pass each
    # each item's context runs once instead of once per option
    assert 0 < res["model_tokens"] < res["per_request_model_tokens"] and res["engine_s"] > 0
    choice, _ = C.prompts_for(C.mc_task(5), 0)
    res = T.measure(model, tok, "letters", "next_token", choice, batch_size=2, repeats=1)
    assert res["shapes_match"] and res["forward_calls"] == 3
    choice, cont = C.prompts_for(C.mc_task(4), 0)
    res = T.measure(model, tok, "joint", "score_items", T.joint_requests(tok, choice, cont), batch_size=4, repeats=1)
    assert res["shapes_match"] and res["forward_calls"] == 1
    assert res["model_tokens"] < res["per_request_model_tokens"]
    # MMLU-style 5-shot prompts share their shots: a header runs once and the replay gets its cache too
    _, cont = C.prompts_for(C.mmlu_task(6, tmp_path / "mmlu"), 5)
    res = T.measure(model, tok, "mmlu", "score_options", cont, batch_size=3, repeats=1)
    assert res["shapes_match"] and res["header_calls"] >= 1


def test_clm_parquet_stream_matches_engine(small_model, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    import bench_clm_memory as M
    from calibench.models.engine import ScoringEngine

    model, tok = small_model
    res = M.score_corpus(model, tok, 1500, tmp_path / "r.parquet", window=32, stride=32, batch_size=4)
    assert res["tokens"] >= 1500 and res["rows_in_parquet"] == res["tokens"]
    table = pq.read_table(tmp_path / "r.parquet").to_pandas()
    assert table["item_id"].is_unique
    engine = ScoringEngine(model, tok, batch_size=4, progress=False)
    corpus = M.LazyCorpus(10**6)
    conf, n = [], 0
    for batch in engine.score_tokens((corpus[i].text for i in range(len(corpus))), window=32, stride=32):
        conf.append(batch.confidence)
        n += len(batch)
        if n >= res["tokens"]:
            break
    np.testing.assert_allclose(table["confidence"].to_numpy(), np.concatenate(conf)[: len(table)], atol=1e-12)
    assert abs(res["mean_confidence"] - table["confidence"].mean()) < 1e-9


def test_cli_scale_bench_runs_the_real_command_on_both_codes(tmp_path: Path) -> None:
    """bench_cli_scale times `calibench metrics` on a written file; its table matches the records."""
    import bench_cli_scale as S

    path = S.write_records(3000, tmp_path / "r.jsonl")
    run = S.run_cli(S.REPO_SRC, path, resamples=20, timeout=300)
    assert "error" not in run, run.get("error")
    assert run["seconds"] > 0 and run["peak_rss_mb"] > 0
    from calibench.records import read_records

    df = read_records(path)
    accuracy = float(run["table"]["accuracy"].split()[0])
    assert accuracy == pytest.approx(df["correct"].mean(), abs=5e-5)
    read = S.run_read(S.REPO_SRC, path, timeout=300)  # the read alone, in its own process
    assert "error" not in read, read.get("error")
    assert read["seconds"] > 0 and read["peak_rss_mb"] > 0


def test_methods_cost_runs_every_method_at_toy_size(small_model) -> None:
    import bench_methods_cost as B

    model, tok = small_model
    rows = B.measure(model, tok, limit=6, n_samples=2, batch_size=4)
    done = {(r["task"], r["method"]) for r in rows}
    assert ("world-mc", "probe") in done and ("world-facts", "semantic") in done
    for r in rows:
        assert "error" in r or (r["tokens_per_item"] > 0 and r["records"] >= 1)
    sampled = {r["method"]: r["tokens_per_item"] for r in rows if r["task"] == "world-facts" and "error" not in r}
    assert sampled["consistency"] > sampled["sequence"]  # the samples cost on top of the greedy answer


def test_gpu_check_runs_every_section_on_cpu(small_model, tmp_path: Path) -> None:
    """bench_gpu.py end to end at --quick size on CPU: packed == plain to 1e-4 in float32, every section there."""
    import json

    import bench_gpu as G

    model, _ = small_model
    tiny_dir = str(Path(model.name_or_path))  # the fixture's toy model folder, reused (not rebuilt)
    assert (Path(tiny_dir) / "model.safetensors").exists()
    res = G.main(["--device", "cpu", "--quick", "--models", "tiny10m", "--tiny-dir", tiny_dir,
                  "--out", str(tmp_path / "gpu.json")])
    assert json.loads((tmp_path / "gpu.json").read_text(encoding="utf-8")) == json.loads(json.dumps(res))
    assert {"device", "environment", "tolerances", "models", "checks", "all_pass", "wall_s"} <= set(res)
    assert res["device"]["device"] == "cpu" and res["tolerances"]["float32"] == 1e-4
    tiny = res["models"]["tiny10m"]
    assert {"packed_vs_plain", "throughput", "vs_lm_eval"} <= set(tiny), tiny.get("error")
    assert set(tiny["packed_vs_plain"]) == set(tiny["throughput"]) == {"float32", "bfloat16"}
    for dtype, tasks in tiny["packed_vs_plain"].items():
        assert set(tasks) == {"mc", "mmlu_5shot"}
        for r in tasks.values():
            assert "error" not in r, r.get("traceback")
            assert r["packed_path_used"] and r["model_tokens"]["packed"] < r["model_tokens"]["plain"]
            assert r["items"] > 0 and r["dtype"] == dtype
            if dtype == "float32":
                assert max(r["max_abs_diff"].values()) <= 1e-4 and r["accuracy_equal"], r["max_abs_diff"]
    for r in tiny["throughput"].values():
        assert r["pass"] and [w["shapes_match"] for w in r["workloads"]] == [True, True]
    lm = tiny["vs_lm_eval"]
    assert set(lm["tasks"]) == {"mc", "mmlu_5shot"} and lm["pass"]
    assert set(res["checks"]) == {f"tiny10m/packed_vs_plain/{d}/{t}" for d in ("float32", "bfloat16")
                                  for t in ("mc", "mmlu_5shot")} | {"tiny10m/throughput/float32",
                                                                    "tiny10m/throughput/bfloat16",
                                                                    "tiny10m/vs_lm_eval/float32"}
    assert res["all_pass"] == all(res["checks"].values())
