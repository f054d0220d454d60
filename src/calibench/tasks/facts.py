"""Fact tasks: LAMA / T-REx JSONL, calibench's native facts JSONL, and the real LAMA T-REx from HF.

LAMA lines name the subject (``sub_label``), object (``obj_label``) and relation (``predicate_id``);
the cloze template ("The capital of [X] is [Y] .") is either on the line (HF ``lama`` rows) or in
LAMA's ``relations.jsonl``, which is looked up next to the file when not given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError
from calibench.tasks._files import hf_rows, read_jsonl, require
from calibench.tasks.base import FactItem, validate_fact


def is_lama_row(row: dict[str, Any]) -> bool:
    return "sub_label" in row and "obj_label" in row


def is_native_fact_row(row: dict[str, Any]) -> bool:
    return {"subject", "template", "object"} <= set(row)


def load_relations(path: str | os.PathLike[str]) -> dict[str, str]:
    """LAMA relations.jsonl: {"relation": "P36", "template": "The capital of [X] is [Y] ."} per line."""
    out: dict[str, str] = {}
    for lineno, row in read_jsonl(path):
        rel = require(row, "relation", f"{path}:{lineno}")
        out[str(rel)] = str(require(row, "template", f"{path}:{lineno}"))
    return out


def _find_relations(path: Path) -> Path | None:
    for folder in (path.parent, path.parent.parent):
        cand = folder / "relations.jsonl"
        if cand.is_file():
            return cand
    return None


def _aliases(row: dict[str, Any], where: str) -> list[str]:
    raw = row.get("aliases", row.get("obj_aliases", []))
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        raise CalibenchError(f"{where}: aliases must be a list of strings")
    return raw


def lama_row_to_item(row: dict[str, Any], index: int, where: str, relations: dict[str, str]) -> FactItem:
    """One LAMA/T-REx row; the template comes from the row or from ``relations``."""
    rel = str(require(row, "predicate_id", where))
    template = row.get("template") or relations.get(rel)
    if not template:
        raise CalibenchError(f"{where}: no template for relation {rel}; add a 'template' field or pass "
                             "relations=PATH/relations.jsonl (LAMA's relation file)")
    item_id = str(row.get("uuid") or f"{rel}/{index}")
    item = FactItem(item_id=item_id, subject=str(require(row, "sub_label", where)), relation=rel,
                    template=str(template), object=str(require(row, "obj_label", where)),
                    aliases=_aliases(row, where))
    validate_fact(item, where)
    return item


def native_row_to_item(row: dict[str, Any], index: int, where: str) -> FactItem:
    """calibench native facts: {id?, subject, relation, template, object, aliases?}."""
    item = FactItem(item_id=str(row.get("id", row.get("item_id", index))), subject=row.get("subject"),
                    relation=str(row.get("relation") or "fact"), template=row.get("template"),
                    object=row.get("object"), aliases=_aliases(row, where))
    validate_fact(item, where)
    return item


def load_facts_jsonl(path: str | os.PathLike[str], *, relations: str | os.PathLike[str] | None = None) -> list[FactItem]:
    """Native or LAMA JSONL (each line may be either); errors name file:line."""
    path = Path(path)
    rows = read_jsonl(path)
    if not rows:
        raise CalibenchError(f"{path}: no items (empty file)")
    rel_map: dict[str, str] | None = None
    items = []
    for i, (lineno, row) in enumerate(rows):
        where = f"{path}:{lineno}"
        if is_lama_row(row):
            if rel_map is None:
                rel_file = Path(relations) if relations else _find_relations(path)
                rel_map = load_relations(rel_file) if rel_file else {}
            items.append(lama_row_to_item(row, i, where, rel_map))
        elif is_native_fact_row(row):
            items.append(native_row_to_item(row, i, where))
        else:
            raise CalibenchError(f"{where}: not a fact: need sub_label/obj_label/predicate_id (LAMA) or "
                                 f"subject/relation/template/object (native), got fields {sorted(row)}")
    return items


def load_trex_hf(*, relations: list[str] | None = None) -> list[FactItem]:
    """The real LAMA T-REx (HF ``facebook/lama``, config ``trex``), one item per distinct triple.

    HF rows repeat a triple once per evidence sentence, so rows are deduplicated on
    (subject, relation, object). Relations whose template asks [Y] before [X] cannot be prompted
    left to right and are skipped (they are few, e.g. some P-ids with a fronted object).
    """
    try:
        rows = list(hf_rows("facebook/lama", "trex", "train"))
    except CalibenchError:
        rows = list(hf_rows("facebook/lama", "trex", "train", revision="refs/convert/parquet"))
    keep = set(relations) if relations else None
    items: list[FactItem] = []
    seen: set[tuple[str, str, str]] = set()
    for i, row in enumerate(rows):
        rel = str(row.get("predicate_id"))
        key = (str(row.get("sub_label")), rel, str(row.get("obj_label")))
        if key in seen or (keep is not None and rel not in keep):
            continue
        template = str(row.get("template") or "")
        if "[X]" in template and "[Y]" in template and template.index("[Y]") < template.index("[X]"):
            continue
        seen.add(key)
        # LAMA's uuid names the triple (repeated on its evidence rows), so ids survive relation filters.
        uid = row.get("uuid") or f"{rel}/{row.get('sub_uri') or key[0]}"
        items.append(lama_row_to_item({**row, "uuid": uid}, i, f"facebook/lama row {i}", {}))
    return items
