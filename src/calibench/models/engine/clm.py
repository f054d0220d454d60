"""CLM token scoring: every token of every text once, in sliding windows, streamed one batch at a time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from calibench.models.engine.forward import Forward
from calibench.models.engine.tokens import Tokens
from calibench.models.engine.types import TokenScores


@dataclass
class Window:
    """One model input of a document and the targets it scores."""

    doc: int  # index of the document in the input iterable
    ids: list[int]  # input tokens
    targets: list[int]  # the last ``len(targets)`` next tokens, scored here
    first: int  # position of the first scored target in the document's tokens


def windows(texts: Iterable[str], tokens: Tokens, *, window: int, stride: int) -> Iterator[Window]:
    """Each document is ``[prefix token] + enc(text)``; the first window scores up to ``window``
    targets, every later one moves by ``stride`` and scores its last ``stride`` targets."""
    for d, text in enumerate(texts):
        toks = tokens.bare(text)
        seq = [tokens.prefix_token_id, *toks]
        n = len(toks)
        end = 0  # number of targets scored so far
        while end < n:
            new_end = min(n, window if end == 0 else end + stride)
            start = max(0, new_end - window)
            yield Window(d, seq[start:new_end], toks[end:new_end], end)
            end = new_end


def token_batch(fwd: Forward, batch: list[Window]) -> TokenScores:
    """Forward a batch of windows; reduce each scored position to argmax, max prob, log P(target).

    Rows are reduced one window at a time (max and logsumexp, no full log-softmax copy), so the
    extra memory beyond the model's logits is one window's worth.
    """
    import torch

    keep = max(len(w.targets) for w in batch)
    _, logits, _ = fwd.left([w.ids for w in batch], keep)
    preds, confs, tgt_lps, targets = [], [], [], []
    for i, w in enumerate(batch):
        rows = logits[i, keep - len(w.targets) :].float()
        tgt = torch.tensor(w.targets, dtype=torch.long, device=rows.device)
        lse = torch.logsumexp(rows, dim=-1)
        top, pred = rows.max(dim=-1)
        preds.append(pred)
        confs.append(torch.exp(top - lse))
        tgt_lps.append(rows.gather(1, tgt[:, None]).squeeze(1) - lse)
        targets.append(tgt)
    doc = np.concatenate([np.full(len(w.targets), w.doc, dtype=np.int64) for w in batch])
    pos = np.concatenate([np.arange(w.first, w.first + len(w.targets), dtype=np.int64) for w in batch])
    return TokenScores(
        doc_index=doc,
        position=pos,
        target=torch.cat(targets).cpu().numpy(),
        pred=torch.cat(preds).cpu().numpy(),
        confidence=torch.cat(confs).double().cpu().numpy(),
        target_logprob=torch.cat(tgt_lps).double().cpu().numpy(),
    )
