"""Reading task sources: JSONL with file:line errors, and Hugging Face datasets with one clear error.

Every loader reads through here so a malformed line always names ``file:line`` and an unreachable
dataset (offline, wrong name) is one sentence with the fix, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError
from calibench.io import read_jsonl_lines as read_jsonl


def first_row(path: Path) -> dict[str, Any] | None:
    """The first JSON object of a JSONL file (for format detection), or None if it has none."""
    rows = read_jsonl(path)
    return rows[0][1] if rows else None


def hf_rows(path: str, config: str | None, split: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Rows of a Hugging Face dataset split; any failure becomes one CalibenchError with the fix."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a core dependency
        raise CalibenchError("the 'datasets' package is needed to load Hugging Face tasks") from exc
    name = path + (f":{config}" if config else "")
    try:
        ds = datasets.load_dataset(path, config, split=split, **kwargs)
    except Exception as exc:  # datasets raises many types: offline, missing config, bad split
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CalibenchError(
            f"cannot load Hugging Face dataset {name} (split {split!r}): {msg}. "
            "If offline, download it once with network access or pass a local file (see docs/tasks.md)"
        ) from exc
    yield from ds


def require(row: dict[str, Any], key: str, where: str) -> Any:
    """row[key], or an error naming the missing field and where it was expected."""
    if key not in row:
        raise CalibenchError(f"{where}: missing field '{key}'")
    return row[key]
