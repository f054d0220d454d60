"""The one weights hasher: what ``LoadedModel.weights_hash`` records and what a study unit key pins.

The hashed file set (``weight_files``) is the files the loader reads the model's parameters from:

* the named GGUF file when ``gguf_file`` is given;
* else every ``*.safetensors`` file directly in the model folder;
* else every ``*.bin`` file there (pickles, loaded only with ``allow_pickle``).

Config and tokenizer files are not in the set (their names and bytes would make the hash depend on
saving details such as JSON key order). A folder whose checkpoints sit in sub-folders
(``revision=step1000``) is hashed per checkpoint: the sub-folder the revision selects.

The digest is ``sha256`` over lines ``<file name>:<file sha256>\\n`` in file-name order. Per-file digests
are remembered by a ``WeightsHasher`` object (in memory, and in ``<calibench cache>/hashes.json`` so a
re-run does not re-read gigabytes) until a file's size or mtime changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from calibench.errors import CalibenchError
from calibench.io import file_sha256


def weight_files(folder: str | os.PathLike[str], *, gguf_file: str | None = None) -> list[Path]:
    """The files whose bytes are the model's parameters (see the module docstring)."""
    folder = Path(folder)
    if gguf_file:
        return [folder / gguf_file]
    return sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))


class WeightsHasher:
    """Hashes model weights; per-file digests are cached (in this object and in ``store``)."""

    def __init__(self, store: str | os.PathLike[str] | None = None, *, persist: bool = True) -> None:
        self._store = Path(store) if store is not None else None
        self._persist = persist
        self._memo: dict[str, str] = {}

    def _store_path(self) -> Path:
        if self._store is None:
            from calibench.models.builtin import cache_root

            self._store = cache_root() / "hashes.json"
        return self._store

    def file_sha256(self, path: str | os.PathLike[str]) -> str:
        """Streamed sha256 of one file, re-read only when its size or mtime changed."""
        path = Path(path).resolve()
        try:
            stat = path.stat()
        except OSError as exc:
            raise CalibenchError(f"{path}: cannot read weights ({exc.strerror})") from exc
        key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
        if key in self._memo:
            return self._memo[key]
        stored = self._load() if self._persist else {}
        if key in stored:
            self._memo[key] = stored[key]
            return stored[key]
        self._memo[key] = file_sha256(path)
        if self._persist:
            stored = {k: v for k, v in stored.items() if Path(k.split("|", 1)[0]).exists()}  # forget deleted files
            stored[key] = self._memo[key]
            self._save(stored)
        return self._memo[key]

    def files(self, files: list[Path]) -> str:
        """Combine per-file digests (``name:sha256`` lines, in the given order) into one."""
        combined = hashlib.sha256()
        for f in files:
            combined.update(f"{Path(f).name}:{self.file_sha256(f)}\n".encode())
        return combined.hexdigest()

    def folder(self, folder: str | os.PathLike[str], *, gguf_file: str | None = None) -> str:
        """The weights hash of a model folder: ``files(weight_files(folder, gguf_file=...))``."""
        return self.files(weight_files(folder, gguf_file=gguf_file))

    def _load(self) -> dict[str, str]:
        store = self._store_path()
        if not store.is_file():
            return {}
        try:
            data = json.loads(store.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict[str, str]) -> None:
        from calibench.io import write_json

        with contextlib.suppress(OSError):  # a read-only cache only costs the re-hash next time
            write_json(self._store_path(), data)
