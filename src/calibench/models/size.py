"""A model's parameter count from its files, before loading it (for the thread default).

``calibench eval`` picks its torch thread count before the model loads (``calibench.threads``), so it
needs the size from what is on disk: safetensors headers (read, not the tensors), the shapes in a GGUF,
the known size of a built-in model. A hub id counts only when its weights are in the local cache;
whatever cannot be counted cheaply is ``None`` ("unknown"), never a download.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from calibench.errors import CalibenchError


def safetensors_parameters(path: Path) -> int:
    """Number of values in a safetensors file, from its JSON header (8-byte length + header)."""
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def _gguf_parameters(path: Path) -> int:
    from gguf import GGUFReader

    return int(sum(int(t.n_elements) for t in GGUFReader(str(path)).tensors))


def folder_parameters(folder: Path) -> int | None:
    """Parameters in a folder's safetensors files (None: no safetensors there)."""
    files = sorted(folder.glob("*.safetensors"))
    return sum(safetensors_parameters(f) for f in files) if files else None


def _hub_parameters(repo_id: str, revision: str | None) -> int | None:
    from huggingface_hub import try_to_load_from_cache

    single = try_to_load_from_cache(repo_id, "model.safetensors", revision=revision)
    if isinstance(single, str):
        return safetensors_parameters(Path(single))
    index = try_to_load_from_cache(repo_id, "model.safetensors.index.json", revision=revision)
    if not isinstance(index, str):
        return None
    shards = sorted(set(json.loads(Path(index).read_text(encoding="utf-8")).get("weight_map", {}).values()))
    paths = [try_to_load_from_cache(repo_id, s, revision=revision) for s in shards]
    if not paths or not all(isinstance(p, str) for p in paths):
        return None
    return sum(safetensors_parameters(Path(p)) for p in paths)  # type: ignore[arg-type]


def estimate_parameters(model_args: str) -> int | None:
    """Parameter count of the model ``model_args`` names (lm-eval style), or None when it is not cheap to
    know. Never raises: a bad spec is reported by the loader, with its own message."""
    from calibench.models.builtin import BUILTIN_MODELS
    from calibench.models.loading import parse_model_args

    try:
        spec = parse_model_args(model_args)
        if spec.pretrained in BUILTIN_MODELS:
            return BUILTIN_MODELS[spec.pretrained].params
        path = Path(spec.pretrained).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            return _gguf_parameters(path)
        if path.is_dir():
            folder = path / spec.revision if spec.revision else path
            if spec.gguf_file:
                return _gguf_parameters(folder / spec.gguf_file)
            return folder_parameters(folder)
        return _hub_parameters(spec.pretrained, spec.revision)
    except (CalibenchError, OSError, ValueError, KeyError, TypeError, struct.error):
        return None
