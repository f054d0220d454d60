"""The results store of a study: an embedded DuckDB database plus one Parquet file per unit.

Layout of a study folder::

    study.duckdb            table units(key PRIMARY KEY, kind, status, spec, records_path, metrics, ...)
    records/<key>.parquet   the unit's per-item records (the record contract)
    models/<key>/           outputs of train units (checkpoints)

Crash safety (kill -9 at any moment loses at most the units in flight, never trusts half a unit):
records are written to a temporary name, fsynced, renamed to ``records/<key>.parquet`` and the folder
fsynced; only THEN is the row set to ``finished`` in one transaction. A unit is finished iff its row
says so, so a Parquet file without a finished row is untrusted. ``recover()`` at start removes temp
files, rows that are not finished and the files of such rows; re-running then skips finished units.
A finished train unit's folder carries ``manifest.json`` (size and sha256 of every checkpoint file,
written at finish); ``recover()`` re-runs a unit whose files no longer match it (a truncated checkpoint).
Only one process writes the database (the driver); Ray workers return results to it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from calibench.errors import CalibenchError
from calibench.io import file_sha256, fsync_dir
from calibench.records import write_records

DB_NAME = "study.duckdb"
TMP_MARK = ".tmp"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    key VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    spec JSON NOT NULL,
    records_path VARCHAR,
    records_sha256 VARCHAR,
    records_stat VARCHAR,
    n_records BIGINT,
    metrics JSON,
    started TIMESTAMP,
    finished TIMESTAMP
)
"""


@dataclass(frozen=True)
class StoredUnit:
    """A finished unit as the store returns it."""

    key: str
    kind: str
    spec: dict[str, Any]
    records_path: Path | None
    metrics: Any
    n_records: int | None


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Store:
    """Read/write access to one study folder; open it with ``Store.open(dir)`` (a context manager)."""

    def __init__(self, root: Path, *, read_only: bool = False) -> None:
        import duckdb

        self.root = Path(root)
        self.read_only = read_only
        db = self.root / DB_NAME
        if read_only:
            if not db.exists():
                raise CalibenchError(f"{self.root}: not a study folder (no {DB_NAME}); run `calibench study run` first")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "records").mkdir(exist_ok=True)
            (self.root / "models").mkdir(exist_ok=True)
        try:
            self.con = duckdb.connect(str(db), read_only=read_only)
        except duckdb.Error as exc:
            raise CalibenchError(_open_error(db, exc)) from None
        if not read_only:
            self.con.execute(_SCHEMA)
            # stores written before the quick check existed get the column (NULL: hashed once on resume)
            self.con.execute("ALTER TABLE units ADD COLUMN IF NOT EXISTS records_stat VARCHAR")

    @classmethod
    def open(cls, root: str | os.PathLike[str], *, read_only: bool = False) -> Store:
        return cls(Path(root), read_only=read_only)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    # -- recovery -------------------------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """Forget everything not finished: temp files, unfinished rows and their files, orphans."""
        removed_tmp = 0
        for folder in (self.root / "records", self.root / "models", self.root / "work"):
            if not folder.exists():
                continue
            for p in folder.iterdir():
                if TMP_MARK in p.name:
                    _remove(p)
                    removed_tmp += 1
        if (self.root / "work").exists():
            shutil.rmtree(self.root / "work")
        finished = self.finished_keys()
        stale = [r[0] for r in self.con.execute("SELECT key FROM units WHERE status <> 'finished'").fetchall()]
        # A finished row whose records or checkpoints vanished or changed is not trusted either.
        for key, kind, path, sha, stat in self.con.execute(
                "SELECT key, kind, records_path, records_sha256, records_stat FROM units "
                "WHERE status = 'finished'").fetchall():
            broken = bool(path) and not _records_intact(self.root / path, sha, stat)
            if path and not broken and stat != _stat_key(self.root / path):  # same bytes, touched: remember
                self.con.execute("UPDATE units SET records_stat = ? WHERE key = ?", [_stat_key(self.root / path), key])
            if kind == "train" and not _trusted_train_output(self.model_dir(key)):
                broken = True
            if broken:
                stale.append(key)
                finished.discard(key)
        self.con.execute("BEGIN TRANSACTION")
        for key in stale:
            self.con.execute("DELETE FROM units WHERE key = ?", [key])
        self.con.execute("COMMIT")
        orphans = 0
        for folder, suffix in ((self.root / "records", ".parquet"), (self.root / "models", "")):
            for p in folder.iterdir():
                key = p.name[: -len(suffix)] if suffix and p.name.endswith(suffix) else p.name
                if key not in finished:
                    _remove(p)
                    orphans += 1
        return {"temp_files": removed_tmp, "unfinished_rows": len(stale), "orphans": orphans}

    # -- queries --------------------------------------------------------------------------------------
    def finished_keys(self) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT key FROM units WHERE status = 'finished'").fetchall()}

    def finished(self, kind: str | None = None) -> list[StoredUnit]:
        """Finished units in the order they finished (``kind`` filters train/eval)."""
        sql = ("SELECT key, kind, spec, records_path, metrics, n_records FROM units WHERE status = 'finished'"
               + (" AND kind = ?" if kind else "") + " ORDER BY finished, key")
        rows = self.con.execute(sql, [kind] if kind else []).fetchall()
        return [StoredUnit(key=k, kind=kd, spec=json.loads(spec), metrics=json.loads(m) if m else None,
                           records_path=(self.root / rp) if rp else None, n_records=n)
                for k, kd, spec, rp, m, n in rows]

    def get(self, key: str) -> StoredUnit | None:
        for unit in self.finished():
            if unit.key == key:
                return unit
        return None

    def read_records(self, key: str) -> pd.DataFrame:
        unit = self.get(key)
        if unit is None or unit.records_path is None:
            raise CalibenchError(f"{self.root}: unit {key[:12]} has no finished records")
        if not unit.records_path.is_file():
            raise CalibenchError(f"{unit.records_path}: records of finished unit {key[:12]} are missing; "
                                 "`calibench study run` again re-runs the unit")
        try:
            return pd.read_parquet(unit.records_path)
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise CalibenchError(f"{unit.records_path}: cannot read Parquet ({str(exc).splitlines()[0][:200]}); "
                                 "`calibench study run` again re-runs the unit") from None

    def model_dir(self, key: str) -> Path:
        """Where a finished train unit's outputs live."""
        return self.root / "models" / key

    # -- writes ---------------------------------------------------------------------------------------
    def mark_started(self, key: str, kind: str, spec: dict[str, Any]) -> None:
        """Record that a unit started (a row that is not finished is re-run after a crash)."""
        self.con.execute("BEGIN TRANSACTION")
        self.con.execute("DELETE FROM units WHERE key = ?", [key])
        self.con.execute("INSERT INTO units (key, kind, status, spec, started) VALUES (?, ?, 'running', ?, ?)",
                         [key, kind, json.dumps(spec, sort_keys=True, default=str), _now()])
        self.con.execute("COMMIT")

    def update_spec(self, key: str, spec: dict[str, Any]) -> None:
        """Refresh a finished unit's spec (report labels such as stage or params are not in its key)."""
        self.con.execute("UPDATE units SET spec = ? WHERE key = ? AND status = 'finished'",
                         [json.dumps(spec, sort_keys=True, default=str), key])

    def mark_failed(self, key: str, error: str) -> None:
        """Keep the error for ``study status``-style inspection; a failed unit is re-run next time."""
        self.con.execute("UPDATE units SET status = 'failed', metrics = ? WHERE key = ?",
                         [json.dumps({"error": error}), key])

    def finish_eval(self, key: str, spec: dict[str, Any], records: pd.DataFrame, metrics: Any) -> Path:
        """Write records durably, then mark the unit finished in one transaction."""
        target = self.root / "records" / f"{key}.parquet"
        write_records(records, target)        # temp name + fsync + rename (calibench.io)
        fsync_dir(target.parent)
        self._finish(key, "eval", spec, target, metrics, len(records))
        return target

    def finish_train(self, key: str, spec: dict[str, Any], staged_dir: Path, manifest: Any) -> Path:
        """Move a train unit's staged output folder into place, then mark it finished."""
        from calibench.runfolder import write_manifest

        target = self.model_dir(key)
        write_manifest(staged_dir)  # sizes + sha256 of the checkpoints: a resume verifies them
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged_dir, target)
        fsync_dir(target.parent)
        self._finish(key, "train", spec, None, manifest, None)
        return target

    def staging_dir(self, key: str) -> Path:
        """A fresh temp folder for a train unit's outputs (removed by ``recover`` if the run dies)."""
        path = self.root / "models" / f"{key}{TMP_MARK}"
        _remove(path)
        path.mkdir(parents=True)
        return path

    def work_dir(self, key: str) -> Path:
        path = self.root / "work" / key
        _remove(path)
        path.mkdir(parents=True)
        return path

    def _finish(self, key: str, kind: str, spec: dict[str, Any], records: Path | None, metrics: Any,
                n_records: int | None) -> None:
        rel = records.relative_to(self.root).as_posix() if records else None
        sha = file_sha256(records) if records else None
        stat = _stat_key(records) if records else None
        row = self.con.execute("SELECT started FROM units WHERE key = ?", [key]).fetchone()
        started = row[0] if row and row[0] else _now()
        self.con.execute("BEGIN TRANSACTION")
        try:
            self.con.execute("DELETE FROM units WHERE key = ?", [key])
            self.con.execute(
                "INSERT INTO units (key, kind, status, spec, records_path, records_sha256, records_stat, n_records, "
                "metrics, started, finished) VALUES (?, ?, 'finished', ?, ?, ?, ?, ?, ?, ?, ?)",
                [key, kind, json.dumps(spec, sort_keys=True, default=str), rel, sha, stat, n_records,
                 json.dumps(_finite(metrics), sort_keys=True, default=_json_default), started, _now()])
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("CHECKPOINT")


def _open_error(db: Path, exc: Exception) -> str:
    """One line for a database that will not open: held by another writer, or not a DuckDB file."""
    text = " ".join(str(exc).split())[:200]
    if "lock" in text.lower():
        return (f"{db}: cannot open the study database ({text}); is another `calibench study run` writing "
                "this folder?")
    return (f"{db}: not a readable DuckDB database ({text}); the file is corrupt or not a study database; "
            "move it away to start the study's bookkeeping afresh (records/ and models/ are kept)")


def _stat_key(path: Path) -> str:
    """Size and modification time (ns) of a file: what a resume compares before it would re-hash."""
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _records_intact(path: Path, sha: str | None, stat: str | None) -> bool:
    """Whether a finished unit's records file is the one it finished with.

    The size and mtime recorded at finish are checked first, so a resume of a study with thousands of
    units (or million-token CLM records) does not re-read every file; only a file whose size or mtime
    moved (or a store from before the quick check) is hashed against the recorded SHA-256. A file
    truncated or rewritten by another program changes its size or mtime.
    """
    if not path.exists():
        return False
    if stat is not None and _stat_key(path) == stat:
        return True
    return file_sha256(path) == sha


def _trusted_train_output(folder: Path) -> bool:
    """A finished train unit's folder matches the manifest written when it finished (a folder from before
    manifests existed is trusted as it is)."""
    from calibench.runfolder import MANIFEST_FILE, verify_folder

    if not folder.is_dir():
        return False
    if not (folder / MANIFEST_FILE).is_file():
        return True
    try:
        return verify_folder(folder, what="train output")
    except CalibenchError:
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _finite(obj: Any) -> Any:
    """Replace NaN/inf by None: JSON has no NaN and DuckDB's JSON type rejects it."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
