"""Model loading: lm-eval style model args, safe defaults, local revisions, PEFT, clear errors."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from calibench.errors import CalibenchError
from calibench.models.loading import ALLOWED_KEYS, ModelSpec, load_model, parse_model_args
from conftest_lm_eval import tiny_model_dir  # noqa: F401  (session fixture)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the weights-hash cache out of the user's home."""
    monkeypatch.setenv("CALIBENCH_CACHE", str(tmp_path / "cache"))


def logits(loaded, text: str = "The capital of France is Paris") -> np.ndarray:
    ids = torch.tensor([loaded.tokenizer.encode(text)])
    with torch.no_grad():
        return loaded.model(ids).logits[0].numpy()


# ------------------------------------------------------------------ parse_model_args


def test_parse_model_args_full() -> None:
    spec = parse_model_args(
        "pretrained=EleutherAI/pythia-70m, revision=step1000,peft=adapters/x,dtype=bf16,max_length=512"
    )
    assert spec == ModelSpec(
        pretrained="EleutherAI/pythia-70m",
        revision="step1000",
        peft="adapters/x",
        dtype="bfloat16",
        max_length=512,
    )
    assert parse_model_args(spec.to_args()) == spec
    assert parse_model_args("pretrained=a,trust_remote_code=True").trust_remote_code is True


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("pretrained=x,batch=3", "unknown key 'batch'.*allowed keys: pretrained, revision, peft"),
        ("revision=step1", "pretrained=PATH_OR_HUB_ID' is required"),
        ("pretrained=x,dtype=float8", "dtype 'float8'"),
        ("pretrained=x,pretrained=y", "given twice"),
        ("pretrained=x,peft", "not key=value"),
        ("pretrained=x,max_length=big", "not an integer"),
        ("pretrained=", "empty value"),
    ],
)
def test_parse_model_args_errors(text: str, match: str) -> None:
    with pytest.raises(CalibenchError, match=match):
        parse_model_args(text)


def test_allowed_keys_cover_the_spec() -> None:
    assert set(ALLOWED_KEYS) == set(ModelSpec.__dataclass_fields__)


# ------------------------------------------------------------------ local folders


def test_load_local_folder_hash_and_pad(tiny_model_dir: Path) -> None:  # noqa: F811
    loaded = load_model(f"pretrained={tiny_model_dir}")
    assert loaded.model_id == str(tiny_model_dir.resolve())
    assert loaded.revision is None
    assert loaded.tokenizer.pad_token_id == loaded.tokenizer.eos_token_id  # set for batching
    assert not loaded.model.training
    assert next(loaded.model.parameters()).dtype == torch.float32
    file_hash = hashlib.sha256((tiny_model_dir / "model.safetensors").read_bytes()).hexdigest()
    expected = hashlib.sha256(f"model.safetensors:{file_hash}\n".encode()).hexdigest()
    assert loaded.weights_hash == expected
    assert load_model(f"pretrained={tiny_model_dir}").weights_hash == expected  # cached path agrees


def test_dtype_is_applied(tiny_model_dir: Path) -> None:  # noqa: F811
    loaded = load_model(f"pretrained={tiny_model_dir},dtype=bfloat16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_revision_selects_local_checkpoint_subfolder(tiny_model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    from transformers import AutoModelForCausalLM

    root = tmp_path / "pythia-lab"
    shutil.copytree(tiny_model_dir, root / "step0")
    changed = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in changed.parameters():
            p.add_(0.05)
    changed.save_pretrained(root / "step10")  # weights only: its tokenizer comes from the parent folder
    shutil.copy(tiny_model_dir / "tokenizer.json", root / "tokenizer.json")
    shutil.copy(tiny_model_dir / "tokenizer_config.json", root / "tokenizer_config.json")

    step0 = load_model(f"pretrained={root},revision=step0")
    step10 = load_model(f"pretrained={root},revision=step10")
    assert step0.revision == "step0" and step10.model_id.endswith("@step10")
    assert step0.weights_hash != step10.weights_hash
    np.testing.assert_allclose(logits(step0), logits(load_model(f"pretrained={tiny_model_dir}")), atol=1e-6)
    assert not np.allclose(logits(step0), logits(step10), atol=1e-3)
    with pytest.raises(CalibenchError, match=r"revision 'step99' is not a sub-folder.*step0, step10"):
        load_model(f"pretrained={root},revision=step99")


def test_missing_path_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CalibenchError, match="model not found") as err:
        load_model(f"pretrained={tmp_path / 'nope'}")
    assert "\n" not in str(err.value)


def test_folder_without_weights(tmp_path: Path) -> None:
    with pytest.raises(CalibenchError, match=r"no model weights \(\*\.safetensors\)"):
        load_model(f"pretrained={tmp_path}")


def test_pickle_weights_need_allow_pickle(tiny_model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path / "bin-only"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    folder.mkdir()
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # a pickle, as older checkpoints ship
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    assert not list(folder.glob("*.safetensors")) and list(folder.glob("*.bin"))
    with pytest.raises(CalibenchError, match="--allow-pickle"):
        load_model(f"pretrained={folder}")
    loaded = load_model(f"pretrained={folder}", allow_pickle=True)
    np.testing.assert_allclose(logits(loaded), logits(load_model(f"pretrained={tiny_model_dir}")), atol=1e-6)


def test_hub_id_while_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(CalibenchError, match="not in the local cache and HF_HUB_OFFLINE=1") as err:
        load_model("pretrained=EleutherAI/pythia-70m,revision=step1000")
    assert "\n" not in str(err.value)


def test_missing_gguf_file(tiny_model_dir: Path) -> None:  # noqa: F811
    with pytest.raises(CalibenchError, match="GGUF file 'model.gguf' not found"):
        load_model(f"pretrained={tiny_model_dir},gguf_file=model.gguf")


def test_unknown_builtin_name_is_not_a_hub_lookup_when_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CalibenchError, match="HF_HUB_OFFLINE"):
        load_model("pretrained=smollm2-999m")


# ------------------------------------------------------------------ PEFT


def test_peft_adapter_changes_outputs_like_peft_does(tiny_model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["query_key_value"], lora_dropout=0.0)
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # B starts at zero; make the adapter do something
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter)

    plain = load_model(f"pretrained={tiny_model_dir}")
    tuned = load_model(f"pretrained={tiny_model_dir},peft={adapter}")
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter
    ).eval()
    ids = torch.tensor([plain.tokenizer.encode("The capital of France is Paris")])
    with torch.no_grad():
        expected = reference(ids).logits[0].numpy()
    np.testing.assert_allclose(logits(tuned), expected, atol=1e-4)
    assert not np.allclose(logits(plain), expected, atol=1e-3)
    assert tuned.weights_hash != plain.weights_hash
    with pytest.raises(CalibenchError, match="not a PEFT adapter folder"):
        load_model(f"pretrained={tiny_model_dir},peft={tmp_path}")
    with pytest.raises(CalibenchError, match="this is a PEFT adapter"):
        load_model(f"pretrained={adapter}")


# ------------------------------------------------------------------ the one weights hasher


def test_study_keys_pin_the_weights_hash_runs_record(tiny_model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """A study unit's model identity is the weights hash a run's config.json records (one hasher, one
    file set), per revision sub-folder."""
    import yaml

    from calibench.models.weights import WeightsHasher, weight_files
    from calibench.study.config import load_study
    from calibench.study.units import _model_identity, expand

    assert [p.name for p in weight_files(tiny_model_dir)] == ["model.safetensors"]  # configs are not weights
    root = tmp_path / "family"
    shutil.copytree(tiny_model_dir, root / "step0")
    shutil.copytree(tiny_model_dir, root / "step10")
    (root / "step10" / "model.safetensors").write_bytes((root / "step10" / "model.safetensors").read_bytes()[::-1])
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump({
        "name": "fam", "tasks": [{"name": "world-mc", "methods": ["choice"]}],
        "models": [{"name": "fam", "pretrained": str(root), "revisions": ["step0", "step10"]}]}))
    study = load_study(study_file)
    hasher = WeightsHasher()
    entry = study.models[0]
    ids = {rev: _model_identity(entry, rev, {}, hasher)["weights"] for rev in ("step0", "step10")}
    assert ids["step0"] == "sha256:" + load_model(f"pretrained={root},revision=step0").weights_hash
    assert ids["step0"] == "sha256:" + load_model(f"pretrained={tiny_model_dir}").weights_hash
    assert ids["step10"] != ids["step0"]
    assert ids["step10"] == "sha256:" + hasher.folder(root / "step10")
    keys = [u.key for u in expand(study, task_resolver=lambda task, settings: "task-hash", hasher=hasher)]
    assert len(set(keys)) == 2


def test_weights_hasher_caches_by_size_and_mtime(tmp_path: Path) -> None:
    import os

    from calibench.models.weights import WeightsHasher

    f = tmp_path / "m" / "model.safetensors"
    f.parent.mkdir()
    f.write_bytes(b"weights-v1")
    store = tmp_path / "hashes.json"
    first = WeightsHasher(store).file_sha256(f)
    assert first == hashlib.sha256(b"weights-v1").hexdigest() and store.is_file()
    st = f.stat()
    f.write_bytes(b"weights-v2")  # same size; put the mtime back: the cache cannot tell
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert WeightsHasher(store).file_sha256(f) == first  # remembered in the store across hashers
    assert WeightsHasher(store, persist=False).file_sha256(f) == hashlib.sha256(b"weights-v2").hexdigest()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert WeightsHasher(store).file_sha256(f) == hashlib.sha256(b"weights-v2").hexdigest()
    expected = hashlib.sha256(f"model.safetensors:{hashlib.sha256(b'weights-v2').hexdigest()}\n".encode())
    assert WeightsHasher(store).folder(f.parent) == expected.hexdigest()
    with pytest.raises(CalibenchError, match="cannot read weights"):
        WeightsHasher(store).file_sha256(tmp_path / "missing.safetensors")
