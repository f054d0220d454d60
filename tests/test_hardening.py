"""Issue 11: no pickle or remote code by any path, bounded resources on hostile input, run folders that
are atomic, one line for every error. One test per audit finding, named after what it guards."""

from __future__ import annotations

import errno
import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from calibench.errors import CalibenchError, quote

HOSTILE = Path(__file__).parent / "hostile"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from calibench.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("hardening")
    return build_tiny_model(root / "tiny", ["The capital of France is Paris. Berlin is in Germany. " * 8] * 4,
                            vocab_size=300, hidden=16, layers=1, heads=2, context=64, seed=0)


def _variant(tiny: Path, tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    shutil.copytree(tiny, out)
    return out


def _pickle_only(tiny: Path, tmp_path: Path) -> Path:
    import torch
    from safetensors.torch import load_file

    out = _variant(tiny, tmp_path, "pickled")
    torch.save(load_file(out / "model.safetensors"), out / "pytorch_model.bin")
    (out / "model.safetensors").unlink()
    return out


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from calibench.cli import main

    code = main(argv)
    return code, capsys.readouterr().err


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- 1. pickles: the training loader asks for safetensors too ---------------------------------------------


def test_train_loader_refuses_pickle_only_weights_without_allow_pickle(tiny: Path, tmp_path: Path) -> None:
    from calibench.train.sft import load_base

    folder = _pickle_only(tiny, tmp_path)
    with pytest.raises(CalibenchError, match=r"only pickle weights \(pytorch_model.bin\).*--allow-pickle"):
        load_base(folder)
    model, _ = load_base(folder, allow_pickle=True)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_train_cli_refuses_pickle_base_with_one_line(tiny: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    folder = _pickle_only(tiny, tmp_path)
    sft, pref = tmp_path / "sft.jsonl", tmp_path / "pref.jsonl"
    sft.write_text(json.dumps({"prompt": "Capital of France?", "completion": " Paris"}) + "\n")
    pref.write_text(json.dumps({"prompt": "Capital of France?", "chosen": " Paris", "rejected": " Rome"}) + "\n")
    for cmd in (["sft", "--base", str(folder), "--data", str(sft), "--eval-items", "0"],
                ["dpo", "--base", str(folder), "--data", str(pref), "--eval-items", "0"],
                ["reward", "--base", str(folder), "--data", str(pref)]):
        code, err = _cli(["train", *cmd, "--out", str(tmp_path / "o"), "--epochs", "1"], capsys)
        assert code == 2
        assert "only pickle weights" in _one_line(err)
    assert not (tmp_path / "o").exists()


def test_study_allow_pickle_is_a_setting_and_named_in_the_message(tiny: Path, tmp_path: Path) -> None:
    from calibench.study.work import ModelCache, execute_unit

    folder = _pickle_only(tiny, tmp_path)
    spec = {"kind": "eval", "source": "pretrained", "pretrained": str(folder), "revision": "", "model": "p",
            "task": "world-mc", "limit": 2, "methods": ["choice"], "chat_template": False,
            "settings": {"num_fewshot": 0, "seed": 0, "device": "cpu", "batch_size": 8, "threads": 1,
                         "n_bins": 10, "bootstrap": 0, "allow_pickle": False}}
    refused = execute_unit("k", spec, cache=ModelCache())
    assert not refused.ok and "settings: allow_pickle: true" in (refused.error or "")
    spec["settings"]["allow_pickle"] = True
    assert execute_unit("k", spec, cache=ModelCache()).ok


# -- 2. YAML alias bombs and unbounded quoting ------------------------------------------------------------


def test_yaml_alias_bomb_is_refused_quickly(capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    code, err = _cli(["study", "plan", str(HOSTILE / "alias_bomb.yaml")], capsys)
    assert code == 2
    assert "aliases expand to more than 100000 nodes" in _one_line(err)
    assert time.monotonic() - t0 < 10


def test_yaml_aliases_of_a_normal_size_still_work() -> None:
    from calibench.strict import load_yaml

    assert load_yaml("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}


def test_error_messages_truncate_quoted_values() -> None:
    assert len(quote("x" * 10**6)) <= 80
    nested: list = ["lol"] * 9
    for _ in range(8):
        nested = [nested] * 9  # 9**9 leaves, shared
    assert len(quote(nested)) <= 80


def test_records_error_quotes_a_huge_value_briefly(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(["metrics", str(HOSTILE / "huge_value.jsonl"), "--bootstrap", "0"], capsys)
    assert code == 2
    assert len(_one_line(err)) < 400


# -- 3. run folders are one unit --------------------------------------------------------------------------


def test_failed_eval_leaves_the_previous_run_folder_intact(tiny: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import calibench.evaluate as evaluate
    from calibench.runfolder import build_manifest, verify_folder

    out = tmp_path / "run"
    evaluate.run_eval(f"pretrained={tiny}", ["world-mc"], "choice", out, limit=3, bootstrap=0, progress=False,
                      figures=False)
    before = build_manifest(out)
    assert verify_folder(out)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "metrics.json"))

    monkeypatch.setattr(evaluate, "write_json", disk_full)
    with pytest.raises(OSError):
        evaluate.run_eval(f"pretrained={tiny}", ["world-mc"], "choice", out, limit=5, bootstrap=0, progress=False,
                          figures=False)
    assert build_manifest(out) == before
    assert not list(tmp_path.glob(".run.*"))  # no staging left behind


def test_readers_refuse_a_run_folder_that_does_not_match_its_manifest(tiny: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from calibench.evaluate import run_eval
    from calibench.records import load_run_records

    out = tmp_path / "run"
    run_eval(f"pretrained={tiny}", ["world-mc"], "choice", out, limit=3, bootstrap=0, progress=False, figures=False)
    other = tmp_path / "other"
    run_eval(f"pretrained={tiny}", ["world-mc"], "choice", other, limit=4, bootstrap=0, progress=False, figures=False)
    shutil.copy(other / "records.parquet", out / "records.parquet")  # the mix the old code could leave
    with pytest.raises(CalibenchError, match=r"'records.parquet' does not match manifest.json"):
        load_run_records(out)
    code, err = _cli(["compare", str(other), str(out), "--bootstrap", "10", "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "does not match manifest.json" in _one_line(err)
    code, err = _cli(["metrics", str(out / "records.parquet"), "--bootstrap", "0"], capsys)
    assert code == 2 and "does not match manifest.json" in _one_line(err)


def test_old_run_folder_without_manifest_is_read_with_a_warning(tmp_path: Path) -> None:
    from calibench.records import load_run_records, make_records, write_records
    from calibench.runfolder import UnverifiedRunWarning

    write_records(make_records([{"confidence": 0.6, "correct": True}, {"confidence": 0.9, "correct": False}]),
                  tmp_path / "records.parquet")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a hand-made records folder is read silently
        assert len(load_run_records(tmp_path)) == 2
    (tmp_path / "config.json").write_text(json.dumps({"calibench_run": 1}))  # an eval run from before manifests
    with pytest.warns(UnverifiedRunWarning, match="no manifest.json"):
        assert len(load_run_records(tmp_path)) == 2


def test_eval_refuses_an_out_folder_that_is_not_a_run(tiny: Path, tmp_path: Path) -> None:
    from calibench.evaluate import run_eval

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(CalibenchError, match="not a calibench run folder"):
        run_eval(f"pretrained={tiny}", ["world-mc"], "choice", tmp_path / "mine", limit=2, bootstrap=0,
                 progress=False, figures=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_truncated_checkpoint_of_a_finished_train_unit_is_not_trusted_on_resume(tmp_path: Path) -> None:
    from calibench.study.store import Store

    with Store.open(tmp_path) as store:
        staged = store.staging_dir("k1")
        (staged / "ckpt").mkdir()
        (staged / "ckpt" / "model.safetensors").write_bytes(b"w" * 1000)
        store.mark_started("k1", "train", {"kind": "train"})
        store.finish_train("k1", {"kind": "train"}, staged, {"checkpoints": {"c": "ckpt"}})
        assert store.recover()["unfinished_rows"] == 0 and "k1" in store.finished_keys()
        weights = store.model_dir("k1") / "ckpt" / "model.safetensors"
        weights.write_bytes(b"w" * 10)  # truncated
        assert store.recover()["unfinished_rows"] == 1
        assert "k1" not in store.finished_keys()
        assert not store.model_dir("k1").exists()


# -- 4. one line, exit 2, for OS and weight-file errors ---------------------------------------------------


def test_disk_full_is_one_line_naming_the_path(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import calibench.records as records

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/run/records.parquet")

    monkeypatch.setattr(records, "read_records", full)
    code, err = _cli(["metrics", str(HOSTILE / "good.jsonl"), "--bootstrap", "0"], capsys)
    assert code == 2
    assert _one_line(err) == "error: /data/run/records.parquet: no space left on device"


def test_unwritable_diagram_path_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(["metrics", str(HOSTILE / "good.jsonl"), "--bootstrap", "0", "--diagram", "/proc/x.png"], capsys)
    assert code == 2
    assert "/proc/x.png" in _one_line(err)


def test_truncated_safetensors_is_one_line(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _variant(tiny, tmp_path, "trunc")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    code, err = _cli(["eval", "--model-args", f"pretrained={folder}", "--tasks", "world-mc", "--limit", "2",
                      "--out", str(tmp_path / "r"), "--quiet", "--bootstrap", "0", "--no-figures"], capsys)
    assert code == 2
    assert "could not load model" in _one_line(err)
    assert not (tmp_path / "r").exists()


def test_safetensors_header_claiming_a_huge_tensor_is_one_line(tiny: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import struct

    folder = _variant(tiny, tmp_path, "huge")
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 1 << 42]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    code, err = _cli(["eval", "--model-args", f"pretrained={folder}", "--tasks", "world-mc", "--limit", "2",
                      "--out", str(tmp_path / "r"), "--quiet", "--bootstrap", "0", "--no-figures"], capsys)
    assert code == 2
    _one_line(err)


@pytest.mark.parametrize(("option", "value", "message"), [("--lr", "-1", "--lr"), ("--batch-size", "0", "--batch-size"),
                                                          ("--epochs", "0", "--epochs")])
def test_train_option_errors_are_one_line_before_anything_is_written(tiny: Path, tmp_path: Path, option: str,
                                                                    value: str, message: str,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(["train", "sft", "--base", str(tiny), "--out", str(tmp_path / "o"), option, value], capsys)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_report_with_a_missing_parquet_file_is_one_line(tmp_path: Path) -> None:
    from calibench.records import make_records
    from calibench.study.store import Store

    with Store.open(tmp_path) as store:
        store.mark_started("k", "eval", {"kind": "eval"})
        store.finish_eval("k", {"kind": "eval"}, make_records([{"confidence": 0.5, "correct": True}]), [])
        (tmp_path / "records" / "k.parquet").unlink()
        with pytest.raises(CalibenchError, match="records of finished unit k are missing"):
            store.read_records("k")


# -- 5. sizes are capped ----------------------------------------------------------------------------------


def test_n_bins_is_capped_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(["metrics", str(HOSTILE / "good.jsonl"), "--n-bins", "10000000", "--bootstrap", "10"], capsys)
    assert code == 2
    assert _one_line(err) == "error: --n-bins must be <= 10000, got 10000000"


def test_study_n_bins_is_capped(tmp_path: Path) -> None:
    from calibench.study.config import load_study

    path = tmp_path / "s.yaml"
    path.write_text("name: s\nsettings: {n_bins: 10000000}\ntasks: [world-mc]\nmodels: [{name: m, synthetic: {}}]\n")
    with pytest.raises(CalibenchError, match=r"settings.n_bins: must be an integer <= 10000"):
        load_study(path)


# -- 6. strict records, strict keys, a reward model needs a score head ------------------------------------


@pytest.mark.parametrize(("name", "message"), [
    ("confidence_string.jsonl", r":2: field 'confidence': confidence must be a number, got '0.7' \(str\)"),
    ("confidence_bool.jsonl", r":2: field 'confidence': confidence must be a number, got True \(bool\)"),
    ("probs_string.jsonl", r":2: field 'probs': probs must be a list of numbers, got a string"),
    ("duplicate_item.jsonl", r":2: field 'item_id': item_id '0' appears twice for task 't' method 'm'"),
    ("correct_contradicts.jsonl", r":2: field 'correct': correct is false but label 1 is the most probable"),
    ("confidence_not_max.jsonl", r":2: field 'confidence': confidence 0.5 is not max\(probs\) = 0.8"),
    ("duplicate_key.jsonl", r":2: invalid JSON \(duplicate key 'confidence'"),
    ("missing_confidence.jsonl", r":2: missing required field 'confidence'"),
])
def test_strict_records_refuse_coercions(name: str, message: str) -> None:
    from calibench.records import read_records

    with pytest.raises(CalibenchError, match=message):
        read_records(HOSTILE / name)


def test_check_contract_applies_the_cross_column_rules_to_any_frame() -> None:
    from calibench.records import check_contract, make_records

    good = make_records([{"item_id": "a", "probs": [0.3, 0.7], "label": 1, "confidence": 0.7, "correct": True}])
    check_contract(good)
    with pytest.raises(CalibenchError, match="is not max"):
        check_contract(good.assign(confidence=[0.5]))
    with pytest.raises(CalibenchError, match="appears twice"):
        check_contract(pd.concat([good, good], ignore_index=True))


def test_csv_records_keep_probs_as_json_text(tmp_path: Path) -> None:
    from calibench.records import read_records

    path = tmp_path / "r.csv"
    path.write_text('confidence,correct,probs,label\n0.7,true,"[0.3, 0.7]",1\n')
    assert read_records(path)["probs"].tolist() == [[0.3, 0.7]]


def test_mixed_class_counts_are_said_out_loud() -> None:
    from calibench.records import MixedClassesWarning, read_records

    with pytest.warns(MixedClassesWarning, match="3 classes, but task 't' method 'm' has 4-class rows"):
        read_records(HOSTILE / "mixed_classes.jsonl")


def test_duplicate_yaml_keys_are_refused() -> None:
    from calibench.study.config import load_study

    with pytest.raises(CalibenchError, match=r"duplicate_key.yaml:2: invalid YAML: duplicate key 'name'"):
        load_study(HOSTILE / "duplicate_key.yaml")


def test_causal_lm_is_refused_as_the_reward_model(tiny: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from calibench.train.sft import load_base

    with pytest.raises(CalibenchError, match="not a reward model .*no score head"):
        load_base(tiny, kind="scorer")
    rm = _variant(tiny, tmp_path, "rm")
    AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1).save_pretrained(rm)
    model, _ = load_base(rm, kind="scorer")
    assert model.config.architectures[0].endswith("ForSequenceClassification")


# -- 7. auto_map needs --trust-remote-code -----------------------------------------------------------------


def test_auto_map_is_refused_without_trust_remote_code(tiny: Path, tmp_path: Path) -> None:
    from calibench.models.loading import load_model
    from calibench.train.sft import load_base

    folder = _variant(tiny, tmp_path, "automap")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModelForCausalLM": "evil.Evil"}}))
    with pytest.raises(CalibenchError, match="auto_map.*--trust-remote-code"):
        load_model(f"pretrained={folder}")
    with pytest.raises(CalibenchError, match="auto_map.*--trust-remote-code"):
        load_base(folder)


# -- 8. messages that name the real problem ----------------------------------------------------------------


def test_folder_without_tokenizer_files_is_named(tiny: Path, tmp_path: Path) -> None:
    from calibench.models.loading import load_model

    folder = _variant(tiny, tmp_path, "notok")
    for f in folder.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            f.unlink()
    with pytest.raises(CalibenchError, match="no tokenizer files"):
        load_model(f"pretrained={folder}")


def test_corrupt_study_database_is_not_blamed_on_another_writer(tmp_path: Path) -> None:
    from calibench.study.store import DB_NAME, Store

    (tmp_path / DB_NAME).write_bytes(b"\x00garbage" * 512)
    with pytest.raises(CalibenchError) as info:
        Store.open(tmp_path)
    assert "corrupt or not a study database" in str(info.value)
    assert "another" not in str(info.value)


def test_from_lm_eval_checks_options_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fixtures = Path(__file__).parent / "fixtures" / "lm_eval"
    code, err = _cli(["from-lm-eval", str(fixtures), "--out", str(tmp_path / "o"), "--n-bins", "0"], capsys)
    assert code == 2
    assert _one_line(err) == "error: --n-bins must be >= 1, got 0"
    assert not (tmp_path / "o").exists()


# -- 9. special files --------------------------------------------------------------------------------------


def test_fifo_records_file_is_refused_without_blocking(tmp_path: Path) -> None:
    import os

    from calibench.records import read_records

    fifo = tmp_path / "r.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(CalibenchError, match="not a regular file"):
        read_records(fifo)


def test_symlink_to_dev_zero_is_refused(tmp_path: Path) -> None:
    from calibench.records import read_records

    link = tmp_path / "r.jsonl"
    link.symlink_to("/dev/zero")
    with pytest.raises(CalibenchError, match="not a regular file"):
        read_records(link)


# -- 10. portable study records -----------------------------------------------------------------------------


def test_study_records_name_models_relative_to_the_study_folder(tmp_path: Path) -> None:
    from calibench.study.work import portable_model

    spec = {"source": "pretrained", "study_dir": str(tmp_path), "model": "m"}
    assert portable_model(spec, str(tmp_path / "models" / "tiny")) == "models/tiny"
    assert portable_model(spec, str(tmp_path / "models" / "tiny") + "@step1") == "models/tiny@step1"
    assert portable_model({**spec, "study_dir": "/elsewhere"}, "/abs/m") == "/abs/m"
    assert portable_model({"source": "train", "model": "sft", "revision": "epoch1"}, "/x/models/k/epoch1") \
        == "sft@epoch1"


def test_moving_a_study_keeps_its_records(tiny: Path, tmp_path: Path) -> None:
    import yaml

    from calibench.study.config import load_study
    from calibench.study.units import expand
    from calibench.study.work import ModelCache, execute_unit

    frames = []
    for where in ("a", "b"):
        root = tmp_path / where
        shutil.copytree(tiny, root / "tiny")
        (root / "study.yaml").write_text(yaml.safe_dump({
            "name": "s", "settings": {"limit": 3, "bootstrap": 0},
            "tasks": [{"name": "world-mc", "methods": ["choice"]}],
            "models": [{"name": "tiny", "pretrained": "./tiny"}]}))
        unit = expand(load_study(root / "study.yaml"), strict=True)[0]
        result = execute_unit(unit.key, dict(unit.spec), cache=ModelCache())
        assert result.ok, result.error
        frames.append(result.records)
    pd.testing.assert_frame_equal(frames[0], frames[1], check_exact=True)
    assert set(frames[0]["model"]) == {"tiny"}


class _Evil:
    """Unpickling this would run ``echo`` (torch's weights-only unpickler must refuse it)."""

    def __reduce__(self):  # noqa: ANN204
        import os

        return (os.system, ("echo pwned",))


def test_pickle_blocked_under_allow_pickle_is_one_line(tiny: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    folder = _variant(tiny, tmp_path, "evil")
    (folder / "model.safetensors").unlink()
    torch.save({"w": _Evil()}, folder / "pytorch_model.bin")
    code, err = _cli(["eval", "--model-args", f"pretrained={folder}", "--tasks", "world-mc", "--limit", "2",
                      "--out", str(tmp_path / "r"), "--quiet", "--bootstrap", "0", "--no-figures",
                      "--allow-pickle"], capsys)
    assert code == 2
    assert "could not load model" in _one_line(err)
    assert "pwned" not in capsys.readouterr().out


def test_disk_full_during_study_run_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import calibench.study.store as store

    study = tmp_path / "s.yaml"
    study.write_text("name: s\nmethods: [choice]\nsettings: {bootstrap: 0}\ntasks: [{name: syn, items: 20}]\n"
                     "models: [{name: m, synthetic: {}}]\n")

    def full(df: object, path: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(store, "write_records", full)
    code, err = _cli(["study", "run", str(study), "--out", str(tmp_path / "out"), "--no-progress"], capsys)
    assert code == 2
    line = _one_line(err)
    assert "no space left on device" in line and "records" in line
