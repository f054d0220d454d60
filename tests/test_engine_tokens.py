"""The engine's tokenisation (``tokens.Tokens``) and planning (``plan.make_plan``) on their own.

A word-level tokenizer makes every expected id list readable: each token is optional whitespace
plus a run of non-space characters, so where a boundary merges is obvious.
"""

from __future__ import annotations

import re

import pytest

from calibench.errors import CalibenchError
from calibench.models.engine.plan import OptionSlot, PromptSlot, make_plan
from calibench.models.engine.tokens import Tokens, boundary
from calibench.models.engine.types import ItemRequest


class WordTokenizer:
    """Word-level tokenizer with a BOS token (id 0, "<s>") added by default, like Llama's."""

    _pattern = re.compile(r"<s>|\s*[^\s<]+|\s+")
    bos_token_id, eos_token_id = 0, None

    def __init__(self) -> None:
        self.inverse = ["<s>"]
        self.vocab = {"<s>": 0}

    def _id(self, piece: str) -> int:
        if piece not in self.vocab:
            self.vocab[piece] = len(self.inverse)
            self.inverse.append(piece)
        return self.vocab[piece]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self._id(p) for p in self._pattern.findall(text)]
        return [0, *ids] if add_special_tokens else ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return "".join(self.inverse[i] for i in ([ids] if isinstance(ids, int) else ids))

    def words(self, ids) -> list[str]:
        return [self.inverse[i] for i in ids]


@pytest.fixture
def tok() -> WordTokenizer:
    return WordTokenizer()


def test_boundary_moves_trailing_whitespace_to_the_continuation() -> None:
    assert boundary("Answer: ", "Paris") == ("Answer:", " Paris")
    assert boundary("Q\n\n", "A") == ("Q", "\n\nA")
    assert boundary("Answer:", " Paris") == ("Answer:", " Paris")


def test_pair_is_lm_evals_split_with_bos_once(tok: WordTokenizer) -> None:
    t = Tokens(tok)
    ctx, cont = t.pair("Answer: ", "Paris")
    assert tok.words(ctx) == ["<s>", "Answer:"] and tok.words(cont) == [" Paris"]
    assert tok.words(t.encode("<s>Answer:")) == ["<s>", "Answer:"]  # no second BOS
    # an empty context: the BOS stands in for it
    ctx, cont = t.pair("", "Paris is")
    assert tok.words(ctx) == ["<s>"] and tok.words(cont) == ["Paris", " is"]
    with pytest.raises(CalibenchError, match="empty continuation"):
        t.pair("", "")
    # the batched form gives the same ids, the empty context included
    items = [("Answer: ", ["Paris", "Lima"]), ("", ["Tokyo"]), ("Q:", [" yes"])]
    assert [[(p.context, p.continuation) for p in ps] for ps in t.pairs(items)] == [
        [t.pair(c, o) for o in opts] for c, opts in items
    ]


def test_follow_keeps_the_prompt_as_given_then_falls_back(tok: WordTokenizer) -> None:
    t = Tokens(tok, lm_eval=False)
    # the plain case: what follows the prompt's own tokens
    assert tok.words(t.follow("Answer:", " A")) == [" A"]
    # the prompt ends in whitespace that the continuation would merge with: the lm-eval split
    assert tok.words(t.follow("turn\n", "A")) == ["\nA"]
    # the boundary merges into the prompt's last word even after the split: the continuation alone
    assert tok.words(t.follow("Answer", "s")) == ["s"]
    # engine encoding (BOS) gives the same continuation ids
    assert t.follow("Answer:", " A") == Tokens(tok).follow("Answer:", " A")


def test_encode_many_without_a_batch_call_encodes_one_by_one(tok: WordTokenizer) -> None:
    assert Tokens(tok).encode_many(["a b", "<s>c"]) == [tok.encode("a b"), tok.encode("<s>c", add_special_tokens=False)]


def test_plan_routes_by_window_and_names_the_slots(tok: WordTokenizer) -> None:
    t = Tokens(tok)
    short, long = "one two", " ".join(["w"] * 12)
    requests = [
        ItemRequest(prompts=[short, long], candidates=[[1], [2, 3]], option_sets=[(short, [" x", " y z"])]),
        ItemRequest(option_sets=[(long, [" x"])]),
    ]
    plan = make_plan(requests, t, packed=True, window=8, max_length=10)
    assert plan.n_requests == 5 and plan.tree_items == [0]
    seqs = plan.tree_seqs[0]
    assert [s.slot for s in seqs] == [PromptSlot(0, 0, (1,)), OptionSlot(0, 0, 0), OptionSlot(0, 0, 1)]
    assert seqs[0].queries == [2] and seqs[0].targets is None  # <s> one two: read after "two"
    assert seqs[2].queries == [2, 3] and tok.words(seqs[2].targets) == [" y", " z"]
    # the 13-token prompt goes plain, cut to max_length from the left
    (p,) = plan.plain_prompts
    assert p.slot == PromptSlot(0, 1, (2, 3)) and len(p.ids) == 10 and p.truncated == 3
    assert [q.slot for q in plan.plain_pairs] == [OptionSlot(1, 0, 0)]
    everything_plain = make_plan(requests, t, packed=False, window=8, max_length=10)
    assert not everything_plain.tree_items and len(everything_plain.plain_pairs) == 3
    with pytest.raises(CalibenchError, match="candidate lists"):
        make_plan([ItemRequest(prompts=["a"], candidates=[[1], [2]])], t, packed=True, window=8, max_length=10)
