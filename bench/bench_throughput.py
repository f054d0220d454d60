"""Scoring throughput of the engine vs bare ``model(...)`` forwards of the same batches.

    .venv/bin/python bench/bench_throughput.py [--model tiny10m|smollm2] [--quick] [--threads 1]
        [--batch-size 8] [--items N] [--repeats R] [--out bench/results/throughput_<model>.json]

Workloads: ``score_items`` with choice + continuation together (what ``calibench eval`` runs for
those methods) on the 4-option task and on the MMLU-format 5-shot task, ``score_options`` alone and
``next_token`` alone (the choice method's letter pass). A forward pre-hook records every forward the
engine makes: its input ids, mask (a 4D ancestor mask for packed prefix trees), position ids and the
KV cache it was given (a few-shot header). The bare baseline replays exactly those tensors as plain
``model(input_ids=..., attention_mask=..., position_ids=..., cache=...)`` calls. So
engine/bare is the engine's overhead: tokenising, building the trees, sorting, log-softmax, records.
It can exceed 1 because the engine asks for logits of the scored positions only
(``logits_to_keep``), while a bare forward projects every position onto the vocabulary. Throughput
counts the real (unpadded) tokens through the model (``ScoringEngine.forward_tokens``).
Also reported: lm-eval-style scoring (every request its own sequence, ``shared_prefix=False``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tempfile  # noqa: E402

import _common as C  # noqa: E402

TARGET = 0.8


class ForwardLog:
    """Records the forwards a model makes (via a forward pre-hook), with copies of their inputs."""

    def __init__(self, model: Any) -> None:
        self.calls: list[dict[str, Any]] = []
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module: Any, args: tuple, kwargs: dict) -> None:
        call = {k: kwargs.get(k) for k in ("input_ids", "attention_mask", "position_ids", "use_cache")}
        if call["input_ids"] is None and args:
            call["input_ids"] = args[0]
        past = kwargs.get("cache", kwargs.get("past_key_values"))  # the engine passes ``cache``
        # the forward appends to the cache in place: keep what it held before the call
        call["past"] = [(k.clone(), v.clone()) for k, v, *_ in past] if past is not None else None
        self.calls.append(call)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(c["input_ids"].shape) for c in self.calls]

    def close(self) -> None:
        self.handle.remove()


def bare_replay(model: Any, calls: list[dict[str, Any]]) -> None:
    """The recorded forwards as plain calls: same tensors, every position through the LM head."""
    import torch
    from transformers import DynamicCache

    with torch.inference_mode():
        for c in calls:
            past = DynamicCache(ddp_cache_data=c["past"]) if c["past"] is not None else None
            model(input_ids=c["input_ids"], attention_mask=c["attention_mask"], position_ids=c["position_ids"],
                  cache=past, use_cache=bool(c["use_cache"]))
    if calls and calls[0]["input_ids"].is_cuda:  # CUDA runs asynchronously: wait, so the time is the work's
        torch.cuda.synchronize()


def joint_requests(tok: Any, choice: list[str], cont: list[tuple[str, list[str]]]) -> list[Any]:
    """choice + continuation of each item as one ``ItemRequest`` (letters " A".." D" as candidates)."""
    from calibench.models.engine import ItemRequest

    letters = [tok.encode(f" {L}", add_special_tokens=False)[-1] for L in "ABCD"]
    return [ItemRequest(prompts=[p], candidates=[letters], option_sets=[o]) for p, o in zip(choice, cont, strict=True)]


def engine_call(engine: Any, kind: str, payload: list) -> Any:
    if kind == "score_items":
        return engine.score_items(payload)
    if kind == "score_options":
        return engine.score_options(payload)
    return engine.next_token(payload)


def measure(model: Any, tok: Any, name: str, kind: str, payload: list, *, batch_size: int,
            repeats: int, device: str = "cpu") -> dict[str, Any]:
    """Engine vs bare (and vs lm-eval-style scoring of every request on its own) on one workload."""
    from calibench.models.engine import ScoringEngine

    engine = ScoringEngine(model, tok, batch_size=batch_size, progress=False, device=device)
    run = lambda: engine_call(engine, kind, payload)  # noqa: E731
    run()  # warm-up (and the engine's one-time check of packed scoring)
    log = ForwardLog(model)
    before = engine.forward_tokens
    run()
    tokens = engine.forward_tokens - before
    log.close()
    replay = lambda: bare_replay(model, log.calls)  # noqa: E731
    log_bare = ForwardLog(model)
    replay()
    log_bare.close()
    t_eng, t_bare = float("inf"), float("inf")
    for _ in range(max(1, repeats)):  # interleaved
        t_eng = min(t_eng, C.best_of(run, 1)[0])
        t_bare = min(t_bare, C.best_of(replay, 1)[0])
    out: dict[str, Any] = {
        "workload": name, "engine_call": kind, "items": len(payload), "batch_size": batch_size,
        "forward_calls": len(log.calls), "model_tokens": tokens,
        "shapes_match": log.shapes == log_bare.shapes,
        "header_calls": sum(c["past"] is not None for c in log.calls),  # forwards given a header's KV cache
        "batch_shapes": [list(s) for s in log.shapes],
        "engine_s": round(t_eng, 4), "bare_s": round(t_bare, 4),
        "engine_tok_per_s": round(tokens / t_eng), "bare_tok_per_s": round(tokens / t_bare),
        "engine_vs_bare": round(t_bare / t_eng, 3), "target_0.8": t_bare / t_eng >= TARGET,
    }
    if kind != "next_token":
        full = ScoringEngine(model, tok, batch_size=batch_size, progress=False, shared_prefix=False, device=device)
        engine_call(full, kind, payload[:batch_size])
        before = full.forward_tokens
        t_full = C.best_of(lambda: engine_call(full, kind, payload), repeats)[0]
        out["per_request_model_tokens"] = (full.forward_tokens - before) // max(1, repeats)
        out["per_request_s"] = round(t_full, 4)
        out["speedup_vs_per_request"] = round(t_full / t_eng, 2)
    return out


DEFAULTS = {("tiny10m", False): (100, 3), ("tiny10m", True): (12, 1), ("smollm2", False): (24, 1),
            ("smollm2", True): (6, 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny10m", choices=["tiny10m", "smollm2"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--items", type=int)
    p.add_argument("--repeats", type=int)
    p.add_argument("--out", help="JSON path (default bench/results/throughput_<model>.json; '' to skip)")
    a = p.parse_args(argv)
    n, repeats = DEFAULTS[(a.model, a.quick)]
    n, repeats = a.items or n, a.repeats or repeats
    threads = C.set_threads(a.threads)
    env = C.environment(threads)
    model, tok, desc = C.load_bench_model(a.model)
    with tempfile.TemporaryDirectory() as tmp:
        mc, mmlu = C.mc_task(n), C.mmlu_task(n, tmp)
    mmlu_choice, mmlu_cont = C.prompts_for(mmlu, 5)
    mc_choice, mc_cont = C.prompts_for(mc, 0)
    workloads = [("mc_choice_and_continuation", "score_items", joint_requests(tok, mc_choice, mc_cont)),
                 ("mmlu_5shot_choice_and_continuation", "score_items", joint_requests(tok, mmlu_choice, mmlu_cont)),
                 ("mc_continuation", "score_options", mc_cont), ("mmlu_5shot_continuation", "score_options", mmlu_cont),
                 ("mmlu_5shot_letters", "next_token", mmlu_choice)]
    result: dict[str, Any] = {"benchmark": "throughput", "model": a.model, "model_desc": desc,
                              "model_info": C.model_info(model), "environment": env,
                              "workloads": [measure(model, tok, name, kind, payload, batch_size=a.batch_size,
                                                    repeats=repeats) for name, kind, payload in workloads]}
    out = a.out if a.out is not None else str(C.RESULTS_DIR / f"throughput_{a.model}.json")
    C.finish(result, out or None)
    return result


if __name__ == "__main__":
    main()
