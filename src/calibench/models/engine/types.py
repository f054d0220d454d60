"""What the engine is asked (``ItemRequest``) and what it answers: plain dataclasses, no torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class ContinuationScore:
    """Per-token log-probabilities of one continuation given its context."""

    token_logprobs: np.ndarray  # float64 log P of each continuation token given everything before it
    is_greedy: bool  # every continuation token is the argmax (lm-eval's is_greedy)
    truncated: int = 0  # context tokens dropped from the left to fit the context window

    @property
    def n_tokens(self) -> int:
        return int(self.token_logprobs.shape[0])

    @property
    def sum(self) -> float:
        return float(self.token_logprobs.sum())

    @property
    def mean(self) -> float:
        return float(self.token_logprobs.mean()) if self.n_tokens else float("nan")

    @property
    def min(self) -> float:
        return float(self.token_logprobs.min()) if self.n_tokens else float("nan")


@dataclass
class NextToken:
    """The next-token distribution after a prompt, reduced to what methods use."""

    top_id: int  # argmax over the full vocabulary
    top_logprob: float
    candidate_logprobs: np.ndarray  # full-vocab log-probs of the requested candidate ids (may be empty)
    truncated: int = 0


@dataclass
class Generation:
    """A greedy continuation, cut before the first stop string, with its token log-probs."""

    token_ids: list[int]
    token_logprobs: np.ndarray
    text: str
    truncated: int = 0


@dataclass
class TokenScores:
    """One batch of scored CLM positions (streamed; concatenate or write out per batch)."""

    doc_index: np.ndarray  # index of the document in the input iterable
    position: np.ndarray  # index of the target token within the document's tokens
    target: np.ndarray  # the actual next token
    pred: np.ndarray  # argmax token
    confidence: np.ndarray  # max softmax probability
    target_logprob: np.ndarray | None = None  # log P(target); extra, for perplexity

    def __len__(self) -> int:
        return int(self.doc_index.shape[0])


@dataclass
class ItemRequest:
    """What one item needs: next-token prompts (with candidate ids each) and (context, options) sets.

    Requests of one item are scored together, so the prefixes they share run once.
    """

    prompts: Sequence[str] = ()
    candidates: Sequence[Sequence[int]] = ()  # one list per prompt, or empty
    option_sets: Sequence[tuple[str, Sequence[str]]] = ()


@dataclass
class ItemScores:
    """``ItemRequest``'s answers, in its order."""

    next_tokens: list[NextToken]
    options: list[list[ContinuationScore]]
