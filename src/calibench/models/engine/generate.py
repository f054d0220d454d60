"""Greedy decoding with a KV cache; each token's log-prob from the raw (unprocessed) logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from calibench.models.engine.forward import Forward
from calibench.models.engine.types import Generation


def greedy_batch(
    fwd: Forward, tokenizer: Any, rows: list[list[int]], max_new: int, stop: list[str], eos: int | None
) -> list[tuple[list[int], list[float]]]:
    """Decode a left-padded batch until every row hit EOS, a stop string, or ``max_new`` tokens."""
    import torch

    cache, logits, mask = fwd.left(rows, 1, use_cache=True)
    pos = mask.sum(-1)  # next position id per row
    gen_ids: list[list[int]] = [[] for _ in rows]
    gen_lps: list[list[float]] = [[] for _ in rows]
    done = [False] * len(rows)
    for step in range(max_new):
        lp = torch.log_softmax(logits[:, -1].to(torch.float64), dim=-1)
        top_lp, top_id = lp.max(dim=-1)
        for b in range(len(rows)):
            if done[b]:
                continue
            tok = int(top_id[b])
            if eos is not None and tok == eos:
                done[b] = True
                continue
            gen_ids[b].append(tok)
            gen_lps[b].append(float(top_lp[b]))
            if stop and any(s in tokenizer.decode(gen_ids[b]) for s in stop):
                done[b] = True
        if all(done) or step == max_new - 1:
            break
        ids = top_id[:, None].to(fwd.device)
        mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
        cache, logits = fwd.call(ids, mask, position_ids=pos[:, None], cache=cache, use_cache=True)
        pos = pos + 1
    return list(zip(gen_ids, gen_lps, strict=True))


def finish_generation(tokenizer: Any, ids: list[int], lps: list[float], stop: Sequence[str], truncated: int) -> Generation:
    """Cut at the first stop string; drop trailing tokens that lie wholly at/after the stop."""
    text = tokenizer.decode(ids)
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    if cut >= 0:
        text = text[:cut]
        n = len(ids)
        while n > 0 and len(tokenizer.decode(ids[: n - 1])) >= cut:
            n -= 1
        ids, lps = ids[:n], lps[:n]
    return Generation(list(ids), np.asarray(lps, dtype=np.float64), text, truncated)
