"""Task items and the Task container.

Items are plain dataclasses so every loader (built-in, local file, Hugging Face) produces the same
thing and methods never care where a task came from. ``content_hash`` fingerprints the exact items
and options, so a run's config.json says precisely which data it scored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from calibench.errors import CalibenchError

Kind = Literal["mc", "facts", "clm"]


@dataclass
class MCItem:
    """A multiple-choice question; ``label`` indexes the gold option."""

    item_id: str
    question: str
    options: list[str]
    label: int
    subject: str = ""


@dataclass
class FactItem:
    """A fact triple with a cloze template: "[X]" is the subject, "[Y]" marks where the object goes."""

    item_id: str
    subject: str
    relation: str
    template: str
    object: str
    aliases: list[str] = field(default_factory=list)


@dataclass
class CLMDoc:
    """A document for token-level calibration."""

    item_id: str
    text: str


Item = MCItem | FactItem | CLMDoc
_KIND_OF = {MCItem: "mc", FactItem: "facts", CLMDoc: "clm"}


@dataclass
class Task:
    """A named, validated list of items of one kind, plus an optional few-shot pool."""

    name: str
    kind: Kind
    items: list
    content_hash: str
    fewshot: list = field(default_factory=list)


def content_hash(kind: str, items: list, fewshot: list, options: dict[str, Any]) -> str:
    """sha256 of a canonical JSON of the items, few-shot pool and loader options.

    Canonical = sorted keys, no whitespace, UTF-8: the same data on any machine gives the same hash,
    and any change to an item's text, label or order changes it.
    """
    payload = {
        "kind": kind,
        "items": [asdict(it) for it in items],
        "fewshot": [asdict(it) for it in fewshot],
        "options": {k: options[k] for k in sorted(options)},
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def validate_mc(item: MCItem, where: str) -> None:
    """Reject items no method can score: raises naming ``where`` (file:line or dataset row)."""
    if not isinstance(item.question, str):
        raise CalibenchError(f"{where}: question must be a string")
    if not isinstance(item.options, list) or len(item.options) < 2:
        n = len(item.options) if isinstance(item.options, list) else 0
        raise CalibenchError(f"{where}: a multiple-choice item needs at least two options, got {n}")
    for i, opt in enumerate(item.options):
        if not isinstance(opt, str) or not opt.strip():
            raise CalibenchError(f"{where}: option {i} is empty or not a string")
    if isinstance(item.label, bool) or not isinstance(item.label, int):
        raise CalibenchError(f"{where}: label must be an integer index, got {item.label!r}")
    if not 0 <= item.label < len(item.options):
        raise CalibenchError(f"{where}: label {item.label} out of range for {len(item.options)} options")


def validate_fact(item: FactItem, where: str) -> None:
    """A fact needs a subject, an object and a template that puts [X] before [Y]."""
    for name in ("subject", "object", "template", "relation"):
        value = getattr(item, name)
        if not isinstance(value, str) or not value.strip():
            raise CalibenchError(f"{where}: field '{name}' is missing or empty")
    if "[X]" not in item.template or "[Y]" not in item.template:
        raise CalibenchError(f"{where}: template must contain [X] and [Y], got {item.template!r}")
    if item.template.index("[Y]") < item.template.index("[X]"):
        raise CalibenchError(
            f"{where}: template {item.template!r} puts [Y] before [X]; a left-to-right prompt cannot ask it"
        )
    if not isinstance(item.aliases, list) or not all(isinstance(a, str) for a in item.aliases):
        raise CalibenchError(f"{where}: aliases must be a list of strings")


def make_task(name: str, items: list, *, fewshot: list | None = None, options: dict[str, Any] | None = None) -> Task:
    """Build a Task, checking it is non-empty, of one kind, with unique item ids."""
    if not items:
        raise CalibenchError(f"task '{name}' has no items")
    kinds = {_KIND_OF[type(it)] for it in items}
    if len(kinds) != 1:
        raise CalibenchError(f"task '{name}' mixes item kinds {sorted(kinds)}")
    kind = kinds.pop()
    seen: set[str] = set()
    for it in items:
        if it.item_id in seen:
            raise CalibenchError(f"task '{name}': duplicate item id {it.item_id!r}")
        seen.add(it.item_id)
    fewshot = list(fewshot or [])
    opts = dict(options or {})
    return Task(name=name, kind=kind, items=list(items), content_hash=content_hash(kind, items, fewshot, opts),
                fewshot=fewshot)
