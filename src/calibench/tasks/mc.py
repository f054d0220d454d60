"""Multiple-choice tasks: MMLU (CSV layout or HF), and one generic field spec for ARC, HellaSwag, PIQA,
SciQ, MedMCQA and calibench's native JSONL.

The same ``MCSpec`` reads a Hugging Face row and a local JSONL line, so a user who downloaded e.g.
ARC as JSONL gets exactly the items the online loader would give.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from calibench.errors import CalibenchError
from calibench.tasks._files import hf_rows, read_jsonl, require
from calibench.tasks._names import MMLU_SUBJECTS
from calibench.tasks.base import MCItem, validate_mc

LabelType = Literal["index", "letter", "choice_label", "option_text"]
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class MCSpec:
    """Which fields of a row hold the question, the options and the label.

    ``fewshot_split`` is set only where the dataset has a split meant for it (MMLU dev); elsewhere
    k-shot examples are other items of the task, so no large train split is downloaded.
    ``options`` is one field holding a list (or a dict with a "text" list, as HF ARC does) or several
    fields holding one option each. ``label_type`` says how to read the label: an index, a letter,
    a key into the choices' "label" list (ARC's answerKey), or the text of the gold option (SciQ).
    """

    name: str
    question: str
    options: tuple[str, ...]
    label: str
    label_type: LabelType = "index"
    id_field: str | None = None
    subject_field: str | None = None
    hf_path: str | None = None
    hf_config: str | None = None
    split: str = "test"
    fewshot_split: str | None = None


SPECS: dict[str, MCSpec] = {
    "native": MCSpec("native", "question", ("options",), "label", id_field="id", subject_field="subject"),
    # The layout lm-evaluation-harness users write for local tasks (`doc_to_choice: '{{choices}}'`).
    "choices": MCSpec("choices", "question", ("choices",), "label", id_field="id", subject_field="subject"),
    "arc_easy": MCSpec("arc_easy", "question", ("choices",), "answerKey", "choice_label", id_field="id",
                       hf_path="allenai/ai2_arc", hf_config="ARC-Easy", split="test"),
    "arc_challenge": MCSpec("arc_challenge", "question", ("choices",), "answerKey", "choice_label", id_field="id",
                            hf_path="allenai/ai2_arc", hf_config="ARC-Challenge", split="test"),
    "hellaswag": MCSpec("hellaswag", "ctx", ("endings",), "label", id_field="ind", hf_path="Rowan/hellaswag",
                        split="validation"),
    "piqa": MCSpec("piqa", "goal", ("sol1", "sol2"), "label", hf_path="baber/piqa", split="validation"),
    "sciq": MCSpec("sciq", "question", ("distractor1", "distractor2", "distractor3", "correct_answer"),
                   "correct_answer", "option_text", hf_path="allenai/sciq", split="test"),
    "medmcqa": MCSpec("medmcqa", "question", ("opa", "opb", "opc", "opd"), "cop", id_field="id",
                      hf_path="openlifescienceai/medmcqa", split="validation"),
    "mmlu": MCSpec("mmlu", "question", ("choices",), "answer", subject_field="subject", hf_path="cais/mmlu",
                   hf_config="all", split="test", fewshot_split="dev"),
}
# The generic field specs share names with the formats a local JSONL may be in.
SPECS["arc"] = SPECS["arc_easy"]


def detect_spec(row: dict[str, Any]) -> MCSpec | None:
    """Guess a JSONL file's MC format from its first row's keys (None if it is not MC)."""
    keys = set(row)
    if {"question", "options", "label"} <= keys:
        return SPECS["native"]
    if {"question", "choices", "label"} <= keys and isinstance(row["choices"], list):
        return SPECS["choices"]
    if {"goal", "sol1", "sol2"} <= keys:
        return SPECS["piqa"]
    if {"ctx", "endings"} <= keys:
        return SPECS["hellaswag"]
    if {"opa", "cop"} <= keys:
        return SPECS["medmcqa"]
    if {"distractor1", "correct_answer"} <= keys:
        return SPECS["sciq"]
    if "answerKey" in keys:
        return SPECS["arc"]
    if {"question", "choices", "answer"} <= keys:
        return SPECS["mmlu"]
    return None


def _flatten_arc(row: dict[str, Any]) -> dict[str, Any]:
    """The original ARC JSONL nests {"question": {"stem", "choices": [{text, label}]}}; HF flattens it."""
    q = row.get("question")
    if isinstance(q, dict) and "stem" in q:
        choices = q.get("choices") or []
        row = dict(row)
        row["question"] = q["stem"]
        row["choices"] = {"text": [c.get("text") for c in choices], "label": [c.get("label") for c in choices]}
    return row


def _clean_wikihow(text: str) -> str:
    """HellaSwag's WikiHow items carry markup like "[title]" and "[step]"; drop it as lm-eval does."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag_query(row: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's HellaSwag query: "<activity>: <ctx_a> <Ctx_b>", markup removed, endings cleaned."""
    if not {"activity_label", "ctx_a", "ctx_b"} <= set(row):
        return row
    ctx = f"{row['activity_label']}: {row['ctx_a']} {str(row['ctx_b']).capitalize()}"
    row = dict(row, ctx=_clean_wikihow(ctx))
    if isinstance(row.get("endings"), list):
        row["endings"] = [_clean_wikihow(e) if isinstance(e, str) else e for e in row["endings"]]
    return row


def row_to_item(row: dict[str, Any], spec: MCSpec, index: int, where: str) -> MCItem:
    """Read one row with ``spec``; every missing field or bad value names ``where``."""
    if spec.label_type == "choice_label":
        row = _flatten_arc(row)
    if spec.name == "hellaswag":
        row = _hellaswag_query(row)
    question = require(row, spec.question, where)
    if len(spec.options) == 1:
        raw = require(row, spec.options[0], where)
        if isinstance(raw, dict):
            labels = raw.get("label")
            raw = raw.get("text")
        else:
            labels = None
        if not isinstance(raw, list):
            raise CalibenchError(f"{where}: field '{spec.options[0]}' must be a list of options")
        options = raw
    else:
        labels = None
        options = [require(row, f, where) for f in spec.options]
    options = [o.strip() if isinstance(o, str) else o for o in options]
    label = _read_label(require(row, spec.label, where), spec, options, labels, where)
    item_id = str(row[spec.id_field]) if spec.id_field and row.get(spec.id_field) is not None else str(index)
    subject = str(row.get(spec.subject_field) or "") if spec.subject_field else ""
    item = MCItem(item_id=item_id, question=question.strip() if isinstance(question, str) else question,
                  options=options, label=label, subject=subject)
    validate_mc(item, where)
    return item


def _read_label(raw: Any, spec: MCSpec, options: list[Any], labels: list[Any] | None, where: str) -> int:
    if spec.label_type == "option_text":
        if raw not in options:
            raise CalibenchError(f"{where}: gold answer {raw!r} is not one of the options")
        return options.index(raw)
    if spec.label_type == "choice_label":
        keys = [str(k) for k in labels] if labels else list(LETTERS[: len(options)])
        if str(raw) not in keys:
            raise CalibenchError(f"{where}: answer key {raw!r} is not one of the choice labels {keys}")
        return keys.index(str(raw))
    if spec.label_type == "letter":
        s = str(raw).strip().upper()
        if len(s) != 1 or s not in LETTERS:
            raise CalibenchError(f"{where}: label must be a letter A-Z, got {raw!r}")
        return LETTERS.index(s)
    if isinstance(raw, bool):
        raise CalibenchError(f"{where}: label must be an integer index, got {raw!r}")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        return int(raw.strip())
    raise CalibenchError(f"{where}: label must be an integer index, got {raw!r}")


def load_mc_jsonl(path: str | os.PathLike[str], spec: MCSpec | None = None) -> list[MCItem]:
    """A local JSONL file in any of the spec formats (auto-detected from the first line if not given)."""
    path = Path(path)
    rows = read_jsonl(path)
    if not rows:
        raise CalibenchError(f"{path}: no items (empty file)")
    if spec is None:
        spec = detect_spec(rows[0][1])
        if spec is None:
            raise CalibenchError(f"{path}:{rows[0][0]}: cannot tell the multiple-choice format from fields "
                                 f"{sorted(rows[0][1])}; pass format=native|arc|hellaswag|piqa|sciq|medmcqa|mmlu")
    return [row_to_item(row, spec, i, f"{path}:{lineno}") for i, (lineno, row) in enumerate(rows)]


def load_mc_hf(spec: MCSpec, *, split: str | None = None, config: str | None = None) -> tuple[list[MCItem], list[MCItem]]:
    """Items and few-shot pool of a task from the Hugging Face hub (needs network or a warm cache)."""
    if spec.hf_path is None:
        raise CalibenchError(f"task format '{spec.name}' has no Hugging Face source; pass a local file")
    config = config or spec.hf_config
    split = split or spec.split
    items = _rows_to_items(hf_rows(spec.hf_path, config, split), spec, f"{spec.hf_path}[{split}]")
    fewshot: list[MCItem] = []
    if spec.fewshot_split:
        fewshot = _rows_to_items(hf_rows(spec.hf_path, config, spec.fewshot_split), spec,
                                 f"{spec.hf_path}[{spec.fewshot_split}]", prefix="fewshot-")
    return items, fewshot


def _rows_to_items(rows: Iterable[dict[str, Any]], spec: MCSpec, source: str, prefix: str = "") -> list[MCItem]:
    items = []
    per_subject: dict[str, int] = {}
    for i, row in enumerate(rows):
        item = row_to_item(dict(row), spec, i, f"{source} row {i}")
        if spec.id_field is None and spec.subject_field and item.subject:
            # "<subject>/<n-th of that subject>": the same ids as the MMLU CSV layout gives.
            n = per_subject.get(item.subject, 0)
            per_subject[item.subject] = n + 1
            item.item_id = f"{item.subject}/{n}"
        item.item_id = prefix + item.item_id
        items.append(item)
    return items


# --- MMLU ---------------------------------------------------------------------------------------


def mmlu_subjects(selector: str | Iterable[str] | None) -> list[str] | None:
    """Resolve "anatomy,astronomy", a category ("stem", "humanities", ...) or None (all)."""
    if selector is None:
        return None
    names = [s.strip() for s in selector.split(",")] if isinstance(selector, str) else list(selector)
    out: list[str] = []
    for name in names:
        if name in MMLU_SUBJECTS:
            out.append(name)
        elif name in set(MMLU_SUBJECTS.values()):
            out.extend(s for s, c in MMLU_SUBJECTS.items() if c == name)
        else:
            raise CalibenchError(f"unknown MMLU subject or category {name!r}; categories: "
                                 "stem, humanities, social_sciences, other")
    return out


def load_mmlu_hf(subjects: list[str] | None) -> tuple[list[MCItem], list[MCItem]]:
    """``cais/mmlu`` test items and dev few-shot pool (config "all", filtered to ``subjects``)."""
    items, fewshot = load_mc_hf(SPECS["mmlu"])
    if subjects is not None:
        keep = set(subjects)
        items = [it for it in items if it.subject in keep]
        fewshot = [it for it in fewshot if it.subject in keep]
    return items, fewshot


def load_mmlu_csv(path: str | os.PathLike[str], *, subjects: list[str] | None = None,
                  split: str = "test") -> tuple[list[MCItem], list[MCItem]]:
    """The original MMLU release: data/{dev,val,test}/<subject>_<split>.csv, rows question,A,B,C,D,answer.

    ``path`` may be the data folder, the split folder, or one CSV file. The dev split (5 per subject)
    becomes the few-shot pool when it is found next to the test split.
    """
    path = Path(path)
    if path.is_file():
        files = [path]
        dev_dir = path.parent.parent / "dev"
    else:
        split_dir = path / split if (path / split).is_dir() else path
        files = sorted(split_dir.glob(f"*_{split}.csv"))
        dev_dir = split_dir.parent / "dev" if split_dir.name == split else split_dir
        if not files:
            raise CalibenchError(f"{path}: no MMLU files *_{split}.csv found (expected {path}/{split}/<subject>_{split}.csv)")
    items = [it for f in files if _wanted(f, split, subjects) for it in _read_mmlu_csv(f, split)]
    if not items:
        raise CalibenchError(f"{path}: no MMLU items for subjects {subjects}")
    fewshot: list[MCItem] = []
    if split != "dev" and dev_dir.is_dir():
        wanted = {it.subject for it in items}
        for f in sorted(dev_dir.glob("*_dev.csv")):
            if _subject_of(f, "dev") in wanted:
                fewshot.extend(_read_mmlu_csv(f, "dev", prefix="dev-"))
    return items, fewshot


def _subject_of(path: Path, split: str) -> str:
    stem = path.stem
    return stem[: -len(split) - 1] if stem.endswith(f"_{split}") else stem


def _wanted(path: Path, split: str, subjects: list[str] | None) -> bool:
    return subjects is None or _subject_of(path, split) in subjects


def _read_mmlu_csv(path: Path, split: str, prefix: str = "") -> list[MCItem]:
    subject = _subject_of(path, split)
    items = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        for i, row in enumerate(reader):
            where = f"{path}:{reader.line_num}"
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < 4:
                raise CalibenchError(f"{where}: expected question,A,B,C,D,answer (got {len(row)} columns)")
            question, options, answer = row[0], row[1:-1], row[-1]
            if answer.strip().upper() not in LETTERS:
                raise CalibenchError(f"{where}: answer must be a letter (A-D), got {answer!r}")
            label = LETTERS.index(answer.strip().upper())
            item = MCItem(item_id=f"{prefix}{subject}/{i}", question=question.strip(),
                          options=[o.strip() for o in options], label=label, subject=subject)
            validate_mc(item, where)
            items.append(item)
    return items
