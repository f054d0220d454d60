"""Text for token-level calibration (CLM): local .txt / .jsonl, or HF text datasets when online.

One ``CLMDoc`` per document. The engine windows long documents itself, so a loader only has to
keep document boundaries right (wikitext is regrouped into articles, as lm-eval's document-level
wikitext does, rather than scored line by line).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from calibench.errors import CalibenchError
from calibench.io import read_text
from calibench.tasks._files import hf_rows, read_jsonl
from calibench.tasks.base import CLMDoc

_WIKITEXT_HEADING = re.compile(r"^ = [^=].* = $")


def load_clm_path(path: str | os.PathLike[str], *, text_field: str = "text",
                  split_paragraphs: bool = False) -> list[CLMDoc]:
    """A .txt file (one document, or one per blank-line paragraph), a folder of .txt, or .jsonl."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise CalibenchError(f"{path}: no .txt files in folder")
        return [d for f in files for d in _txt_docs(f, split_paragraphs, prefix=f"{f.stem}/")]
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return _jsonl_docs(path, text_field)
    return _txt_docs(path, split_paragraphs, prefix="")


def _txt_docs(path: Path, split_paragraphs: bool, prefix: str) -> list[CLMDoc]:
    text = read_text(path)
    if split_paragraphs:
        parts = [p.strip() for p in re.split(r"\n\s*\n", text)]
        docs = [CLMDoc(item_id=f"{prefix}{i}", text=p) for i, p in enumerate(x for x in parts if x)]
    else:
        docs = [CLMDoc(item_id=prefix.rstrip("/") or path.stem, text=text)] if text.strip() else []
    return docs


def _jsonl_docs(path: Path, text_field: str) -> list[CLMDoc]:
    docs = []
    for i, (lineno, row) in enumerate(read_jsonl(path)):
        if text_field not in row:
            raise CalibenchError(f"{path}:{lineno}: missing field '{text_field}'")
        text = row[text_field]
        if not isinstance(text, str):
            raise CalibenchError(f"{path}:{lineno}: field '{text_field}' must be a string")
        if text.strip():
            docs.append(CLMDoc(item_id=str(row.get("id", i)), text=text))
    return docs


def wikitext_articles(lines: list[str]) -> list[str]:
    """Regroup wikitext's line rows into articles, cutting at top-level headings " = Title = "."""
    articles: list[list[str]] = []
    for line in lines:
        if _WIKITEXT_HEADING.match(line.rstrip("\n")) or not articles:
            articles.append([])
        articles[-1].append(line)
    return [t for t in ("".join(a).strip() for a in articles) if t]


def load_clm_hf(path: str, config: str | None = None, *, split: str = "test", text_field: str = "text") -> list[CLMDoc]:
    """A HF text dataset: ``wikitext`` (regrouped into articles) or any dataset with a text column."""
    rows = hf_rows(path, config, split)
    if path.split("/")[-1] == "wikitext":
        texts = wikitext_articles([str(r.get(text_field, "")) for r in rows])
    else:
        texts = []
        for i, r in enumerate(rows):
            if text_field not in r:
                raise CalibenchError(f"{path}[{split}] row {i}: missing field '{text_field}'")
            texts.append(str(r[text_field]))
    return [CLMDoc(item_id=str(i), text=t) for i, t in enumerate(texts) if t.strip()]
