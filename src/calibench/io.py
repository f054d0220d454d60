"""Atomic file writes: a reader (or a resumed run) never sees a half-written file.

Each writer writes to a temporary file in the same folder, flushes and fsyncs it, then renames it
over the target; rename is atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it over ``target``."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:  # name the file the user asked for, not our temporary one
        raise OSError(exc.errno, exc.strerror, str(target)) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; honour the user's umask
        os.replace(tmp_path, target)
    except OSError as exc:
        if exc.filename is not None and Path(exc.filename) == tmp_path:
            raise OSError(exc.errno, exc.strerror, str(target)) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(target: str | os.PathLike[str], text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Streamed sha256 of one file (1 MiB blocks): records, manifests and weights are hashed with it."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename inside ``path`` durable (a folder's entries live in the folder); filesystems that
    cannot fsync a folder are left as they are."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_with(target: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Atomically write ``target`` with ``writer(tmp_path)`` (e.g. ``df.to_parquet``)."""
    with atomic_path(target) as tmp:
        writer(tmp)


def read_text(path: str | os.PathLike[str]) -> str:
    """A UTF-8 text file's contents; a missing, unreadable or non-UTF-8 file is one clear error."""
    from calibench.errors import CalibenchError
    from calibench.strict import check_regular_file

    check_regular_file(path)  # a FIFO would block, /dev/zero would grow memory without bound
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CalibenchError(f"{path}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise CalibenchError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise CalibenchError(f"{path}: cannot read ({exc.strerror})") from exc


def read_jsonl_lines(path: str | os.PathLike[str]) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file.

    Every JSONL reader in calibench (records, tasks, world, training data, lm-eval logs) goes through
    here, so a missing file, non-UTF-8 text or a malformed line always names ``file:line``.
    """
    from calibench.errors import located
    from calibench.strict import DuplicateKeyError, loads_json

    path = Path(path)
    rows: list[tuple[int, dict[str, Any]]] = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = loads_json(line)
        except json.JSONDecodeError as exc:
            raise located(f"invalid JSON ({exc.msg} at column {exc.colno})", path=path, line=lineno) from exc
        except DuplicateKeyError as exc:
            raise located(f"invalid JSON ({exc}; a key may appear once per object)", path=path, line=lineno) from None
        if not isinstance(obj, dict):
            raise located("each line must be a JSON object", path=path, line=lineno)
        rows.append((lineno, obj))
    return rows


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
