"""Hidden states at a prompt's last token, for internal-confidence probes."""

from __future__ import annotations

from typing import Any

import numpy as np

from calibench.models.engine.forward import Forward


def last_hidden(fwd: Forward, rows: list[list[int]], layer: int) -> np.ndarray:
    """Hidden state of layer ``layer`` (0 = embeddings, -1 = last) at each row's last token, float64."""
    import torch

    ids, mask = fwd.tensor(rows, left=True)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    fwd.tokens += int(mask.sum())
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "output_hidden_states": True}
    if fwd.has_pos:
        kwargs["position_ids"] = pos
    out = fwd.model(**kwargs)
    return out.hidden_states[layer][:, -1].to(torch.float64).cpu().numpy()
