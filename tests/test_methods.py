"""Confidence methods on a fake engine whose numbers are set by hand, so every expectation below is
computed from first principles (softmax of given log-probs, ratios of given probabilities)."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pytest

from calibench import methods
from calibench.errors import CalibenchError
from calibench.models.engine import ContinuationScore, Generation, NextToken, TokenScores
from calibench.records import make_records
from calibench.tasks import CLMDoc, FactItem, MCItem, Task


class FakeTokenizer:
    """Word-level tokenizer: each token is optional whitespace + a run of non-space characters."""

    _pattern = re.compile(r"\s*\S+|\s+")

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.inverse: list[str] = []
        self.chat_template = None

    def id(self, piece: str) -> int:
        if piece not in self.vocab:
            self.vocab[piece] = len(self.inverse)
            self.inverse.append(piece)
        return self.vocab[piece]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [self.id(p) for p in self._pattern.findall(text)]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return "".join(self.inverse[i] for i in ids)


class FakeEngine:
    """The ScoringEngine calls, answered from tables keyed by a string found in the prompt."""

    def __init__(self, tok: FakeTokenizer, *, nexts=None, options=None, gens=None, ptrue=None) -> None:
        self.tokenizer = tok
        self.nexts = nexts or {}  # key -> {token piece: prob}
        self.options = options or {}  # key -> {option text: [token logprobs]}
        self.gens = gens or {}  # key -> [(piece, prob), ...]
        self.ptrue = ptrue or {}  # key (the proposed answer) -> (P(" True"), P(" False"))
        self.calls: Counter[str] = Counter()

    @staticmethod
    def _find(table: dict, prompt: str):
        hits = [k for k in table if k in prompt]
        assert len(hits) == 1, (prompt, hits)
        return table[hits[0]]

    def next_token(self, prompts, candidates=None):
        self.calls["next_token"] += 1
        out = []
        for prompt, cand in zip(prompts, candidates, strict=True):
            dist = self._find(self.nexts, prompt)
            top = max(dist, key=dist.get)
            probs = {self.tokenizer.id(p): q for p, q in dist.items()}
            cand_lp = np.log([probs.get(c, 1e-12) for c in cand])
            out.append(NextToken(self.tokenizer.id(top), math.log(dist[top]), cand_lp))
        return out

    def score_options(self, items):
        self.calls["score_options"] += 1
        out = []
        for ctx, opts in items:
            if "Is the proposed answer true?" in ctx:
                answer = ctx.split("Proposed answer: ")[1].split("\n")[0]
                pt, pf = self.ptrue[answer]
                assert [o.strip() for o in opts] == ["True", "False"]
                out.append([ContinuationScore(np.log([pt]), False), ContinuationScore(np.log([pf]), False)])
            else:
                table = self._find(self.options, ctx)
                out.append([ContinuationScore(np.asarray(table[o.strip()], float), False) for o in opts])
        return out

    def greedy(self, prompts, *, max_new_tokens=16, stop=("\n",)):
        self.calls["greedy"] += 1
        out = []
        for prompt in prompts:
            steps = self._find(self.gens, prompt)[:max_new_tokens]
            ids = [self.tokenizer.id(p) for p, _ in steps]
            out.append(Generation(ids, np.log([q for _, q in steps]), "".join(p for p, _ in steps)))
        return out

    def score_tokens(self, texts, *, window=None, stride=None):
        self.calls["score_tokens"] += 1
        for d, text in enumerate(texts):
            targets = np.asarray(self.tokenizer.encode(text))
            n = len(targets)
            pred = np.where(np.arange(n) % 2 == 0, targets, -1)  # right on even positions
            conf = np.where(np.arange(n) % 2 == 0, 0.9, 0.3)
            yield TokenScores(np.full(n, d), np.arange(n), targets, pred, conf)


def mc_task() -> Task:
    items = [
        MCItem("q1", "What is the capital of France?", ["Lyon", "Paris", "Nice"], 1),
        MCItem("q2", "Which river flows through Cairo?", ["Nile", "Congo"], 1),
    ]
    return Task("toy-mc", "mc", items, "hash-mc")


def facts_task() -> Task:
    items = [
        FactItem("f1", "France", "capital", "The capital of [X] is [Y].", "Paris", []),
        FactItem("f2", "Utopia", "capital", "The capital of [X] is [Y].", "United States", ["USA"]),
        FactItem("f3", "Peru", "capital", "The capital of [X] is [Y].", "Lima", []),
    ]
    return Task("toy-facts", "facts", items, "hash-facts")


def test_choice_renormalises_letter_probabilities() -> None:
    tok = FakeTokenizer()
    engine = FakeEngine(tok, nexts={
        "France": {" A": 0.2, " B": 0.5, " C": 0.1, " Paris": 0.15},
        "Cairo": {" A": 0.3, " B": 0.3, " The": 0.35},
    })
    recs = methods.choice(engine, mc_task())
    r1, r2 = recs
    assert r1["probs"] == pytest.approx([0.2 / 0.8, 0.5 / 0.8, 0.1 / 0.8])
    assert (r1["pred"], r1["label"], r1["correct"]) == ("1", 1, True)
    assert r1["confidence"] == pytest.approx(0.625)
    assert r1["extra"]["letter_probs"] == pytest.approx([0.2, 0.5, 0.1])
    assert r1["extra"]["letter_mass"] == pytest.approx(0.8)
    assert r1["extra"]["top_is_letter"] is True
    # a tie goes to the first letter; only the item's own two letters are renormalised
    assert r2["probs"] == pytest.approx([0.5, 0.5])
    assert (r2["pred"], r2["correct"]) == ("0", False)
    assert r2["extra"]["top_is_letter"] is False
    make_records(recs)  # the contract accepts them


def _opt_engine() -> FakeEngine:
    return FakeEngine(FakeTokenizer(), options={
        "France": {"Lyon": [-1.0, -1.0], "Paris": [-2.5], "Nice": [-0.5, -0.5, -3.0]},
        "Cairo": {"Nile": [-0.1], "Congo": [-3.0, -0.2]},
    }, ptrue={"Lyon": (0.6, 0.2), "Nile": (0.1, 0.3)})


def test_continuation_sum_mean_min_from_one_pass() -> None:
    engine = _opt_engine()
    task = mc_task()
    session = methods.ScoringSession(engine)
    s, m, n = (methods.METHODS[k](engine, task, session=session) for k in methods.CONTINUATION_METHODS)
    assert engine.calls["score_options"] == 1  # cached: three methods, one pass

    def soft(xs):
        e = [math.exp(x) for x in xs]
        return [v / sum(e) for v in e]

    assert s[0]["probs"] == pytest.approx(soft([-2.0, -2.5, -4.0]))
    assert m[0]["probs"] == pytest.approx(soft([-1.0, -2.5, -4.0 / 3]))
    assert n[0]["probs"] == pytest.approx(soft([-1.0, -2.5, -3.0]))
    # Lyon wins under every score, the gold is Paris
    assert all(r[0]["pred"] == "0" and r[0]["correct"] is False for r in (s, m, n))
    assert s[0]["extra"]["n_tokens"] == [2, 1, 3]
    assert s[0]["extra"]["loglik"] == pytest.approx([-2.0, -2.5, -4.0])
    # item 2: sum and mean say Nile (wrong), min says Congo? min(-3,-0.2) = -3 < -0.1 -> Nile too
    assert s[1]["confidence"] == pytest.approx(1 / (1 + math.exp(-3.2 + 0.1)))
    assert m[1]["probs"][1] == pytest.approx(soft([-0.1, -1.6])[1])


def test_p_true_on_multiple_choice_uses_the_continuation_argmax() -> None:
    engine = _opt_engine()
    task = mc_task()
    session = methods.ScoringSession(engine)
    recs = methods.p_true(engine, task, session=session)
    assert [r["pred"] for r in recs] == ["Lyon", "Nile"]
    assert [r["correct"] for r in recs] == [False, False]
    assert recs[0]["confidence"] == pytest.approx(0.6 / 0.8)
    assert recs[1]["confidence"] == pytest.approx(0.1 / 0.4)
    assert recs[0]["probs"] is None
    methods.continuation_sum(engine, task, session=session)
    assert engine.calls["score_options"] == 2  # options pass once (cached) + the True/False pass


def _facts_engine() -> FakeEngine:
    tok = FakeTokenizer()
    return FakeEngine(
        tok,
        nexts={"France": {" Paris": 0.4, " Lyon": 0.3}, "Utopia": {" the": 0.5, " United": 0.2},
               "Peru": {"\n": 0.7, " Lima": 0.1}},
        gens={"France": [(" Paris", 0.5), (".", 0.9), (" It", 0.8)],
              "Utopia": [(" the", 0.5), (" U.S.A.", 0.4), (" It", 0.5)],
              "Peru": []},
        ptrue={"Paris": (0.9, 0.1), "the U.S.A": (0.2, 0.6), "": (0.5, 0.5)},
    )


def test_first_token_compares_with_the_gold_objects_first_token() -> None:
    engine = _facts_engine()
    recs = methods.first_token(engine, facts_task())
    assert [r["pred"] for r in recs] == [" Paris", " the", "\n"]
    assert [r["correct"] for r in recs] == [True, False, False]
    assert [r["confidence"] for r in recs] == pytest.approx([0.4, 0.5, 0.7])
    assert recs[1]["extra"]["gold_token"] == " United"
    assert recs[1]["extra"]["gold_prob"] == pytest.approx(0.2)
    assert recs[2]["extra"]["gold_prob"] == pytest.approx(0.1)


def test_sequence_cuts_at_sentence_end_and_matches_aliases() -> None:
    engine = _facts_engine()
    recs = methods.sequence(engine, facts_task(), options={"max_new_tokens": 8})
    assert [r["pred"] for r in recs] == ["Paris", "the U.S.A", ""]
    # "the U.S.A" normalises to "usa", the alias of "United States"
    assert [r["correct"] for r in recs] == [True, True, False]
    # the period and what follows do not count: confidence = P(" Paris") only
    assert recs[0]["confidence"] == pytest.approx(0.5)
    assert recs[1]["confidence"] == pytest.approx(0.5 * 0.4)
    assert recs[2]["confidence"] == 0.0  # an empty answer abstains
    # max_new_tokens truncates the greedy answer
    short = methods.sequence(engine, facts_task(), options={"max_new_tokens": 1})
    assert short[1]["pred"] == "the" and short[1]["correct"] is False


def test_p_true_on_facts_reuses_the_greedy_answer() -> None:
    engine = _facts_engine()
    task = facts_task()
    session = methods.ScoringSession(engine)
    seq = methods.sequence(engine, task, session=session)
    recs = methods.p_true(engine, task, session=session)
    assert engine.calls["greedy"] == 1
    assert [r["pred"] for r in recs] == [r["pred"] for r in seq]
    assert [r["correct"] for r in recs] == [True, True, False]
    assert [r["confidence"] for r in recs] == pytest.approx([0.9, 0.25, 0.5])
    assert recs[0]["extra"]["p_true"] == pytest.approx(0.9)


def test_token_records_one_per_scored_token() -> None:
    tok = FakeTokenizer()
    engine = FakeEngine(tok)
    task = Task("toy-clm", "clm", [CLMDoc("d0", "a b c"), CLMDoc("d1", "x y")], "hash-clm")
    recs = methods.token(engine, task)
    assert [r["item_id"] for r in recs] == ["d0:0", "d0:1", "d0:2", "d1:0", "d1:1"]
    assert [r["correct"] for r in recs] == [True, False, True, True, False]
    assert [r["confidence"] for r in recs] == pytest.approx([0.9, 0.3, 0.9, 0.9, 0.3])
    assert recs[1]["extra"]["target"] == tok.vocab[" b"]
    df = make_records(recs)
    assert df["probs"].isna().all()


def test_wrong_kind_unknown_method_and_resolution() -> None:
    engine = _facts_engine()
    with pytest.raises(CalibenchError, match="does not apply to task 'toy-facts'"):
        methods.choice(engine, facts_task())
    with pytest.raises(CalibenchError, match="unknown method 'nope'"):
        methods.parse_methods("choice,nope")
    mc, facts = mc_task(), facts_task()
    units = methods.resolve_methods("all", [mc, facts])
    assert [(t.name, m) for t, m in units] == [
        ("toy-mc", "choice"), ("toy-mc", "continuation-sum"), ("toy-mc", "continuation-mean"),
        ("toy-mc", "continuation-min"), ("toy-mc", "p-true"),
        ("toy-facts", "first-token"), ("toy-facts", "sequence"), ("toy-facts", "p-true"),
    ]
    # an explicit method runs where it applies; one that applies to no task is an error
    assert [(t.name, m) for t, m in methods.resolve_methods("choice", [mc, facts])] == [("toy-mc", "choice")]
    with pytest.raises(CalibenchError, match="method 'token' does not apply to any given task"):
        methods.resolve_methods("choice,token", [mc, facts])
    with pytest.raises(CalibenchError, match="unknown method option"):
        methods.choice(engine, mc, options={"max_tokens": 3})


def test_answer_helpers() -> None:
    assert methods.first_sentence(" Washington, D.C. is big") == "Washington, D.C"
    assert methods.first_sentence("Paris\nLyon") == "Paris"
    assert methods.normalize_answer("  The  Nile!") == "nile"
    assert methods.answer_matches("an apple", ["Apple"])
    assert not methods.answer_matches("", [""])
    assert not methods.answer_matches("Paris Texas", ["Paris"])


def test_letter_tokens_fall_back_to_bare_letters() -> None:
    from calibench.models.tiny import train_tokenizer

    # a tiny BPE that has "ĠA" but not "ĠE": every letter must use the same (bare) variant
    tok = train_tokenizer(["Answer: A B C D"] * 20 + ["E"], vocab_size=300)
    ids, variant = methods.answer_token_ids(tok, "ABCDE")
    assert variant == "bare"
    assert [tok.decode([i]) for i in ids] == list("ABCDE")
    ids, variant = methods.answer_token_ids(tok, "ABCD")
    assert variant == "space"
    assert [tok.decode([i]) for i in ids] == [" A", " B", " C", " D"]


def test_a_session_shares_passes_and_a_bare_call_shares_nothing() -> None:
    """No module state: passes live in the ScoringSession the caller holds, and go with it."""
    assert not [n for n in vars(methods) if n.upper() == "_CACHE" or n in ("prefetch", "clear_cache")]
    engine = _opt_engine()
    task = mc_task()
    methods.continuation_sum(engine, task)
    methods.continuation_mean(engine, task)
    assert engine.calls["score_options"] == 2  # no session: each call runs its own pass
    session = methods.ScoringSession(engine, options={"num_fewshot": 0})
    methods.continuation_sum(engine, task, session=session)
    methods.continuation_min(engine, task, session=session, options={"num_fewshot": 0})
    assert engine.calls["score_options"] == 3
    methods.continuation_sum(engine, task, session=methods.ScoringSession(engine))
    assert engine.calls["score_options"] == 4  # a new session (a new run) starts empty
    with pytest.raises(CalibenchError, match="another engine"):
        methods.continuation_sum(_opt_engine(), task, session=session)
    with pytest.raises(CalibenchError, match="tokenizer differs"):
        methods.continuation_sum(engine, task, session=session, tokenizer=FakeTokenizer())
    with pytest.raises(CalibenchError, match="options differ"):
        methods.continuation_sum(engine, task, session=session, options={"num_fewshot": 1})
