"""The plain path, lm-eval's way: each request its own left-truncated sequence, length-sorted batches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calibench.models.engine.batching import Progress, chunks, length_order
from calibench.models.engine.forward import Forward, score_positions, torch_log_softmax64
from calibench.models.engine.plan import Plan, next_token
from calibench.models.engine.tokens import Pair
from calibench.models.engine.types import ContinuationScore


def run_plain(fwd: Forward, plan: Plan, bar: Progress, *, batch_size: int, max_length: int) -> None:
    """Score the plan's plain prompts, then its plain pairs, filling their slots."""
    prompts = plan.plain_prompts
    for chunk in chunks([prompts[j] for j in length_order([len(p.ids) for p in prompts])], batch_size):
        _, logits, _ = fwd.left([p.ids for p in chunk], 1)
        lp = torch_log_softmax64(logits[:, -1])
        for b, p in enumerate(chunk):
            plan.put_next(p.slot, next_token(lp[b], p.slot.candidates, p.truncated))
        bar.update(len(chunk))
    pairs = plan.plain_pairs
    lengths = [len(p.pair.context) + len(p.pair.continuation) for p in pairs]
    for chunk in chunks([pairs[j] for j in length_order(lengths)], batch_size):
        scores = full_batch(fwd, [p.pair for p in chunk], max_length=max_length)
        for p, s in zip(chunk, scores, strict=True):
            plan.put_option(p.slot, s)
        bar.update(len(chunk))


def full_batch(fwd: Forward, pairs: Sequence[Pair], *, max_length: int) -> list[ContinuationScore]:
    """Score each (context, continuation) pair with its own sequence, as lm-eval does.

    The model input is context + continuation, left-truncated to ``max_length + 1``, last token dropped.
    """
    import torch

    L = max_length
    rows, truncs = [], []
    for p in pairs:
        whole = p.context + p.continuation
        truncs.append(max(0, len(whole) - (L + 1)))
        rows.append(whole[-(L + 1) :][:-1])
    keep = max(len(p.continuation) for p in pairs)
    _, logits, _ = fwd.left(rows, keep)
    sel, tgt, bounds = [], [], []
    for b, p in enumerate(pairs):
        c = len(p.continuation)
        sel.append(logits[b, keep - c :])
        tgt.extend(p.continuation)
        bounds.append(c)
    lp, greedy = score_positions(torch.cat(sel), torch.tensor(tgt, device=fwd.device))
    return split_scores(lp, greedy, bounds, truncs)


def split_scores(
    lp: np.ndarray, greedy: np.ndarray, bounds: list[int], truncs: list[int]
) -> list[ContinuationScore]:
    """Cut flat per-token arrays back into one ContinuationScore per request."""
    out, start = [], 0
    for c, t in zip(bounds, truncs, strict=True):
        out.append(ContinuationScore(lp[start : start + c].copy(), bool(greedy[start : start + c].all()), t))
        start += c
    return out
