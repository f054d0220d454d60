"""Write a world and everything derived from it to a folder (the ``world dir``).

Layout (all UTF-8, written atomically; the same seed gives byte-identical files):

    world.json            entities, attributes, mention counts, buckets, roles and the config
    corpus.txt            pretraining corpus, one document per line (biographies, geography, drills;
                          a newline inside a document is written as the two characters \\n)
    lab-clm.jsonl         held-out CLM documents {id, text, bucket}
    lab-facts.jsonl       facts items {id, subject, relation, template, object, aliases, bucket, mentions}
    lab-mc.jsonl          MC items {id, question, options, label, subject, relation, bucket}
    sft-diverse.jsonl     instruction data {id, prompt, completion, kind, subject, relation, bucket}
    sft-narrow.jsonl      the same, one template
    preferences.jsonl     {id, prompt, chosen, rejected, subject, relation, bucket}
    manifest.json         counts per file and bucket, sha256 of each file
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibench.errors import CalibenchError
from calibench.io import write_json, write_text
from calibench.world.corpus import corpus_line, heldout_docs, pretraining_corpus
from calibench.world.derived import facts_items, instruction_items, mc_items, preference_items
from calibench.world.drills import drill_docs
from calibench.world.entities import World, WorldConfig, make_world

FILES = {
    "world": "world.json",
    "corpus": "corpus.txt",
    "clm": "lab-clm.jsonl",
    "facts": "lab-facts.jsonl",
    "mc": "lab-mc.jsonl",
    "diverse": "sft-diverse.jsonl",
    "narrow": "sft-narrow.jsonl",
    "preferences": "preferences.jsonl",
    "manifest": "manifest.json",
}


@dataclass(frozen=True)
class WorldPaths:
    """Where each artefact of a world dir lives (use this rather than hard-coding names)."""

    root: Path

    def __getattr__(self, key: str) -> Path:
        if key in FILES:
            return self.root / FILES[key]
        raise AttributeError(key)


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def build_world(
    out_dir: str | os.PathLike[str],
    config: WorldConfig | None = None,
    *,
    n_instructions: int = 400,
    n_preferences: int = 300,
) -> WorldPaths:
    """Generate the world for ``config`` and write every derived file to ``out_dir``.

    Each artefact draws from its own child of one ``SeedSequence`` so changing, say, the number of
    instructions does not change the corpus.
    """
    config = config or WorldConfig()
    world = make_world(config)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(7)]
    paths = WorldPaths(Path(out_dir))
    drills = drill_docs(world, streams[6])
    contents: dict[str, str] = {
        "world": json.dumps(world.to_dict(), indent=1, sort_keys=True) + "\n",
        "corpus": "".join(corpus_line(doc) + "\n" for doc in pretraining_corpus(world, streams[0], drills)),
        "clm": _jsonl(heldout_docs(world, streams[1])),
        "facts": _jsonl(facts_items(world)),
        "mc": _jsonl(mc_items(world, streams[2])),
        "diverse": _jsonl(instruction_items(world, "diverse", n_instructions, streams[3])),
        "narrow": _jsonl(instruction_items(world, "narrow", n_instructions, streams[4])),
        "preferences": _jsonl(preference_items(world, n_preferences, streams[5])),
    }
    for key, text in contents.items():
        write_text(getattr(paths, key), text)
    manifest = {
        "seed": config.seed,
        "people_per_bucket": dict(sorted(Counter(p.bucket for p in world.people).items())),
        "train_people_per_bucket": dict(sorted(Counter(p.bucket for p in world.train_people).items())),
        "drill_docs": len(drills),
        "files": {
            FILES[k]: {"sha256": hashlib.sha256(t.encode()).hexdigest(), "lines": t.count("\n")}
            for k, t in contents.items()
        },
        "corpus_characters": len(contents["corpus"]),
    }
    write_json(paths.manifest, manifest)
    return paths


def load_world(world_dir: str | os.PathLike[str]) -> World:
    """Read ``world.json`` back (for code that needs entities, e.g. the calibration callback)."""
    path = Path(world_dir) / FILES["world"]
    if not path.is_file():
        raise CalibenchError(f"{world_dir}: not a world dir (no {FILES['world']}); run `calibench train world`")
    return World.from_dict(json.loads(path.read_text(encoding="utf-8")))


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSONL file, naming the line of any malformed row."""
    from calibench.io import read_jsonl_lines

    return [row for _, row in read_jsonl_lines(path)]
