"""The confidence families beyond token probabilities, on a stub engine whose samples, stated confidences
and hidden states are set by hand; every expected number is computed here from those inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from calibench import methods
from calibench.errors import CalibenchError
from calibench.models.engine import ContinuationScore, Generation
from calibench.records import make_records
from calibench.tasks import FactItem, Task
from calibench.validity import validity_table, warnings
from test_methods import FakeEngine, FakeTokenizer, facts_task, mc_task


class FamilyEngine(FakeEngine):
    """FakeEngine plus ``sample`` (known samples per prompt key), stated confidences and hidden states."""

    def __init__(self, tok, *, samples=None, verbal=None, hidden=None, ab=None, **kw) -> None:
        super().__init__(tok, **kw)
        self.samples = samples or {}  # key -> [[(piece, prob), ...] per sample]
        self.verbal = verbal or {}  # key -> generated text after a verbalized prompt
        self.hidden = hidden or {}  # key -> vector
        self.ab = ab or {}  # proposed answer -> (P(" (A)"), P(" (B)"))
        self.prompts: list[str] = []
        self.sample_args: dict = {}

    def _gen(self, steps):
        ids = [self.tokenizer.id(p) for p, _ in steps]
        return Generation(ids, np.log([q for _, q in steps]) if steps else np.zeros(0), "".join(p for p, _ in steps))

    def sample(self, prompts, *, seeds, n, temperature, max_new_tokens, stop):
        self.calls["sample"] += 1
        self.sample_args = {"n": n, "temperature": temperature, "seeds": list(seeds)}
        return [[self._gen(s) for s in self._find(self.samples, p)[:n]] for p in prompts]

    def greedy(self, prompts, *, max_new_tokens=16, stop=("\n",)):
        if "onfidence" in prompts[0]:
            self.calls["verbal"] += 1
            self.prompts += list(prompts)
            return [Generation([], np.zeros(0), self._find(self.verbal, p)) for p in prompts]
        return super().greedy(prompts, max_new_tokens=max_new_tokens, stop=stop)

    def score_options(self, items):
        if "Possible Answer:" in items[0][0]:
            self.prompts += [c for c, _ in items]
            out = []
            for ctx, opts in items:
                answer = ctx.rsplit("Possible Answer: ", 1)[1].split("\n")[0]
                pa, pb = self.ab[answer]
                assert [o.strip() for o in opts] == ["(A)", "(B)"]
                out.append([ContinuationScore(np.log([pa]), False),
                            ContinuationScore(np.log([pb]), False)])
            return out
        return super().score_options(items)

    def hidden_states(self, prompts, *, layer):
        self.calls["hidden"] += 1
        return np.stack([self._find(self.hidden, p) for p in prompts])

    def num_layers(self):
        return 4


def _facts_engine(**kw) -> FamilyEngine:
    return FamilyEngine(
        FakeTokenizer(),
        gens={"France": [(" Paris", 0.5), (".", 0.9)], "Utopia": [(" the", 0.5), (" U.S.A.", 0.4)], "Peru": []},
        samples={
            "France": [[(" Paris", 0.5)], [(" Paris.", 0.5)], [(" Lyon", 0.2)], [(" paris", 0.1)]],
            "Utopia": [[(" United", 0.5), (" States", 0.6)], [(" USA", 0.2)], [(" Canada", 0.1)],
                       [(" the", 0.5), (" U.S.A.", 0.4)]],
            "Peru": [[(" Lima", 0.3)], [(" Lima", 0.3)], [(" Cusco", 0.3)], []],
        },
        **kw,
    )


# ---------------------------------------------------------------------------------------------- verbalized


def test_verbalized_parsing_good_malformed_and_out_of_range() -> None:
    pv = methods.parse_value
    assert pv(" 85", "numeric").value == pytest.approx(0.85)
    assert pv("90%.", "numeric").value == pytest.approx(0.90)
    assert pv("0.8", "numeric").value == pytest.approx(0.008)  # read on the asked 0-100 scale
    assert pv("100", "numeric").value == 1.0 and pv("0", "numeric").value == 0.0
    assert pv("150", "numeric") == methods.Stated(None, "out of range")
    assert pv("-5", "numeric") == methods.Stated(None, "out of range")
    assert pv("high", "numeric") == methods.Stated(None, "not a number")
    assert pv("", "numeric").value is None
    assert pv("Highly likely.", "linguistic").value == methods.LINGUISTIC["highly likely"]
    assert pv("probably not", "linguistic").value == 0.25  # the longer phrase wins over "probably"
    assert pv("probably", "linguistic").value == 0.70
    assert pv("likelyhood", "linguistic").value is None  # no word-prefix matches
    assert pv("80", "linguistic") == methods.Stated(None, "not on the scale")
    # after the label, a stated value need not come first: one percentage, or one expression, is read
    assert pv("I am 85% sure", "numeric").value == pytest.approx(0.85)
    assert pv("I am 85 percent sure", "numeric").value == pytest.approx(0.85)
    assert pv("It was built in 1889", "numeric") == methods.Stated(None, "not a number")  # a bare number: no
    assert pv("between 60% and 80%", "numeric") == methods.Stated(None, "ambiguous")
    assert pv("The proposed answer is highly unlikely", "linguistic").value == 0.05
    assert pv("it is not likely", "linguistic") == methods.Stated(None, "negated")
    assert pv("likely, or about even", "linguistic") == methods.Stated(None, "ambiguous")
    assert pv("unlikelyhood", "linguistic") == methods.Stated(None, "not on the scale")
    pl = methods.parse_labelled
    assert pl(" Paris\nConfidence: 70", "numeric").value == pytest.approx(0.70)
    assert pl(" Paris. confidence level = 42 %", "numeric").value == pytest.approx(0.42)
    assert pl(" 1989\nI am sure", "numeric") == methods.Stated(None, "no confidence")  # never the answer's number


def test_verbalized_one_stage_excludes_unparsed_items_and_counts_them() -> None:
    engine = _facts_engine(verbal={"France": " Paris\nConfidence: 80", "Utopia": " Canada\nConfidence: 300",
                                   "Peru": " Lima\nConfidence: 55%"})
    recs = methods.verbalized(engine, facts_task())
    assert [r["item_id"] for r in recs] == ["f1", "f3"]  # f2's 300 is out of range: left out, not clipped
    assert [r["confidence"] for r in recs] == pytest.approx([0.80, 0.55])
    assert [r["pred"] for r in recs] == ["Paris", "Lima"]
    assert [r["correct"] for r in recs] == [True, True]
    assert recs[0]["extra"]["n_items"] == 3 and recs[0]["extra"]["n_unparsed"] == 1
    assert recs[0]["extra"]["unparsed"] == {"out of range": 1}
    make_records(recs)
    table = validity_table(make_records(recs))
    assert table.iloc[0]["unparsed_share"] == pytest.approx(1 / 3)


def test_verbalized_two_stage_states_confidence_in_the_greedy_answer() -> None:
    engine = _facts_engine(verbal={"France": " 90", "U.S.A": " about even", "Peru": " 10"})
    recs = methods.verbalized_2s(engine, facts_task(), options={"verbal_scale": "numeric"})
    # Peru's greedy answer is empty (nothing to be confident in); U.S.A's "about even" is not a number
    assert [r["item_id"] for r in recs] == ["f1"]
    assert recs[0]["extra"]["unparsed"] == {"no answer": 1, "not a number": 1}
    assert "Proposed answer: Paris" in engine.prompts[0]
    ling = methods.verbalized_2s(_facts_engine(verbal={"France": " 90", "U.S.A": " about even", "Peru": " 10"}),
                                 facts_task(), options={"verbal_scale": "linguistic"})
    assert [(r["item_id"], r["confidence"], r["correct"]) for r in ling] == [("f2", 0.5, True)]


def test_verbalized_with_no_parseable_answer_is_an_error_not_made_up_numbers() -> None:
    engine = _facts_engine(verbal={"France": " Paris", "Utopia": " no idea", "Peru": " Lima"})
    with pytest.raises(methods.NoStatedConfidence, match="none of the 3 answers states a confidence"):
        methods.verbalized(engine, facts_task())
    assert issubclass(methods.NoStatedConfidence, CalibenchError)  # a one-line CLI error


def test_an_unmeasurable_method_is_reported_and_the_other_methods_still_run() -> None:
    from calibench.scoring import score

    engine = _facts_engine(verbal={"France": " Paris", "Utopia": " no idea", "Peru": " Lima"})
    task = facts_task()
    chunks = list(score(engine, [(task, "verbalized"), (task, "consistency")], tokenizer=engine.tokenizer,
                        options=methods.MethodOptions.from_mapping({"n_samples": 4}), model_id="m", revision=""))
    assert [(c.method, len(c.frame), c.last) for c in chunks] == [("verbalized", 0, True), ("consistency", 3, True)]
    assert "none of the 3 answers states a confidence" in chunks[0].not_measured
    assert chunks[1].not_measured == "" and set(chunks[1].frame["method"]) == {"consistency"}


def test_verbalized_on_multiple_choice_reads_the_letter() -> None:
    engine = FamilyEngine(FakeTokenizer(), verbal={"France": " B\nConfidence: 60", "Cairo": " The Nile"})
    recs = methods.verbalized(engine, mc_task())
    assert [(r["item_id"], r["pred"], r["correct"], r["confidence"]) for r in recs] == [("q1", "1", True, 0.6)]
    assert recs[0]["extra"]["unparsed"] == {"no option letter": 1}


# ---------------------------------------------------------------------------------------------- sampling


def test_consistency_is_the_share_of_samples_meaning_the_greedy_answer() -> None:
    engine = _facts_engine()
    recs = methods.consistency(engine, facts_task(), options={"n_samples": 4, "temperature": 0.7})
    # France: Paris, Paris., Lyon, paris -> 3 of 4; Utopia: United States, USA, Canada, the U.S.A. all alias
    # the gold except Canada -> 3 of 4; Peru: the greedy answer is empty, an abstention -> 0
    assert [r["confidence"] for r in recs] == pytest.approx([0.75, 0.75, 0.0])
    assert [r["correct"] for r in recs] == [True, True, False]
    assert engine.sample_args["n"] == 4 and engine.sample_args["temperature"] == 0.7
    seeds = engine.sample_args["seeds"]
    assert len(set(seeds)) == 3 and seeds[0] == methods.item_seed(0, "toy-facts", "f1", "sample")
    assert recs[2]["extra"]["samples"] == ["Lima", "Lima", "Cusco", ""]


def test_semantic_mass_of_the_greedy_cluster_and_semantic_entropy() -> None:
    engine = _facts_engine()
    task = facts_task()
    session = methods.ScoringSession(engine, options={"n_samples": 4})
    recs = methods.semantic(engine, task, session=session)
    methods.consistency(engine, task, session=session)
    assert engine.calls["sample"] == 1  # the samples are one pass of the session
    # France distinct answers: "Paris" 0.5 (counted once), "Lyon" 0.2, "paris" 0.1 -> gold 0.6 / 0.8
    assert recs[0]["confidence"] == pytest.approx(0.75)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert recs[0]["extra"]["semantic_entropy"] == pytest.approx(h)
    assert recs[0]["extra"]["discrete_semantic_entropy"] == pytest.approx(h)  # 3 gold, 1 lyon
    # Utopia: United States 0.3, USA 0.2, the U.S.A. 0.2 (gold), Canada 0.1 -> 0.7 / 0.8
    assert recs[1]["confidence"] == pytest.approx(0.875)
    # Peru: greedy abstains -> 0; clusters Lima 0.3 (once), Cusco 0.3 -> 1/2 each; the empty sample has no mass
    assert recs[2]["confidence"] == 0.0
    assert recs[2]["extra"]["semantic_entropy"] == pytest.approx(math.log(2))
    assert recs[2]["extra"]["discrete_semantic_entropy"] == pytest.approx(
        -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))


def test_consistency_on_multiple_choice_is_option_identity() -> None:
    engine = FamilyEngine(
        FakeTokenizer(),
        nexts={"France": {" A": 0.2, " B": 0.5, " C": 0.1}, "Cairo": {" A": 0.6, " B": 0.3}},
        samples={"France": [[(" B", 0.5)], [(" (B)", 0.1)], [(" C", 0.1)], [(" Paris", 0.1)]],
                 "Cairo": [[(" A", 0.6)], [(" B", 0.3)], [(" C", 0.1)], [(" A.", 0.6)]]},
    )
    recs = methods.consistency(engine, mc_task(), options={"n_samples": 4})
    assert [r["pred"] for r in recs] == ["1", "0"]
    assert [r["correct"] for r in recs] == [True, False]
    # France: B, (B) agree; C and a non-letter do not. Cairo: A, A. agree; C is no option of a 2-option item
    assert [r["confidence"] for r in recs] == pytest.approx([0.5, 0.5])
    assert recs[0]["extra"]["n_options"] == 3


def test_p_true_fewshot_lists_brainstormed_samples_and_labelled_shots() -> None:
    engine = _facts_engine(ab={"Paris": (0.6, 0.2), "the U.S.A": (0.3, 0.3), "": (0.1, 0.3)})
    recs = methods.p_true_fewshot(engine, facts_task(), options={"n_samples": 4})
    assert [r["confidence"] for r in recs] == pytest.approx([0.75, 0.5, 0.25])
    assert [r["correct"] for r in recs] == [True, True, False]
    assert recs[0]["extra"]["ideas"] == ["Paris", "Lyon", "paris"]
    first = engine.prompts[0]
    # two shots (the other items), each solved with its own proposal's truth, then the item itself
    assert first.count("Here are some brainstormed ideas:") == 3
    assert "Possible Answer: the U.S.A\nIs the possible answer:\n (A) True\n (B) False\nThe possible answer is: (A)" \
        in first
    assert "Possible Answer: \nIs the possible answer:\n (A) True\n (B) False\nThe possible answer is: (B)" in first
    assert first.endswith("Possible Answer: Paris\nIs the possible answer:\n (A) True\n (B) False\n"
                          "The possible answer is:")


# ---------------------------------------------------------------------------------------------- probe


def test_cross_fitting_never_scores_an_item_with_a_probe_trained_on_it() -> None:
    rng = np.random.default_rng(0)
    n = 40
    x = np.eye(n)  # one private feature per item: a probe that saw an item can memorise its label
    y = rng.integers(0, 2, n)
    fit = methods.cross_fit(x, y, folds=5, seed=0)
    for i in range(n):
        assert i not in set(fit.train[fit.fold[i]].tolist())
    assert sorted(np.concatenate([np.setdiff1d(np.arange(n), t) for t in fit.train]).tolist()) == list(range(n))
    # memorised labels do not carry to unseen items: out-of-fold predictions are no better than chance,
    # while the same probe scored in-sample would be perfect
    from sklearn.linear_model import LogisticRegression

    in_sample = LogisticRegression(C=1.0, max_iter=2000).fit(x, y).predict(x)
    assert (in_sample == y).mean() == 1.0
    assert ((fit.probs > 0.5) == y).mean() < 0.7


def test_probe_decodes_a_linearly_decodable_answer() -> None:
    rng = np.random.default_rng(1)
    n, d = 200, 16
    x = rng.normal(size=(n, d))
    y = (x @ rng.normal(size=d) > 0).astype(int)
    fit = methods.cross_fit(x, y, folds=5, seed=0)
    assert ((fit.probs > 0.5) == y).mean() > 0.9
    # one class in a training part: those items get the add-one share, marked constant
    few = methods.cross_fit(np.zeros((4, 2)), np.array([1, 1, 1, 0]), folds=2, seed=0)
    assert few.constant.any()


def test_probe_method_records_out_of_fold_confidences() -> None:
    keys = [f"S{i:02d}x" for i in range(12)]
    items = [FactItem(f"f{i}", k, "capital", "The capital of [X] is [Y].", "Right", []) for i, k in enumerate(keys)]
    task = Task("toy-probe", "facts", items, "hash-probe")
    right = {k: i % 2 == 0 for i, k in enumerate(keys)}
    engine = FamilyEngine(FakeTokenizer(),
                          gens={k: [(" Right" if right[k] else " Wrong", 0.5)] for k in keys},
                          hidden={k: np.array([3.0 if right[k] else -3.0, float(i)]) for i, k in enumerate(keys)})
    recs = methods.probe(engine, task, options={"probe_folds": 3})
    assert [r["correct"] for r in recs] == [right[k] for k in keys]
    assert all((r["confidence"] > 0.5) == r["correct"] for r in recs)
    assert {r["extra"]["fold"] for r in recs} == {0, 1, 2}
    assert all(r["extra"]["n_train"] == 8 and r["extra"]["layer"] == 2 for r in recs)  # middle of 4 layers


# ---------------------------------------------------------------------------------------------- options, gates


def test_family_options_are_validated_and_opt_in() -> None:
    for bad, msg in (({"n_samples": 0}, "n_samples"), ({"temperature": 0}, "temperature"),
                     ({"probe_folds": 1}, "probe_folds"), ({"verbal_scale": "stars"}, "verbal_scale")):
        with pytest.raises(CalibenchError, match=msg):
            methods.MethodOptions.from_mapping(bad)
    units = methods.resolve_methods("all", [facts_task()])
    assert not {m for _, m in units} & methods.OPT_IN
    named = methods.resolve_methods("consistency,probe", [facts_task(), mc_task()])
    assert [(t.name, m) for t, m in named] == [("toy-facts", "consistency"), ("toy-facts", "probe"),
                                               ("toy-mc", "consistency"), ("toy-mc", "probe")]


def _rec(task, method, i, conf, correct, **kw):
    return {"task": task, "method": method, "item_id": f"i{i}", "confidence": conf, "correct": correct,
            "pred": "x", **kw}


def test_validity_gates_name_their_reason() -> None:
    rows = []
    for i in range(40):
        ok = i % 4 == 0  # 25% right on 4 options: chance
        probs = [0.7, 0.1, 0.1, 0.1]
        rows.append(_rec("mc", "choice", i, 0.7, ok, probs=probs, label=0 if ok else 1,
                         extra={"letter_mass": 0.05}))
        rows.append(_rec("mc", "p-true", i, 0.5 + 0.01 * (i % 3), i % 10 != 0, extra={"p_true": 0.6, "p_false": 0.3}))
        rows.append(_rec("mc", "probe", i, 1.0 if i % 2 else 0.0, i % 10 != 0, extra={"n_options": 4}))
        rows.append(_rec("facts", "sequence", i, 0.3, False))
        rows.append(_rec("facts", "verbalized", i, 0.9 - 0.01 * i, i % 2 == 0,
                         extra={"n_items": 100, "n_unparsed": 60, "unparsed": {"no confidence": 60}}))
    table = validity_table(make_records(rows)).set_index(["task", "method"])
    choice = table.loc[("mc", "choice")]
    assert not choice["valid"] and choice["chance"] == pytest.approx(0.25)
    assert "not above chance 0.25" in choice["reason"] and "mass on the read tokens 0.05" in choice["reason"]
    from scipy.stats import binomtest

    assert choice["p_value"] == pytest.approx(binomtest(10, 40, 0.25, alternative="greater").pvalue)
    ptrue = table.loc[("mc", "p-true")]
    assert ptrue["valid"] and ptrue["mass"] == pytest.approx(0.9) and ptrue["accuracy"] == pytest.approx(0.9)
    assert table.loc[("mc", "probe")]["reason"] == "100% of confidences at 0 or 1"
    assert table.loc[("facts", "sequence")]["reason"] == "no correct answer; every confidence is 0.3"
    verbal = table.loc[("facts", "verbalized")]
    assert not verbal["valid"] and verbal["unparsed_share"] == pytest.approx(0.6)
    lines = warnings(table.reset_index())
    assert len(lines) == 4 and lines[0].startswith("not valid: mc · choice: ")
    assert isinstance(table, pd.DataFrame)
