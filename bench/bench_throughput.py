"""Scoring throughput of the engine vs bare ``model(input_ids)`` forwards of the same batch shapes.

    .venv/bin/python bench/bench_throughput.py [--model tiny10m|smollm2] [--quick] [--threads 1]
        [--batch-size 8] [--items N] [--repeats R] [--out bench/results/throughput_<model>.json]

For ``score_options`` (continuation scoring, on the 4-option task and the MMLU-format 5-shot task)
and ``next_token`` (the choice method's letter pass on the 5-shot prompts), the forwards the engine
runs are recorded with a forward pre-hook; the bare baseline replays the same batches: the same
left-padded context tensors (``model(input_ids, attention_mask)``, with ``use_cache=True`` where the
engine needed the cache), the cache expanded over the option rows with ``reorder_cache``, then the
same right-padded option tensors. The bare side has no tokenising, sorting, log-softmax or record
building, so the ratio engine/bare is the engine's overhead; it can exceed 1 because the engine asks
for logits of the scored positions only (``logits_to_keep``), while a bare forward projects every
position onto the vocabulary. Throughput counts real (unpadded) tokens passed through the model.
Also reported: lm-eval-style scoring (every option its own full sequence, ``shared_prefix=False``).
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
    """Counts the forwards (shapes, real tokens) the engine makes, via a forward pre-hook."""

    def __init__(self, model: Any) -> None:
        self.calls: list[tuple[tuple[int, ...], int]] = []
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        # with a cache the mask covers cached + new columns; only the new ones pass through the model
        real = int(ids.numel()) if mask is None else int(mask[:, -ids.shape[1] :].sum())
        self.calls.append((tuple(ids.shape), real))

    def close(self) -> None:
        self.handle.remove()


def option_batches(engine: Any, items: list[tuple[str, list[str]]]) -> list[tuple[Any, ...]]:
    """The tensors ``score_options`` feeds the model, rebuilt batch by batch (same sort, padding, rows)."""
    import torch

    from calibench.models.engine import _chunks, _length_order

    tokd = engine._encode_items(items)
    order = _length_order([len(p[0].context) for p in tokd])
    batches = []
    for chunk in _chunks(order, engine.batch_size):
        ids, mask = engine._tensor([tokd[i][0].context for i in chunk], left=True)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        rows = [(j, p.continuation[:-1]) for j, i in enumerate(chunk) for p in tokd[i] if len(p.continuation) > 1]
        if rows:
            index = torch.tensor([j for j, _ in rows], dtype=torch.long)
            oids, omask = engine._tensor([r for _, r in rows], left=False)
            start = mask.sum(-1).index_select(0, index)  # position of the first option token per row
            opos = start[:, None] + torch.arange(oids.shape[1])[None, :]
            batches.append((ids, mask, pos, index, oids, omask, opos))
        else:
            batches.append((ids, mask, pos, None, None, None, None))
    return batches


def prompt_batches(engine: Any, prompts: list[str]) -> list[tuple[Any, Any, Any]]:
    """The tensors ``next_token`` feeds the model."""
    from calibench.models.engine import _chunks, _length_order

    enc = [ids[-engine.max_length :] for ids in engine.encode_many(prompts)]
    out = []
    for chunk in _chunks(_length_order([len(e) for e in enc]), engine.batch_size):
        ids, mask = engine._tensor([enc[i] for i in chunk], left=True)
        out.append((ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)))
    return out


def bare_options(model: Any, batches: list[tuple[Any, ...]]) -> None:
    import torch

    with torch.inference_mode():
        for ids, mask, pos, index, oids, omask, opos in batches:
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=index is not None)
            if index is None:
                continue
            cache = out.past_key_values
            cache.reorder_cache(index)
            model(input_ids=oids, attention_mask=torch.cat([mask.index_select(0, index), omask], 1),
                  position_ids=opos, past_key_values=cache, use_cache=True)


def bare_prompts(model: Any, batches: list[tuple[Any, Any, Any]]) -> None:
    import torch

    with torch.inference_mode():
        for ids, mask, pos in batches:
            model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)


def measure(model: Any, tok: Any, name: str, kind: str, payload: list, *, batch_size: int,
            repeats: int) -> dict[str, Any]:
    """Engine vs bare (and vs full per-option scoring) on one workload."""
    from calibench.models.engine import ScoringEngine

    engine = ScoringEngine(model, tok, batch_size=batch_size, progress=False)
    run = (lambda: engine.score_options(payload)) if kind == "score_options" else (lambda: engine.next_token(payload))
    run()  # warm-up
    log = ForwardLog(model)
    run()
    log.close()
    batches = option_batches(engine, payload) if kind == "score_options" else prompt_batches(engine, payload)
    replay = (lambda: bare_options(model, batches)) if kind == "score_options" else (lambda: bare_prompts(model, batches))
    log_bare = ForwardLog(model)
    replay()
    log_bare.close()
    tokens = sum(r for _, r in log.calls)
    t_eng, t_bare = float("inf"), float("inf")
    for _ in range(max(1, repeats)):  # interleaved
        t_eng = min(t_eng, C.best_of(run, 1)[0])
        t_bare = min(t_bare, C.best_of(replay, 1)[0])
    out: dict[str, Any] = {
        "workload": name, "engine_call": kind, "items": len(payload), "batch_size": batch_size,
        "forward_calls": len(log.calls), "model_tokens": tokens,
        "shapes_match": [s for s, _ in log.calls] == [s for s, _ in log_bare.calls]
        and tokens == sum(r for _, r in log_bare.calls),
        "batch_shapes": [list(s) for s, _ in log.calls],
        "engine_s": round(t_eng, 4), "bare_s": round(t_bare, 4),
        "engine_tok_per_s": round(tokens / t_eng), "bare_tok_per_s": round(tokens / t_bare),
        "engine_vs_bare": round(t_bare / t_eng, 3), "target_0.8": t_bare / t_eng >= TARGET,
    }
    if kind == "score_options":
        full = ScoringEngine(model, tok, batch_size=batch_size, progress=False, shared_prefix=False)
        full.score_options(payload[:batch_size])
        t_full = C.best_of(lambda: full.score_options(payload), repeats)[0]
        out["full_per_option_s"] = round(t_full, 4)
        out["speedup_shared_vs_full"] = round(t_full / t_eng, 2)
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
    _, mc_cont = C.prompts_for(mc, 0)
    mmlu_choice, mmlu_cont = C.prompts_for(mmlu, 5)
    workloads = [("mc_continuation", "score_options", mc_cont), ("mmlu_5shot_continuation", "score_options", mmlu_cont),
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
