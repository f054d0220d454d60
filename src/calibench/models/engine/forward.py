"""One model forward, the way every path of the engine calls it: padding, masks, the KV cache.

The cache goes in and comes out under the name the installed transformers uses: ``cache`` (5.x,
where ``past_key_values`` is deprecated and warns), else ``past_key_values`` for models whose
``forward`` has no ``cache`` argument.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np


def torch_log_softmax64(logits: Any) -> Any:
    """Log-softmax in float64 (sums over many tokens stay stable)."""
    import torch

    return torch.log_softmax(logits.to(torch.float64), dim=-1)


class Forward:
    """A model with its device and pad id; counts the real tokens it runs (for tokens/s)."""

    def __init__(self, model: Any, device: Any, pad_id: int) -> None:
        self.model = model
        self.device = device
        self.pad_id = pad_id
        params = inspect.signature(model.forward).parameters
        self.has_keep = "logits_to_keep" in params
        self.has_pos = "position_ids" in params
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.tokens = 0  # real tokens through the model so far

    def tensor(self, rows: list[list[int]], *, left: bool) -> tuple[Any, Any]:
        """Pad rows (left or right) into input ids and an attention mask."""
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if not r:
                continue
            if left:
                ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r) :] = 1
            else:
                ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
                mask[i, : len(r)] = 1
        return ids.to(self.device), mask.to(self.device)

    def call(
        self,
        ids: Any,
        mask: Any,
        *,
        position_ids: Any = None,
        keep: int = 0,
        cache: Any = None,
        use_cache: bool = False,
        real_tokens: int | None = None,
    ) -> tuple[Any, Any]:
        """One model forward -> (the cache it returns, or None; logits).

        ``keep`` > 0 asks for logits of the last ``keep`` positions only.
        """
        self.tokens += int(real_tokens if real_tokens is not None else mask[:, -ids.shape[1] :].sum())
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "use_cache": use_cache}
        if position_ids is not None and self.has_pos:
            kwargs["position_ids"] = position_ids
        if cache is not None:
            kwargs[self.cache_arg] = cache
        if keep and self.has_keep:
            kwargs["logits_to_keep"] = keep
        out = self.model(**kwargs)
        logits = out.logits
        if keep and logits.shape[1] > keep:
            logits = logits[:, -keep:]
        new_cache = out.get(self.cache_arg) if use_cache else None
        return new_cache, logits

    def left(self, rows: list[list[int]], keep: int, *, use_cache: bool = False) -> tuple[Any, Any, Any]:
        """Left-padded forward; returns (cache, logits of the last ``keep`` positions, mask)."""
        ids, mask = self.tensor(rows, left=True)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache, logits = self.call(ids, mask, position_ids=pos, keep=keep, use_cache=use_cache)
        return cache, logits, mask

    def additive_mask(self, allowed: np.ndarray) -> Any:
        """[B, Q, K] booleans -> the [B, 1, Q, K] float mask (0 or the dtype's min) attention adds.

        Float, not bool: eager attention adds the mask to the scores, and sdpa accepts either.
        """
        import torch

        dtype = next(self.model.parameters()).dtype
        mask = torch.zeros((allowed.shape[0], 1, *allowed.shape[1:]), dtype=dtype)
        mask.masked_fill_(~torch.from_numpy(allowed)[:, None], torch.finfo(dtype).min)
        return mask.to(self.device)


def score_positions(logits_rows: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """float64 log P(target) and argmax==target for stacked [N, V] logits."""
    import torch

    lp = torch.log_softmax(logits_rows.to(torch.float64), dim=-1)
    tok = lp.gather(1, targets[:, None]).squeeze(1)
    greedy = logits_rows.argmax(dim=-1) == targets
    return tok.cpu().numpy(), greedy.cpu().numpy()
