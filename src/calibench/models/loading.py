"""Load causal LMs the lm-evaluation-harness way (``--model-args pretrained=...,revision=...``), safely.

Safety defaults: no ``trust_remote_code`` unless asked; safetensors only unless ``allow_pickle``
(``pytorch_model.bin`` files are pickles and can run code when loaded). Every user mistake (missing
path, folder without weights, hub id while offline, unknown key) is one ``CalibenchError`` line.

``revision`` works for hub ids (a branch, tag or commit, e.g. Pythia's ``step1000``) and for local
folders laid out like a hub repo with checkpoints in sub-folders: ``pretrained=runs/lab/pythia-s,
revision=step1000`` loads ``runs/lab/pythia-s/step1000/``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError
from calibench.models.weights import WeightsHasher

ALLOWED_KEYS = (
    "pretrained",
    "revision",
    "peft",
    "dtype",
    "gguf_file",
    "tokenizer",
    "max_length",
    "trust_remote_code",
)
DTYPES = {
    "auto": "auto",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass(frozen=True)
class ModelSpec:
    """What to load, as parsed from lm-eval style model args."""

    pretrained: str
    revision: str | None = None
    peft: str | None = None
    dtype: str | None = None
    gguf_file: str | None = None
    tokenizer: str | None = None
    max_length: int | None = None
    trust_remote_code: bool = False

    def to_args(self) -> str:
        """Back to the ``key=value,...`` form (for configs and logs)."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value not in (None, False):
                parts.append(f"{f.name}={value}")
        return ",".join(parts)


@dataclass
class LoadedModel:
    """A loaded model with the provenance a run records."""

    model: Any
    tokenizer: Any
    spec: ModelSpec
    model_id: str
    revision: str | None
    weights_hash: str


def parse_model_args(text: str) -> ModelSpec:
    """Parse ``pretrained=ID,revision=R,peft=P,dtype=float32,gguf_file=F`` into a ModelSpec."""
    values: dict[str, Any] = {}
    for raw in (text or "").split(","):
        part = raw.strip()
        if not part:
            continue
        if "=" not in part:
            raise CalibenchError(
                f"model args: '{part}' is not key=value (allowed keys: {', '.join(ALLOWED_KEYS)})"
            )
        key, value = (s.strip() for s in part.split("=", 1))
        if key not in ALLOWED_KEYS:
            raise CalibenchError(f"model args: unknown key '{key}' (allowed keys: {', '.join(ALLOWED_KEYS)})")
        if key in values:
            raise CalibenchError(f"model args: key '{key}' given twice")
        if not value:
            raise CalibenchError(f"model args: key '{key}' has an empty value")
        values[key] = value
    if "pretrained" not in values:
        raise CalibenchError("model args: 'pretrained=PATH_OR_HUB_ID' is required")
    if "dtype" in values:
        dtype = values["dtype"].lower()
        if dtype not in DTYPES:
            raise CalibenchError(
                f"model args: dtype '{values['dtype']}' is not one of {', '.join(sorted(DTYPES))}"
            )
        values["dtype"] = DTYPES[dtype]
    if "max_length" in values:
        try:
            values["max_length"] = int(values["max_length"])
        except ValueError:
            raise CalibenchError(
                f"model args: max_length '{values['max_length']}' is not an integer"
            ) from None
        if values["max_length"] < 2:
            raise CalibenchError("model args: max_length must be at least 2")
    if "trust_remote_code" in values:
        flag = values["trust_remote_code"].lower()
        if flag not in ("true", "false", "1", "0", "yes", "no"):
            raise CalibenchError(f"model args: trust_remote_code must be true or false, got '{flag}'")
        values["trust_remote_code"] = flag in ("true", "1", "yes")
    return ModelSpec(**values)


# ----------------------------------------------------------------------------------------------
# resolving what to load


@dataclass
class _Source:
    """Where the weights come from once the spec is resolved."""

    location: str  # local folder or hub id
    local: bool
    revision: str | None  # hub revision (None for local folders)
    gguf_file: str | None
    model_id: str
    tokenizer_location: str
    local_files_only: bool = False  # a cached hub id while the hub cannot be reached: no retries


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _TOKENIZER_FILES)


def _check_weights(folder: Path, *, allow_pickle: bool, gguf_file: str | None) -> None:
    """A folder must hold safetensors weights (or pickles when allowed, or the named GGUF file)."""
    if gguf_file:
        if not (folder / gguf_file).is_file():
            raise CalibenchError(f"{folder}: GGUF file '{gguf_file}' not found")
        return
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
    if pickles:
        if allow_pickle:
            return
        raise CalibenchError(
            f"{folder}: only pickle weights ({', '.join(pickles[:3])}); pickles can run code when loaded, "
            f"so they are refused unless {PICKLE_HINT} (or convert them to safetensors)"
        )
    raise CalibenchError(f"{folder}: no model weights (*.safetensors) in this folder")


PICKLE_HINT = "pickles are allowed (--allow-pickle; in a study file, settings: allow_pickle: true)"


def check_folder_policy(folder: str | os.PathLike[str], *, allow_pickle: bool, trust_remote_code: bool,
                        gguf_file: str | None = None, need_tokenizer: bool = True) -> None:
    """The one weights policy every loader (eval, train, study, bench) applies to a local model folder:
    safetensors unless ``allow_pickle``; a config or tokenizer config with ``auto_map`` (custom code)
    refused unless ``trust_remote_code`` (transformers would otherwise load the stock class silently);
    tokenizer files present (transformers would otherwise build an empty tokenizer)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibenchError(f"{folder}: no such model folder")
    _check_weights(folder, allow_pickle=allow_pickle, gguf_file=gguf_file)
    if not (folder / "config.json").is_file() and not gguf_file:
        raise CalibenchError(f"{folder}: not a model folder (no config.json)")
    if not trust_remote_code:
        for name in ("config.json", "tokenizer_config.json"):
            if _config_field(folder / name, "auto_map") is not None:
                raise CalibenchError(f"{folder / name}: has 'auto_map' (custom model code); it runs only with "
                                     "--trust-remote-code (trust_remote_code=true), refused otherwise")
    if need_tokenizer and not gguf_file and not _has_tokenizer(folder):
        raise CalibenchError(f"{folder}: no tokenizer files ({', '.join(_TOKENIZER_FILES)}); "
                             "save the tokenizer with the model or pass tokenizer=PATH")


def _config_field(path: Path, key: str) -> Any:
    """``key`` of a JSON config file (None when the file is absent); a broken file is one clear error."""
    import json

    from calibench.io import read_text
    from calibench.strict import MAX_CONFIG_BYTES, DuplicateKeyError, check_regular_file, loads_json

    if not path.is_file():
        return None
    check_regular_file(path, max_bytes=MAX_CONFIG_BYTES, what="JSON config")
    try:
        data = loads_json(read_text(path))
    except (json.JSONDecodeError, DuplicateKeyError) as exc:
        raise CalibenchError(f"{path}: invalid JSON ({exc})") from None
    return data.get(key) if isinstance(data, dict) else None


def _resolve(spec: ModelSpec, *, allow_pickle: bool, trust_remote_code: bool = False) -> _Source:
    import calibench.models.builtin as builtin

    name = spec.pretrained
    if name in builtin.BUILTIN_MODELS:
        folder = builtin.ensure_builtin(name)
        return _Source(str(folder), True, None, None, name, str(folder))

    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        if spec.gguf_file:
            raise CalibenchError(f"{path}: pretrained is a GGUF file, so gguf_file= must not be given too")
        return _Source(str(path.parent), True, None, path.name, str(path), str(path.parent))
    if path.is_dir():
        folder = path
        if spec.revision:
            sub = path / spec.revision
            if not sub.is_dir():
                have = sorted(p.name for p in path.iterdir() if p.is_dir())
                raise CalibenchError(
                    f"{path}: revision '{spec.revision}' is not a sub-folder here"
                    + (f" (sub-folders: {', '.join(have[:10])})" if have else "")
                )
            folder = sub
        if (
            spec.peft is None
            and (folder / "adapter_config.json").is_file()
            and not (folder / "config.json").is_file()
        ):
            raise CalibenchError(
                f"{folder}: this is a PEFT adapter; load it with pretrained=BASE_MODEL,peft={folder}"
            )
        check_folder_policy(folder, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                            gguf_file=spec.gguf_file, need_tokenizer=False)
        tok = folder if _has_tokenizer(folder) else path
        if not spec.tokenizer and not spec.gguf_file and not _has_tokenizer(tok):
            raise CalibenchError(f"{folder}: no tokenizer files ({', '.join(_TOKENIZER_FILES)}); "
                                 "save the tokenizer with the model or pass tokenizer=PATH")
        if spec.tokenizer:
            tok = (
                Path(spec.tokenizer).expanduser()
                if Path(spec.tokenizer).expanduser().exists()
                else spec.tokenizer
            )
        model_id = str(path.resolve()) + (f"@{spec.revision}" if spec.revision else "")
        return _Source(str(folder), True, None, spec.gguf_file, model_id, str(tok))

    looks_like_path = (
        name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name.replace("/", "")
    )
    if looks_like_path or not _HUB_ID.match(name):
        raise CalibenchError(f"model not found: '{name}' is neither a folder nor a hub id")
    if _offline():
        _require_cached(name, spec.revision)
        return _Source(name, False, spec.revision, spec.gguf_file, name, spec.tokenizer or name)
    if not hub_reachable():
        # huggingface_hub would retry for ~25 s before failing; check the cache and stay local instead
        _require_cached(name, spec.revision, reason=f"the hub ({_endpoint()}) cannot be reached")
        return _Source(name, False, spec.revision, spec.gguf_file, name, spec.tokenizer or name, True)
    return _Source(name, False, spec.revision, spec.gguf_file, name, spec.tokenizer or name)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_reachable(timeout: float = 2.0) -> bool:
    """One quick TCP connect to the hub endpoint (True behind a proxy: the proxy decides, not us)."""
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlsplit(_endpoint())
    try:
        socket.create_connection((url.hostname or "", url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
    except OSError:
        return False
    return True


def _require_cached(repo_id: str, revision: str | None, *, reason: str = "HF_HUB_OFFLINE=1 is set") -> None:
    """Without the hub (offline mode, or no network), a hub id only works if it is in the local HF cache."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if not isinstance(found, str):
        rev = f" at revision '{revision}'" if revision else ""
        raise CalibenchError(
            f"hub model '{repo_id}'{rev} is not in the local cache and {reason}; "
            "download it while online or pass a local folder"
            + ("" if "/" in repo_id else " (builtin models: smollm2-135m-instruct, gemma3-270m)")
        )


# ----------------------------------------------------------------------------------------------
# loading


def load_model(
    spec: ModelSpec | str,
    *,
    device: str = "cpu",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    hasher: WeightsHasher | None = None,
) -> LoadedModel:
    """Load model + tokenizer (+ PEFT adapter) for scoring: eval mode, pad token set, on ``device``.

    ``hasher`` hashes the weights (``calibench.models.weights``); pass one to share its file cache.
    """
    hasher = hasher if hasher is not None else WeightsHasher()
    if isinstance(spec, str):
        spec = parse_model_args(spec)
    trust = trust_remote_code or spec.trust_remote_code
    src = _resolve(spec, allow_pickle=allow_pickle, trust_remote_code=trust)
    if not src.local and not trust:
        _refuse_cached_auto_map(src)

    import torch  # noqa: F401  (fail early with a clear import error if torch is missing)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": trust}
    if src.revision:
        kwargs["revision"] = src.revision
    if src.local_files_only:
        kwargs["local_files_only"] = True
    if src.gguf_file:
        kwargs["gguf_file"] = src.gguf_file
    elif not allow_pickle:
        kwargs["use_safetensors"] = True
    dtype = spec.dtype or "float32"
    kwargs["dtype"] = dtype if dtype == "auto" else getattr(__import__("torch"), dtype)
    if device == "auto":
        kwargs["device_map"] = "auto"

    try:
        model = AutoModelForCausalLM.from_pretrained(src.location, **kwargs)
    except Exception as err:  # OSError, ValueError, SafetensorError, UnpicklingError, ...: one line
        if not _is_load_error(err):
            raise
        raise CalibenchError(f"could not load model '{spec.pretrained}': {_first_line(err)}") from None
    tok_kwargs: dict[str, Any] = {"trust_remote_code": trust}
    if src.local_files_only:
        tok_kwargs["local_files_only"] = True
    if src.revision and src.tokenizer_location == src.location:
        tok_kwargs["revision"] = src.revision
    if src.gguf_file and src.tokenizer_location == src.location:
        tok_kwargs["gguf_file"] = src.gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(src.tokenizer_location, **tok_kwargs)
    except (OSError, ValueError) as err:
        raise CalibenchError(
            f"could not load tokenizer '{src.tokenizer_location}': {_first_line(err)}"
        ) from None

    adapter_hash = ""
    if spec.peft:
        model, adapter_hash = _apply_peft(model, spec.peft, allow_pickle=allow_pickle, hasher=hasher)

    if device != "auto":
        try:
            model.to(device)
        except (RuntimeError, AssertionError) as err:
            raise CalibenchError(f"cannot move the model to device '{device}': {_first_line(err)}") from None
    model.eval()
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token

    weights_hash = _weights_hash(src, model, hasher)
    if adapter_hash:
        weights_hash = hashlib.sha256(f"{weights_hash}+{adapter_hash}".encode()).hexdigest()
    return LoadedModel(model, tokenizer, spec, src.model_id, spec.revision, weights_hash)


def _apply_peft(model: Any, adapter: str, *, allow_pickle: bool, hasher: WeightsHasher) -> tuple[Any, str]:
    """Attach a PEFT adapter; LoRA-style adapters are merged so scoring runs at base-model speed."""
    from peft import PeftModel

    path = Path(adapter).expanduser()
    if path.exists():
        if not (path / "adapter_config.json").is_file():
            raise CalibenchError(f"{path}: not a PEFT adapter folder (no adapter_config.json)")
        if not any(path.glob("*.safetensors")):
            if not any(path.glob("*.bin")):
                raise CalibenchError(f"{path}: PEFT adapter without weights (adapter_model.safetensors)")
            if not allow_pickle:
                raise CalibenchError(
                    f"{path}: adapter weights are a pickle (.bin); they load only if {PICKLE_HINT}"
                )
        adapter_hash = hasher.folder(path)
    else:
        if not _HUB_ID.match(adapter) or adapter.startswith((".", "/", "~")):
            raise CalibenchError(f"PEFT adapter not found: {adapter}")
        if _offline():
            _require_cached_file(adapter, "adapter_config.json")
        adapter_hash = f"hub:{adapter}"
    try:
        peft_model = PeftModel.from_pretrained(model, str(path) if path.exists() else adapter)
    except (OSError, ValueError) as err:
        raise CalibenchError(f"could not load PEFT adapter '{adapter}': {_first_line(err)}") from None
    if hasattr(peft_model, "merge_and_unload"):
        try:
            return peft_model.merge_and_unload(), adapter_hash
        except (ValueError, NotImplementedError, AttributeError):
            pass
    return peft_model, adapter_hash


def _require_cached_file(repo_id: str, filename: str) -> None:
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(repo_id, filename), str):
        raise CalibenchError(f"hub adapter '{repo_id}' is not in the local cache and HF_HUB_OFFLINE=1 is set")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0][:300] if text else type(err).__name__)


def load_error_line(err: BaseException) -> str | None:
    """One line for an error a broken or hostile weights file raises while loading; None for others."""
    return _first_line(err) if _is_load_error(err) else None


def _is_load_error(err: BaseException) -> bool:
    """Errors a hostile or broken weights file raises while loading (not calibench bugs)."""
    import pickle

    return (isinstance(err, (OSError, ValueError, EOFError, pickle.UnpicklingError, MemoryError))
            or type(err).__name__ == "SafetensorError" or type(err).__module__.startswith("safetensors"))


def _refuse_cached_auto_map(src: _Source) -> None:
    """A hub model whose cached config has ``auto_map`` needs ``--trust-remote-code`` too."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(src.location, "config.json", revision=src.revision)
    if isinstance(found, str) and _config_field(Path(found), "auto_map") is not None:
        raise CalibenchError(f"hub model '{src.location}' has 'auto_map' (custom model code) in its config; "
                             "it runs only with --trust-remote-code")


# ----------------------------------------------------------------------------------------------
# weights hash (the file set and the hasher live in calibench.models.weights)


def _weights_hash(src: _Source, model: Any, hasher: WeightsHasher) -> str:
    """The local folder's weights hash, or the resolved hub commit."""
    if src.local:
        return hasher.folder(src.location, gguf_file=src.gguf_file)
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    return f"hub:{src.location}@{commit or src.revision or 'main'}"
