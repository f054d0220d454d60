"""Run folders written as one unit, and checked before they are read.

Why: ``calibench eval --out EXISTING`` used to rewrite files in place, so a kill or a full disk left a
folder mixing the new ``records.parquet`` with the previous run's ``metrics.json``, which ``compare``
then used. Now:

* ``staged_folder(out)`` yields a fresh hidden sibling folder; the writer fills it, ``manifest.json``
  (every file's size and sha256) is written last, and the folder is swapped into place in one
  ``renameat2(RENAME_EXCHANGE)`` (Linux; elsewhere two renames, so a crash between them leaves the
  previous run under ``.NAME.old-*`` and no ``NAME``, still never a mix). A kill at any point leaves
  either the old folder or the new one.
* ``verify_folder(folder)`` (called by ``load_run_records``, hence by ``compare``, ``metrics``, and
  the study store for train outputs) refuses a folder whose files do not match its manifest.

A folder without ``manifest.json`` was written by calibench before issue 11, or by hand: it is read as
it is; an old eval run folder (it has ``config.json``) gets an ``UnverifiedRunWarning`` saying it cannot
be checked, a hand-made records folder is read silently.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError, quote
from calibench.io import file_sha256, fsync_dir

MANIFEST_FILE = "manifest.json"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class UnverifiedRunWarning(UserWarning):
    """A run folder without a manifest (written before manifests existed): read, but not verified."""


def build_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Size and sha256 of every regular file under ``folder`` (relative POSIX paths, sorted)."""
    root = Path(folder)
    files: dict[str, dict[str, Any]] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.name != MANIFEST_FILE:
            files[p.relative_to(root).as_posix()] = {"size": p.stat().st_size, "sha256": file_sha256(p)}
    return {"calibench_manifest": 1, "files": files}


def write_manifest(folder: str | os.PathLike[str]) -> Path:
    """Write ``folder/manifest.json`` (atomically, last): the folder is complete once it exists."""
    from calibench.io import write_json

    target = Path(folder) / MANIFEST_FILE
    write_json(target, build_manifest(folder))
    return target


def verify_folder(folder: str | os.PathLike[str], *, what: str = "run folder", require: bool = False) -> bool:
    """Check every file listed in ``folder``'s manifest (size, then sha256); True when verified.

    A mismatch or a missing file is a ``CalibenchError``; a folder without a manifest is accepted (with
    an ``UnverifiedRunWarning`` when it is an old eval run folder), or refused when ``require``.
    """
    import json

    from calibench.strict import DuplicateKeyError, loads_json

    root = Path(folder)
    manifest = root / MANIFEST_FILE
    if not manifest.is_file():
        if require:
            raise CalibenchError(f"{root}: no {MANIFEST_FILE}: the {what} is incomplete (interrupted while "
                                 "being written); write it again")
        if (root / "config.json").is_file():  # an eval run from before manifests: say it is unchecked
            warnings.warn(f"{root}: no {MANIFEST_FILE} (written by an older calibench); its files are not "
                          "verified", UnverifiedRunWarning, stacklevel=2)
        return False
    try:
        data = loads_json(manifest.read_text(encoding="utf-8"))
        files = data["files"]
        if not isinstance(files, dict):
            raise TypeError
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, DuplicateKeyError, KeyError, TypeError):
        raise CalibenchError(f"{manifest}: unreadable manifest; the {what} cannot be trusted") from None
    for name, entry in files.items():
        p = root / name
        try:
            size = p.stat().st_size
        except OSError:
            raise CalibenchError(f"{root}: {quote(name)} is listed in {MANIFEST_FILE} but missing; the {what} "
                                 "was changed or only partly copied") from None
        if size != entry.get("size") or file_sha256(p) != entry.get("sha256"):
            raise CalibenchError(f"{root}: {quote(name)} does not match {MANIFEST_FILE} (size {size}, "
                                 f"expected {entry.get('size')}); the {what} was changed, truncated or mixed "
                                 "with another run; write it again")
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the call is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (38, 22, 95):  # ENOSYS, EINVAL (file system without it), EOPNOTSUPP
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _is_replaceable(out: Path) -> bool:
    """An existing ``--out`` may be replaced only if it is empty or a calibench run (or compare) folder."""
    if not any(out.iterdir()):
        return True
    return any((out / n).is_file() for n in (MANIFEST_FILE, "records.parquet", "config.json", "compare.json"))


def clean_stale(out: Path) -> None:
    """Remove staging and old copies that a killed earlier write left beside ``out``."""
    if not out.parent.is_dir():
        return
    for p in out.parent.glob(f".{out.name}.*"):
        if (".tmp-" in p.name or ".old-" in p.name) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that is a file, or a folder of something else (it would be replaced)."""
    if out.exists() and not out.is_dir():
        raise CalibenchError(f"{out}: exists and is not a folder")
    if out.is_dir() and not _is_replaceable(out):
        raise CalibenchError(f"{out}: exists and is not a calibench run folder (it would be replaced); "
                             "choose a new --out")


@contextlib.contextmanager
def staged_folder(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh folder to write a run into; on success write its manifest and swap it into ``out``.

    On an error the staged folder is removed and ``out`` is left as it was.
    """
    out = Path(out)
    check_out(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(out)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:  # name the folder the user asked for, not the staging one
        raise OSError(exc.errno, exc.strerror, str(out)) from None
    try:
        yield stage
        write_manifest(stage)
        fsync_dir(stage)
        os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; honour the user's umask
        if not out.exists():
            os.rename(stage, out)
        elif _exchange(stage, out):
            shutil.rmtree(stage, ignore_errors=True)  # ``stage`` now holds the previous run
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rmdir(old)
            os.rename(out, old)
            os.rename(stage, out)
            shutil.rmtree(old, ignore_errors=True)
        fsync_dir(out.parent)
    finally:
        if stage.exists() and stage != out:
            shutil.rmtree(stage, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
