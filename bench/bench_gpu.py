"""The GPU check (issue 16): packed vs plain scoring, throughput vs a bare forward, calibench vs lm-eval.

    .venv/bin/python bench/bench_gpu.py [--device auto|cuda|cpu] [--quick] [--models tiny10m,smollm2]
        [--batch-size 16] [--tiny-dir DIR] [--out bench/results/gpu_<device>.json]

Sized to finish in well under 5 minutes on one CUDA GPU; ``--device cpu --quick`` is the smoke run.
For each model (the bench tiny10m GPT-NeoX and the built-in SmolLM2-135M-Instruct):

1. packed vs plain: the same items (choice prompt + option continuations of each item as one request,
   as ``calibench eval`` scores them) through ``ScoringEngine.score_items`` on the packed prefix-tree
   path and with ``shared_prefix=False`` (every sequence on its own, lm-eval's way), in float32 and in
   bfloat16. Reported: the max abs difference of the letter log-probs, of every option token's
   log-prob and of the option sums, against ``TOL``, and whether the accuracies are equal.
2. throughput: ``bench_throughput.measure`` (engine vs a bare replay of the very same forwards) in
   both dtypes.
3. vs lm-eval: ``bench_vs_lm_eval.compare`` (wall time and agreement with lm-eval's HF backend on the
   same model object and strings) in float32.

Tolerances (``TOL``), on every log-likelihood compared: float32 1e-4 (what calibench promises
against lm-eval). bfloat16 0.5 nats: bf16 keeps 8 significant bits, so a logit in [16, 32) is rounded
to steps of 0.125, and the two paths (one packed row with an ancestor mask and a header KV cache vs
separate rows) round every layer differently; an option sum adds that over its tokens. On CPU the
engine's own self-check saw 0.22-0.40 on SmolLM2 in bf16 (its 16-bit limit is 0.1, so it falls back to
plain there; the check then forces the packed path to still measure it, and fails as
``packed_path_used: false``). A masking bug (one branch seeing another's tokens) shows up as a nat or
more. The mean abs difference per option token is reported too: noise stays near the bf16 step.
Accuracy equality is required in float32 only: in bfloat16 a near tie between two options may flip,
which is reported, not failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import bench_throughput as T  # noqa: E402
import bench_vs_lm_eval as V  # noqa: E402

TOL = {"float32": 1e-4, "bfloat16": 0.5}
DTYPES = ("float32", "bfloat16")
BUDGET_S = 300.0
# (packed-vs-plain mc items, mmlu items), throughput (items, repeats), lm-eval (mc, mmlu, repeats)
SIZES = {
    False: {"pvp": (100, 60), "throughput": (100, 3), "lm_eval": (100, 60, 3)},
    True: {"pvp": (6, 3), "throughput": (6, 1), "lm_eval": (5, 3, 1)},
}


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA device is visible, else ``cpu``."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    return name


def device_info(device: str) -> dict[str, Any]:
    """What the GPU numbers depend on: the card, torch's CUDA and cuDNN builds, matmul precision."""
    import platform

    import torch

    out: dict[str, Any] = {"device": device, "torch_cuda": torch.version.cuda,
                           "matmul_precision": torch.get_float32_matmul_precision()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        out.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version())
    else:
        out["name"] = platform.processor() or platform.machine()
    return out


def guarded(fn: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run one check; a failure is recorded (and fails the check) instead of ending the run."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - a GPU run is scarce: keep the other checks' numbers
        return {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-1500:], "pass": False}


def _maxdiff(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    return float(max((np.abs(a - b).max() for a, b in pairs if a.size), default=0.0))


def packed_vs_plain(model: Any, tok: Any, task: Any, *, num_fewshot: int, batch_size: int, device: str,
                    dtype: str) -> dict[str, Any]:
    """The same choice + continuation requests on the packed path and the plain path; max abs diffs."""
    from calibench.models.engine import ScoringEngine

    choice, cont = C.prompts_for(task, num_fewshot)
    requests = T.joint_requests(tok, choice, cont)
    packed = ScoringEngine(model, tok, batch_size=batch_size, progress=False, device=device)
    plain = ScoringEngine(model, tok, batch_size=batch_size, progress=False, device=device, shared_prefix=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for engine in (packed, plain):  # warm-up, which also runs the packed engine's one-time self-check
            engine.score_items(requests[:1])
            engine.forward_tokens = 0
    self_check = packed.tree_supported()
    if not self_check:
        # the engine rejected its packed path and would score everything plain: force it, so the
        # difference is still measured (and reported, with the rejection, as a failed check)
        packed._tree_ok = True
    a, b = packed.score_items(requests), plain.score_items(requests)
    letters = [(x.next_tokens[0].candidate_logprobs, y.next_tokens[0].candidate_logprobs) for x, y in zip(a, b, strict=True)]
    opts = [(x.options[0], y.options[0]) for x, y in zip(a, b, strict=True)]
    tokens = [(s.token_logprobs, t.token_logprobs) for xs, ys in opts for s, t in zip(xs, ys, strict=True)]
    sums = [(np.array([s.sum for s in xs]), np.array([t.sum for t in ys])) for xs, ys in opts]
    labels = [it.label for it in task.items]

    def acc(scores: list[np.ndarray]) -> float:
        return float(np.mean([int(np.argmax(s)) == y for s, y in zip(scores, labels, strict=True)]))

    diffs = {"letters": _maxdiff(letters), "option_tokens": _maxdiff(tokens), "option_sums": _maxdiff(sums)}
    mean_token_diff = float(np.mean(np.concatenate([np.abs(x - y) for x, y in tokens])))
    accuracy = {"packed": {"choice": acc([p for p, _ in letters]), "continuation-sum": acc([p for p, _ in sums])},
                "plain": {"choice": acc([q for _, q in letters]), "continuation-sum": acc([q for _, q in sums])}}
    used = bool(self_check) and packed.forward_tokens < plain.forward_tokens
    within = all(d <= TOL[dtype] for d in diffs.values())
    acc_equal = accuracy["packed"] == accuracy["plain"]
    return {"task": task.name, "items": len(task.items), "num_fewshot": num_fewshot, "dtype": dtype,
            "tolerance": TOL[dtype], "max_abs_diff": diffs, "within_tolerance": within,
            "mean_abs_diff_option_tokens": mean_token_diff,
            "accuracy": accuracy, "accuracy_equal": acc_equal,
            # the engine's one-time self-check passed and the packed path did less work than plain
            "packed_path_used": used,
            "self_check_warnings": [str(w.message) for w in caught if "packed prefix" in str(w.message)],
            "model_tokens": {"packed": packed.forward_tokens, "plain": plain.forward_tokens},
            "pass": within and used and (acc_equal or dtype != "float32")}


def throughput(model: Any, tok: Any, tasks: dict[str, tuple[Any, int]], *, batch_size: int, repeats: int,
               device: str) -> dict[str, Any]:
    """``bench_throughput.measure`` on the joint choice + continuation workload of each task."""
    rows = []
    for name, (task, shots) in tasks.items():
        choice, cont = C.prompts_for(task, shots)
        row = T.measure(model, tok, f"{name}_choice_and_continuation", "score_items",
                        T.joint_requests(tok, choice, cont), batch_size=batch_size, repeats=repeats, device=device)
        row.pop("batch_shapes")
        rows.append(row)
    return {"workloads": rows, "pass": all(r["shapes_match"] for r in rows)}


def vs_lm_eval(model: Any, tok: Any, tasks: dict[str, tuple[Any, int]], *, batch_size: int, repeats: int,
               device: str) -> dict[str, Any]:
    """``bench_vs_lm_eval.compare`` on each task (same model object, same strings, lm-eval's HF backend)."""
    out: dict[str, Any] = {"tasks": {}}
    for name, (task, shots) in tasks.items():
        res = V.compare(model, tok, task, num_fewshot=shots, batch_size=batch_size, repeats=repeats, device=device)
        res.pop("seconds_all_runs")
        out["tasks"][name] = res
    out["pass"] = all(r["loglik_agree_1e-4"] and r["accuracy_equal"] for r in out["tasks"].values())
    return out


def check_model(name: str, *, device: str, quick: bool, batch_size: int, tiny_dir: str | None,
                tmp: str) -> dict[str, Any]:
    """All three checks on one model; the model is loaded once per dtype."""
    import torch

    sizes = SIZES[quick]
    mc_n, mmlu_n = sizes["pvp"]
    out: dict[str, Any] = {"packed_vs_plain": {}, "throughput": {}}
    for dtype in DTYPES:
        start = time.perf_counter()
        model, tok, desc = C.load_bench_model(name, model_dir=tiny_dir, device=device, dtype=dtype)
        out.setdefault("model_desc", desc)
        out.setdefault("model_info", C.model_info(model))
        pvp_tasks = {"mc": (C.mc_task(mc_n), 0), "mmlu_5shot": (C.mmlu_task(mmlu_n, Path(tmp) / "pvp"), 5)}
        out["packed_vs_plain"][dtype] = {
            k: guarded(packed_vs_plain, model, tok, t, num_fewshot=s, batch_size=batch_size, device=device,
                       dtype=dtype)
            for k, (t, s) in pvp_tasks.items()}
        n, repeats = sizes["throughput"]
        tp_tasks = {"mc": (C.mc_task(n), 0), "mmlu_5shot": (C.mmlu_task(n, Path(tmp) / "tp"), 5)}
        out["throughput"][dtype] = guarded(throughput, model, tok, tp_tasks, batch_size=batch_size,
                                           repeats=repeats, device=device)
        if dtype == "float32":
            lm_mc, lm_mmlu, repeats = sizes["lm_eval"]
            lm_tasks = {"mc": (C.mc_task(lm_mc), 0), "mmlu_5shot": (C.mmlu_task(lm_mmlu, Path(tmp) / "lm"), 5)}
            out["vs_lm_eval"] = guarded(vs_lm_eval, model, tok, lm_tasks, batch_size=batch_size,
                                        repeats=repeats, device=device)
        if device == "cuda":
            out.setdefault("peak_cuda_mib", {})[dtype] = round(torch.cuda.max_memory_allocated() / 2**20)
            del model
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        out.setdefault("seconds", {})[dtype] = round(time.perf_counter() - start, 1)
    return out


def verdicts(models: dict[str, Any]) -> dict[str, bool]:
    """One pass/fail per check, named ``model/section/dtype[/task]``."""
    out: dict[str, bool] = {}
    for m, res in models.items():
        if "error" in res:  # the model did not load: every check of it fails
            out[f"{m}/load"] = False
            continue
        for dtype, tasks in res["packed_vs_plain"].items():
            for task, r in tasks.items():
                out[f"{m}/packed_vs_plain/{dtype}/{task}"] = bool(r["pass"])
        for dtype, r in res["throughput"].items():
            out[f"{m}/throughput/{dtype}"] = bool(r["pass"])
        out[f"{m}/vs_lm_eval/float32"] = bool(res["vs_lm_eval"]["pass"])
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="small sizes (the CPU smoke run)")
    p.add_argument("--models", default="tiny10m,smollm2", help="comma-separated: tiny10m, smollm2")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--tiny-dir", help="use (or build) the tiny model in this folder")
    p.add_argument("--out", help="JSON path (default bench/results/gpu_<device>.json; '' to skip)")
    a = p.parse_args(argv)
    wall = time.perf_counter()
    device = resolve_device(a.device)
    batch_size = a.batch_size or (3 if a.quick else 16)
    names = [m.strip() for m in a.models.split(",") if m.strip()]
    for m in names:
        if m not in ("tiny10m", "smollm2"):
            raise SystemExit(f"unknown model {m!r} in --models; choose from tiny10m, smollm2")
    env = C.environment(C.set_threads(a.threads))
    result: dict[str, Any] = {"benchmark": "gpu_check", "quick": a.quick, "batch_size": batch_size,
                              "tolerances": TOL, "device": device_info(device), "environment": env, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for m in names:
            result["models"][m] = guarded(check_model, m, device=device, quick=a.quick, batch_size=batch_size,
                                          tiny_dir=a.tiny_dir, tmp=tmp)
    result["checks"] = verdicts(result["models"])
    result["all_pass"] = all(result["checks"].values())
    result["wall_s"] = round(time.perf_counter() - wall, 1)
    result["under_5_min"] = result["wall_s"] < BUDGET_S
    result["environment"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out = a.out if a.out is not None else str(C.RESULTS_DIR / f"gpu_{device}.json")
    C.finish(result, out or None)
    return result


if __name__ == "__main__":
    main()
