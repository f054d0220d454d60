"""Planning a ``score_items`` call: tokenise every request, route it to the packed or the plain path.

Each scored sequence carries the slot its answer fills (``PromptSlot`` for a next-token prompt,
``OptionSlot`` for one option of an option set), so answers go back where they belong by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calibench.errors import CalibenchError
from calibench.models.engine.tokens import Pair, Tokens
from calibench.models.engine.types import ContinuationScore, ItemRequest, NextToken


@dataclass(frozen=True)
class PromptSlot:
    """The answer to prompt ``prompt`` of item ``item``, read at ``candidates``."""

    item: int
    prompt: int
    candidates: tuple[int, ...]


@dataclass(frozen=True)
class OptionSlot:
    """The score of option ``option`` of option set ``option_set`` of item ``item``."""

    item: int
    option_set: int
    option: int


@dataclass
class TreeSeq:
    """A model input for the packed path and the positions whose next-token distribution it needs."""

    ids: list[int]
    queries: list[int]  # positions in ids
    targets: list[int] | None  # the token after each query (a continuation), None for a next-token prompt
    slot: PromptSlot | OptionSlot

    @property
    def head(self) -> list[int]:
        """The tokens before the first scored position: what may be shared through a header."""
        return self.ids[: min(self.queries)]


@dataclass
class PlainPrompt:
    """A next-token prompt on the plain path, already cut to the context window."""

    slot: PromptSlot
    ids: list[int]
    truncated: int


@dataclass
class PlainPair:
    """A (context, continuation) pair on the plain path (``plain.full_batch`` cuts it)."""

    slot: OptionSlot
    pair: Pair


def next_token(lp: Any, candidates: Sequence[int], truncated: int) -> NextToken:
    """Reduce one float64 log-softmax row to what the methods use."""
    import torch

    top_lp, top_id = lp.max(dim=-1)
    cand = (
        lp[torch.tensor(list(candidates), dtype=torch.long, device=lp.device)].cpu().numpy()
        if len(candidates)
        else np.zeros(0, dtype=np.float64)
    )
    return NextToken(int(top_id), float(top_lp), cand, truncated)


@dataclass
class Plan:
    """Where each request of a ``score_items`` call goes, and the answers filled in so far."""

    next_tokens: list[list[NextToken | None]]
    options: list[list[list[ContinuationScore | None]]]
    n_requests: int
    tree_items: list[int] = field(default_factory=list)  # items with packed sequences, in input order
    tree_seqs: dict[int, list[TreeSeq]] = field(default_factory=dict)
    plain_prompts: list[PlainPrompt] = field(default_factory=list)
    plain_pairs: list[PlainPair] = field(default_factory=list)

    @classmethod
    def empty(cls, requests: Sequence[ItemRequest]) -> Plan:
        return cls(
            next_tokens=[[None] * len(r.prompts) for r in requests],
            options=[[[None] * len(opts) for _ctx, opts in r.option_sets] for r in requests],
            n_requests=sum(len(r.prompts) + sum(len(o) for _c, o in r.option_sets) for r in requests),
        )

    def put_next(self, slot: PromptSlot, answer: NextToken) -> None:
        self.next_tokens[slot.item][slot.prompt] = answer

    def put_option(self, slot: OptionSlot, answer: ContinuationScore) -> None:
        self.options[slot.item][slot.option_set][slot.option] = answer

    def fill(self, seqs: Sequence[TreeSeq], answers: Sequence[Any]) -> None:
        """Answers of the packed path: a log-softmax row per prompt, (log-probs, greedy) per option."""
        for s, got in zip(seqs, answers, strict=True):
            if isinstance(s.slot, PromptSlot):
                self.put_next(s.slot, next_token(got[0], s.slot.candidates, 0))
            else:
                lp, greedy = got
                self.put_option(s.slot, ContinuationScore(lp, bool(greedy.all()), 0))


def make_plan(
    requests: Sequence[ItemRequest], tokens: Tokens, *, packed: bool, window: int, max_length: int
) -> Plan:
    """Tokenise every request and route it: packed if ``packed`` and it fits ``window``, else plain."""
    prefix = tokens.prefix_token_id
    prompts = [p for r in requests for p in r.prompts]
    sets = [s for r in requests for s in r.option_sets]
    prompt_ids = tokens.encode_many(prompts) if prompts else []
    pair_sets = tokens.pairs(sets) if sets else []
    for pairs in pair_sets:
        for p in pairs:
            if not p.continuation:
                raise CalibenchError("a continuation encodes to zero tokens; nothing to score")
            if len(p.continuation) > max_length:
                raise CalibenchError(
                    f"a continuation of {len(p.continuation)} tokens exceeds max_length {max_length}"
                )
    plan = Plan.empty(requests)
    pi = si = 0
    for i, r in enumerate(requests):
        if len(r.candidates) not in (0, len(r.prompts)):
            raise CalibenchError(f"{len(r.candidates)} candidate lists for {len(r.prompts)} prompts")
        seqs: list[TreeSeq] = []
        for j, _ in enumerate(r.prompts):
            ids = prompt_ids[pi] or [prefix]
            pi += 1
            slot = PromptSlot(i, j, tuple(r.candidates[j]) if r.candidates else ())
            if packed and len(ids) <= window:
                seqs.append(TreeSeq(ids, [len(ids) - 1], None, slot))
            else:
                plan.plain_prompts.append(PlainPrompt(slot, ids[-max_length:], max(0, len(ids) - max_length)))
        for j, _ in enumerate(r.option_sets):
            for k, p in enumerate(pair_sets[si]):
                whole = p.context + p.continuation
                slot = OptionSlot(i, j, k)
                if packed and len(whole) <= window + 1:
                    first = len(p.context) - 1
                    seqs.append(TreeSeq(whole[:-1], list(range(first, len(whole) - 1)), p.continuation, slot))
                else:
                    plan.plain_pairs.append(PlainPair(slot, p))
            si += 1
        if seqs:
            plan.tree_items.append(i)
            plan.tree_seqs[i] = seqs
    return plan
