"""Wall time of calibench vs lm-evaluation-harness on the same model, items and batch size.

    .venv/bin/python bench/bench_vs_lm_eval.py [--model tiny10m|smollm2] [--quick] [--threads 2]
        [--batch-size 8] [--mc-items N] [--mmlu-items N] [--repeats R] [--out bench/results/vs_lm_eval_<model>.json]

For each task (a 4-option multiple-choice task with multi-token options, and an MMLU-format task with
5-shot prompts from its dev CSVs) two comparisons are timed:

(a) full set: calibench's ``choice``, ``continuation-sum``, ``continuation-mean`` and ``continuation-min``
    methods in one run, as ``calibench eval`` runs them (``ScoringSession.prefetch`` scores each
    item's choice prompt and option sequences as one prefix tree, then the four ``METHODS`` read that
    pass) vs lm-eval computing what it can of the same numbers: a
    letter task (choice prompt + " A".." D") plus a continuation task (context + " option"), all
    requests in one ``HFLM.loglikelihood`` call, as ``simple_evaluate`` batches the loglikelihood
    requests of several tasks. lm-eval's ``loglikelihood`` returns only the sum per continuation, so
    the mean and min methods have no lm-eval counterpart at all (they would need per-token requests).
(b) continuation-sum alone vs lm-eval's continuation task alone.

Fairness: the model and tokenizer are loaded once and shared, so loading is excluded from both
sides. lm-eval is driven in-process through ``lm_eval.models.huggingface.HFLM(pretrained=model,
tokenizer=tok, batch_size=B)`` and ``.loglikelihood`` on ``Instance`` objects: this skips lm-eval's
task building, dataset loading and metric code (which favours lm-eval), while calibench's time
includes building prompts, tokenising and making records. Both sides get the same prompt strings
(``calibench.tasks.prompts``), one warm-up call, then the best of ``--repeats`` interleaved runs; the
method cache is cleared before every calibench run. Checks: log-likelihoods of letters and options
agree to 1e-4 (max abs diff reported) and the accuracies are equal.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

FULL_METHODS = ("choice", "continuation-sum", "continuation-mean", "continuation-min")
TOL = 1e-4


def lm_eval_requests(task: Any, num_fewshot: int) -> tuple[list[Any], list[Any]]:
    """lm-eval ``Instance`` objects of the letter task and the continuation task (same strings as calibench)."""
    from lm_eval.api.instance import Instance

    choice, cont = C.prompts_for(task, num_fewshot)
    letters, options = [], []
    for prompt, item in zip(choice, task.items, strict=True):
        for k in range(len(item.options)):
            letters.append(Instance(request_type="loglikelihood", doc={}, arguments=(prompt, " " + C.LETTERS[k]),
                                    idx=k))
    for ctx, opts in cont:
        for k, opt in enumerate(opts):
            options.append(Instance(request_type="loglikelihood", doc={}, arguments=(ctx, opt), idx=k))
    return letters, options


def _per_item(values: list[float], task: Any) -> list[np.ndarray]:
    out, start = [], 0
    for item in task.items:
        out.append(np.asarray(values[start : start + len(item.options)], dtype=np.float64))
        start += len(item.options)
    return out


def _accuracy(scores: list[np.ndarray], task: Any) -> float:
    return float(np.mean([int(np.argmax(s)) == it.label for s, it in zip(scores, task.items, strict=True)]))


def compare(model: Any, tok: Any, task: Any, *, num_fewshot: int, batch_size: int, repeats: int,
            device: str = "cpu") -> dict[str, Any]:
    """Time and check both comparisons on one task; returns the JSON-ready result for that task."""
    from lm_eval.models.huggingface import HFLM

    from calibench.methods import METHODS, ScoringSession
    from calibench.models.engine import ScoringEngine

    opts = {"num_fewshot": num_fewshot}
    hflm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, device=device)
    engine = ScoringEngine(model, tok, batch_size=batch_size, progress=False, device=device)
    letters, options = lm_eval_requests(task, num_fewshot)

    def lm_full() -> list[tuple[float, bool]]:
        return hflm.loglikelihood(letters + options, disable_tqdm=True)

    def lm_sum() -> list[tuple[float, bool]]:
        return hflm.loglikelihood(options, disable_tqdm=True)

    full_tokens: list[int] = []  # model tokens of each timed full run

    def cb_full() -> dict[str, list[dict]]:  # what run_eval does for these four methods
        before = engine.forward_tokens
        session = ScoringSession(engine, tok, opts)  # a fresh run: nothing cached from the last repeat
        session.prefetch(task, FULL_METHODS)
        out = {m: METHODS[m](engine, task, session=session) for m in FULL_METHODS}
        full_tokens.append(engine.forward_tokens - before)
        return out

    def cb_sum() -> dict[str, list[dict]]:
        return {"continuation-sum": METHODS["continuation-sum"](engine, task, options=opts)}

    hflm.loglikelihood(options[: 2 * batch_size], disable_tqdm=True)  # warm-up (allocator, kernels)
    engine.score_options(C.prompts_for(task, num_fewshot)[1][:batch_size])
    runs = {"lm_eval_full": lm_full, "calibench_full": cb_full, "lm_eval_sum": lm_sum, "calibench_sum": cb_sum}
    times: dict[str, list[float]] = {k: [] for k in runs}
    values: dict[str, Any] = {}
    for _ in range(max(1, repeats)):  # interleaved, so a burst of load hits both sides
        for name, fn in runs.items():
            start = time.perf_counter()
            values[name] = fn()
            times[name].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in times.items()}
    tokens = model_tokens(model, tok, task, num_fewshot=num_fewshot, batch_size=batch_size, ours=full_tokens[-1],
                          device=device)

    # --- agreement
    n_letters = len(letters)
    lm_letter = _per_item([x[0] for x in values["lm_eval_full"][:n_letters]], task)
    lm_opts = _per_item([x[0] for x in values["lm_eval_full"][n_letters:]], task)
    lm_opts_alone = _per_item([x[0] for x in values["lm_eval_sum"]], task)
    recs = values["calibench_full"]
    cb_letter = [np.log(np.asarray(r["extra"]["letter_probs"], dtype=np.float64)) for r in recs["choice"]]
    cb_opts = [np.asarray(r["extra"]["loglik"], dtype=np.float64) for r in recs["continuation-sum"]]
    cb_opts_alone = [np.asarray(r["extra"]["loglik"], dtype=np.float64)
                     for r in values["calibench_sum"]["continuation-sum"]]
    lm_greedy = [x[1] for x in values["lm_eval_full"][n_letters:]]
    cb_greedy = [g for r in recs["continuation-sum"] for g in r["extra"]["is_greedy"]]

    def maxdiff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
        return float(max(np.abs(x - y).max() for x, y in zip(a, b, strict=True)))

    acc = {m: float(np.mean([r["correct"] for r in rs])) for m, rs in recs.items()}
    diffs = {"letters": maxdiff(cb_letter, lm_letter), "options": maxdiff(cb_opts, lm_opts),
             "options_sum_only_run": maxdiff(cb_opts_alone, lm_opts_alone)}
    lm_acc = {"choice": _accuracy(lm_letter, task), "continuation-sum": _accuracy(lm_opts, task)}
    n_opt_tokens = [n for r in recs["continuation-sum"] for n in r["extra"]["n_tokens"]]
    return {
        "task": task.name,
        "items": len(task.items),
        "options_per_item": 4,
        "num_fewshot": num_fewshot,
        "batch_size": batch_size,
        "repeats": max(1, repeats),
        "option_tokens_mean": round(float(np.mean(n_opt_tokens)), 2),
        "option_tokens_max": int(max(n_opt_tokens)),
        "choice_prompt_tokens_mean": round(float(np.mean([len(tok(p)["input_ids"])
                                                          for p in C.prompts_for(task, num_fewshot)[0]])), 1),
        "lm_eval_requests": {"letters": len(letters), "continuations": len(options)},
        "letter_tokens": recs["choice"][0]["extra"]["letter_tokens"],
        "model_tokens": tokens,
        "seconds": {k: round(v, 3) for k, v in best.items()},
        "seconds_all_runs": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "speedup_full": round(best["lm_eval_full"] / best["calibench_full"], 2),
        "speedup_sum": round(best["lm_eval_sum"] / best["calibench_sum"], 2),
        "max_abs_diff": diffs,
        "loglik_agree_1e-4": all(d < TOL for d in diffs.values()),
        "is_greedy_equal": cb_greedy == lm_greedy,
        "accuracy_calibench": acc,
        "accuracy_lm_eval": lm_acc,
        "accuracy_equal": all(acc[m] == lm_acc[m] for m in lm_acc),
        "target_full_3x": best["lm_eval_full"] / best["calibench_full"] >= 3.0,
        "target_sum_1.5x": best["lm_eval_sum"] / best["calibench_sum"] >= 1.5,
    }


def model_tokens(model: Any, tok: Any, task: Any, *, num_fewshot: int, batch_size: int, ours: int,
                 device: str = "cpu") -> dict[str, Any]:
    """Real tokens through the model: calibench's full run (``ours``) vs every request as its own sequence.

    The per-request count is lm-eval's work for the same requests (one forward per letter prompt,
    shared by its four one-token letters, and one per option), counted by the engine with
    ``shared_prefix=False``. Their ratio bounds the wall-time ratio on a compute-bound machine, and
    ``best_possible_ratio`` bounds what any exact implementation could reach.
    """
    from calibench.models.engine import ScoringEngine
    from calibench.models.tree import PrefixTree

    plain = ScoringEngine(model, tok, batch_size=batch_size, progress=False, shared_prefix=False, device=device)
    choice, cont = C.prompts_for(task, num_fewshot)
    plain.next_token(choice)
    plain.score_options(cont)
    # Every distinct prefix of every model input needs its own forward position at least once: the
    # size of the prefix tree over all inputs is the least work any exact implementation can do.
    every = PrefixTree()
    for ids in plain.encode_many(choice):
        every.add(ids)
    for pairs in plain.tokens.pairs(cont):
        for p in pairs:
            every.add((p.context + p.continuation)[:-1])
    least = len(every.tokens)
    return {"calibench": ours, "per_request": plain.forward_tokens,
            "ratio": round(plain.forward_tokens / max(1, ours), 2),
            "distinct_prefixes": least, "best_possible_ratio": round(plain.forward_tokens / max(1, least), 2)}


DEFAULTS = {  # (mc items, mmlu items, repeats); smollm2 is ~15x slower per token than tiny10m here
    ("tiny10m", False): (100, 60, 3),
    ("tiny10m", True): (16, 9, 1),
    ("smollm2", False): (40, 15, 1),
    ("smollm2", True): (8, 3, 1),
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny10m", choices=["tiny10m", "smollm2"])
    p.add_argument("--quick", action="store_true", help="a small run (seconds on tiny10m)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--mc-items", type=int)
    p.add_argument("--mmlu-items", type=int)
    p.add_argument("--repeats", type=int)
    p.add_argument("--out", help="JSON path (default bench/results/vs_lm_eval_<model>.json; '' to skip)")
    a = p.parse_args(argv)
    mc_n, mmlu_n, repeats = DEFAULTS[(a.model, a.quick)]
    mc_n, mmlu_n = a.mc_items or mc_n, a.mmlu_items or mmlu_n
    repeats = a.repeats or repeats
    threads = C.set_threads(a.threads)
    env = C.environment(threads)
    model, tok, desc = C.load_bench_model(a.model)
    result: dict[str, Any] = {"benchmark": "vs_lm_eval", "model": a.model, "model_desc": desc,
                              "model_info": C.model_info(model), "environment": env, "tasks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, task, shots in (("mc", C.mc_task(mc_n), 0), ("mmlu_5shot", C.mmlu_task(mmlu_n, tmp), 5)):
            result["tasks"][name] = compare(model, tok, task, num_fewshot=shots, batch_size=a.batch_size,
                                            repeats=repeats)
    out = a.out if a.out is not None else str(C.RESULTS_DIR / f"vs_lm_eval_{a.model}.json")
    C.finish(result, out or None)
    return result


if __name__ == "__main__":
    main()
