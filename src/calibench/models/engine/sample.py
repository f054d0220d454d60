"""Seeded temperature sampling with a KV cache: the draws depend on the seed, never on the batch.

Each sampled sequence owns a numpy random stream seeded by (its prompt's seed, its sample index), and
a token is drawn by inverting the CDF of the float64 tempered distribution on the CPU with one
uniform from that stream. So a sample is the same whatever else shares its batch (batch size, order,
other prompts) and the random numbers are the same on CPU and GPU (the logits themselves may differ in
the last bits between devices). Each token's log-prob is taken from the raw, untempered logits, as in
greedy decoding, so a sequence's probability is the model's, not the sampler's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calibench.models.engine.forward import Forward


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of sample ``index`` of a prompt whose seed is ``seed``."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, int(index)])


def draw(logprobs: np.ndarray, temperature: float, u: float) -> int:
    """Inverse-CDF draw from softmax(logprobs / temperature) with one uniform ``u`` in [0, 1)."""
    z = logprobs / temperature
    p = np.exp(z - z.max())
    cdf = np.cumsum(p)
    return int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1))


def sample_batch(
    fwd: Forward,
    tokenizer: Any,
    rows: list[list[int]],
    rngs: list[np.random.Generator],
    temperature: float,
    max_new: int,
    stop: list[str],
    eos: int | None,
) -> list[tuple[list[int], list[float]]]:
    """Sample a left-padded batch (one stream per row) until EOS, a stop string, or ``max_new`` tokens."""
    import torch

    cache, logits, mask = fwd.left(rows, 1, use_cache=True)
    pos = mask.sum(-1)
    gen_ids: list[list[int]] = [[] for _ in rows]
    gen_lps: list[list[float]] = [[] for _ in rows]
    done = [False] * len(rows)
    for step in range(max_new):
        lp = torch.log_softmax(logits[:, -1].to(torch.float64), dim=-1).cpu().numpy()
        picks = []
        for b in range(len(rows)):
            u = rngs[b].random()  # drawn every step, finished or not: a row's stream never depends on others
            tok = draw(lp[b], temperature, u)
            picks.append(tok)
            if done[b]:
                continue
            if eos is not None and tok == eos:
                done[b] = True
                continue
            gen_ids[b].append(tok)
            gen_lps[b].append(float(lp[b, tok]))
            if stop and any(s in tokenizer.decode(gen_ids[b]) for s in stop):
                done[b] = True
        if all(done) or step == max_new - 1:
            break
        ids = torch.tensor(picks, dtype=torch.long)[:, None].to(fwd.device)
        mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
        cache, logits = fwd.call(ids, mask, position_ids=pos[:, None], cache=cache, use_cache=True)
        pos = pos + 1
    return list(zip(gen_ids, gen_lps, strict=True))
