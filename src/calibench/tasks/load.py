"""``load_task``: one entry point for built-in names, local files and Hugging Face names.

Resolution order: a registered name (built-ins, plugins), a lifecycle-lab name (``lab-facts`` with
``world=DIR``), a known Hugging Face task name, then an existing path (its format detected from the
extension and the first line, or given with ``format=``). Anything else is an error that lists the
names it knows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError
from calibench.tasks import clm, facts, mc, world
from calibench.tasks._files import first_row
from calibench.tasks._names import MMLU_SUBJECTS
from calibench.tasks.base import MCItem, Task, make_task

# name -> factory(seed, **options) -> (items, fewshot)
Factory = Callable[..., tuple[list, list]]
_REGISTRY: dict[str, Factory] = {}

MC_HF_NAMES = ("arc_easy", "arc_challenge", "hellaswag", "piqa", "sciq", "medmcqa")
MC_FORMATS = ("native", "choices", "arc", "hellaswag", "piqa", "sciq", "medmcqa", "mmlu")
FORMATS = (*MC_FORMATS, "mmlu-csv", "facts", "lama", "clm")
OPTIONS = ("format", "relations", "subjects", "split", "text_field", "split_paragraphs", "world", "n_options")
LAB_FILES = {"lab-facts": "lab-facts.jsonl", "lab-mc": "lab-mc.jsonl", "lab-clm": "lab-clm.jsonl"}


def register_task(name: str, factory: Factory) -> None:
    """Add a named task (``factory(seed=..., **options) -> (items, fewshot)``)."""
    _REGISTRY[name] = factory


def task_names() -> list[str]:
    """Every name ``load_task`` knows without a path (for help texts and errors)."""
    return sorted([*_REGISTRY, *LAB_FILES, "mmlu", "mmlu:<subject>", *(f"mmlu_{c}" for c in _CATEGORIES),
                   *MC_HF_NAMES, "trex", "wikitext:<config>", "pile-10k", "hf-clm:<dataset>[:<config>]"])


_CATEGORIES = sorted(set(MMLU_SUBJECTS.values()))


def load_task(name_or_path: str | os.PathLike[str], *, limit: int | None = None, seed: int = 0, **options: Any) -> Task:
    """Load a task by name or path; ``limit`` keeps the first N items (after loading, in order).

    Options: ``format`` (force a file format), ``relations`` (world tasks, LAMA relations file),
    ``subjects`` (MMLU), ``split``, ``text_field`` and ``split_paragraphs`` (CLM), ``world`` (lab-*).
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise CalibenchError(f"unknown task option(s) {unknown}; known: {', '.join(OPTIONS)}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise CalibenchError(f"limit must be a positive integer, got {limit!r}")
    raw = str(name_or_path)
    items, fewshot, display = _resolve(raw, seed, dict(options))
    if limit is not None:
        items = items[:limit]
    # Paths differ between machines while the items they hold do not; the items are hashed anyway.
    hashed: dict[str, Any] = {k: str(v) for k, v in options.items()
                              if k != "world" and not (k == "relations" and Path(str(v)).is_file())}
    hashed.update(seed=seed, limit=limit)
    return make_task(display, items, fewshot=fewshot, options=hashed)


def _resolve(raw: str, seed: int, options: dict[str, Any]) -> tuple[list, list, str]:
    if raw in _REGISTRY:
        items, fewshot = _REGISTRY[raw](seed=seed, **options)
        return items, fewshot, raw
    if raw in LAB_FILES or raw.split(":", 1)[0] in LAB_FILES:
        return _lab(raw, options)
    if raw == "mmlu" or raw.startswith("mmlu:") or (raw.startswith("mmlu_") and raw[5:] in _CATEGORIES):
        selector = raw.split(":", 1)[1] if ":" in raw else (raw.removeprefix("mmlu_") if raw != "mmlu" else None)
        items, fewshot = mc.load_mmlu_hf(mc.mmlu_subjects(options.get("subjects") or selector))
        return items, fewshot, raw
    if raw in MC_HF_NAMES:
        items, fewshot = mc.load_mc_hf(mc.SPECS[raw], split=options.get("split"))
        return items, fewshot, raw
    if raw in ("trex", "lama:trex"):
        return facts.load_trex_hf(relations=_split_list(options.get("relations"))), [], "trex"
    if raw.startswith("wikitext:"):
        # lm-eval's document-level wikitext: one row per article in the "page" field.
        docs = clm.load_clm_hf("EleutherAI/wikitext_document_level", raw.split(":", 1)[1],
                               split=options.get("split", "test"), text_field="page")
        return docs, [], raw
    if raw == "pile-10k":
        return clm.load_clm_hf("NeelNanda/pile-10k", None, split=options.get("split", "train")), [], raw
    if raw.startswith("hf-clm:"):
        parts = raw.split(":")
        docs = clm.load_clm_hf(parts[1], parts[2] if len(parts) > 2 else None, split=options.get("split", "test"),
                               text_field=options.get("text_field", "text"))
        return docs, [], raw
    path = Path(raw).expanduser()
    if path.exists():
        items, fewshot = _load_path(path, options)
        name = path.stem if path.is_file() else path.name
        if items and isinstance(items[0], MCItem) and items[0].subject in MMLU_SUBJECTS and name in ("data", "test"):
            name = "mmlu"  # the MMLU release folder is called data/ (or test/); say what it is
        return items, fewshot, name
    raise CalibenchError(f"unknown task {raw!r}: not a file or folder, and not one of: {', '.join(task_names())}")


def _split_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    return [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)


def _lab(raw: str, options: dict[str, Any]) -> tuple[list, list, str]:
    name, _, folder = raw.partition(":")
    folder = folder or options.get("world")
    if not folder:
        raise CalibenchError(f"task {name} needs a world folder: use '{name}:DIR' or world=DIR "
                             "(create one with `calibench lifecycle world`)")
    path = Path(folder) / LAB_FILES[name]
    if not path.is_file():
        raise CalibenchError(f"{path}: not found; is {folder} a world folder?")
    fmt = {"lab-facts": "facts", "lab-mc": "native", "lab-clm": "clm"}[name]
    items, fewshot = _load_path(path, {**options, "format": fmt})
    return items, fewshot, name


def _load_path(path: Path, options: dict[str, Any]) -> tuple[list, list]:
    fmt = options.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise CalibenchError(f"unknown task format {fmt!r}; choose from {', '.join(FORMATS)}")
    suffix = path.suffix.lower()
    if fmt == "mmlu-csv" or (fmt is None and (path.is_dir() and _looks_mmlu(path) or suffix == ".csv")):
        subjects = mc.mmlu_subjects(options.get("subjects"))
        return mc.load_mmlu_csv(path, subjects=subjects, split=options.get("split", "test"))
    if fmt == "clm" or (fmt is None and (suffix == ".txt" or path.is_dir())):
        return clm.load_clm_path(path, text_field=options.get("text_field", "text"),
                                 split_paragraphs=bool(options.get("split_paragraphs", False))), []
    if fmt in ("facts", "lama"):
        return facts.load_facts_jsonl(path, relations=options.get("relations")), []
    if fmt in MC_FORMATS:
        return mc.load_mc_jsonl(path, mc.SPECS[fmt]), []
    if suffix not in (".jsonl", ".json", ".ndjson"):
        raise CalibenchError(f"{path}: unknown task file type '{suffix}' (use .jsonl, .csv, .txt or a folder)")
    row = first_row(path)
    if row is None:
        raise CalibenchError(f"{path}: no items (empty file)")
    if facts.is_lama_row(row) or facts.is_native_fact_row(row):
        return facts.load_facts_jsonl(path, relations=options.get("relations")), []
    if mc.detect_spec(row) is not None:
        return mc.load_mc_jsonl(path), []
    if options.get("text_field", "text") in row:
        return clm.load_clm_path(path, text_field=options.get("text_field", "text")), []
    raise CalibenchError(f"{path}: cannot tell the task format from fields {sorted(row)}; pass format= one of "
                         f"{', '.join(FORMATS)} (see docs/tasks.md)")


def _looks_mmlu(path: Path) -> bool:
    return any(path.glob("*_test.csv")) or any((path / "test").glob("*_test.csv"))


def _world_facts(seed: int = 0, relations: Any = None, **_: Any) -> tuple[list, list]:
    return world.world_facts(relations), []


def _world_mc(seed: int = 0, relations: Any = None, n_options: int = 4, **_: Any) -> tuple[list, list]:
    return world.world_mc(seed=seed, relations=relations, n_options=int(n_options)), []


def _world_clm(seed: int = 0, **_: Any) -> tuple[list, list]:
    return world.world_clm(seed=seed), []


register_task("world-facts", _world_facts)
register_task("world-mc", _world_mc)
register_task("world-clm", _world_clm)
