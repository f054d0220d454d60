"""The results store: finished units are kept once, re-runs skip them, kill -9 never corrupts a study."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from calibench.study.runner import run
from calibench.study.store import Store, file_sha256
from study_helpers import assert_same_results, snapshot, synthetic_study


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """An uninterrupted run of the crash-test study."""
    root = tmp_path_factory.mktemp("ref")
    study = synthetic_study(root / "study.yaml", n_models=3, n_tasks=5)
    result = run(study, root / "out", progress=False)
    assert result.failed == [] and result.ran == result.total == 1 + 5 * 5
    return study, root / "out", snapshot(root / "out")


def test_rerun_skips_finished_units(reference: tuple[Path, Path, dict], tmp_path: Path) -> None:
    study, _, ref = reference
    out = tmp_path / "out"
    first = run(study, out, progress=False)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "records").iterdir()}
    second = run(study, out, progress=False)
    assert (second.ran, second.skipped, second.total) == (0, first.total, first.total)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "records").iterdir()} == mtimes
    assert_same_results(snapshot(out), ref)


def test_new_settings_make_new_units(reference: tuple[Path, Path, dict], tmp_path: Path) -> None:
    study, _, _ = reference
    out = tmp_path / "out"
    run(study, out, progress=False)
    text = study.read_text().replace("bootstrap: 20", "bootstrap: 21")
    changed = tmp_path / "changed.yaml"
    changed.write_text(text)
    result = run(changed, out, progress=False)
    # the train unit does not depend on bootstrap; every eval unit does
    assert result.skipped == 1 and result.ran == result.total - 1


def test_recover_forgets_unfinished_work(reference: tuple[Path, Path, dict], tmp_path: Path) -> None:
    study, _, ref = reference
    out = tmp_path / "out"
    run(study, out, progress=False)
    with Store.open(out) as store:
        victims = sorted(store.finished_keys())[:3]
        # 1: a unit whose row says running (killed mid-unit) with a full-looking Parquet beside it
        store.mark_started(victims[0], "eval", {"kind": "eval"})
        # 2: a finished row whose Parquet was truncated behind our back (never trusted)
        path = out / "records" / f"{victims[1]}.parquet"
        path.write_bytes(path.read_bytes()[:100])
        # 3: a finished row whose Parquet vanished
        (out / "records" / f"{victims[2]}.parquet").unlink()
        # stray temp files of a write that died before its rename
        (out / "records" / f".{victims[0]}.parquet.abc123.tmp").write_bytes(b"PAR1 half")
        (out / "models" / "deadbeef.tmp").mkdir()
        counts = store.recover()
        assert counts["temp_files"] == 2 and counts["unfinished_rows"] == 3
        assert not set(victims) & store.finished_keys()
        assert not any(".tmp" in p.name for p in (out / "records").iterdir())
        assert not (out / "records" / f"{victims[0]}.parquet").exists()
    result = run(study, out, progress=False)
    assert result.ran == 3
    assert_same_results(snapshot(out), ref)


def _parquet_count(out: Path) -> int:
    folder = out / "records"
    return sum(1 for p in folder.iterdir() if p.suffix == ".parquet") if folder.exists() else 0


def _check_consistent(out: Path) -> int:
    """After a kill: every finished row points at an intact Parquet (sha256 as recorded); no duplicates."""
    con = duckdb.connect(str(out / "study.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT key, status, records_path, records_sha256 FROM units").fetchall()
    finally:
        con.close()
    keys = [r[0] for r in rows]
    assert len(keys) == len(set(keys))
    finished = [r for r in rows if r[1] == "finished"]
    for _key, _, path, sha in finished:
        if path:
            assert file_sha256(out / path) == sha
    return len(finished)


@pytest.mark.parametrize("kill_after", [[0, 4, 11, 19]], ids=["start,4,11,19"])
def test_kill_9_then_resume_gives_identical_results(reference: tuple[Path, Path, dict], tmp_path: Path,
                                                    kill_after: list[int]) -> None:
    """A real crash: `calibench study run` in a subprocess, SIGKILLed at several points, then resumed."""
    study, _, ref = reference
    out = tmp_path / "out"
    env = {**os.environ, "CALIBENCH_SYNTHETIC_SLEEP": "0.15"}
    cmd = [sys.executable, "-m", "calibench.cli", "study", "run", str(study), "--out", str(out), "--no-progress"]
    kills = 0
    for target in kill_after:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while proc.poll() is None and _parquet_count(out) < target and time.monotonic() < deadline:
            time.sleep(0.02)
        if target == 0:
            time.sleep(0.3)  # mid start-up or first unit
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        if (out / "study.duckdb").exists():
            _check_consistent(out)
    assert kills >= 3, "the study finished before it could be killed; raise CALIBENCH_SYNTHETIC_SLEEP"
    final = subprocess.run(cmd, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert _check_consistent(out) == len(ref) + 1
    assert not any(".tmp" in p.name for folder in ("records", "models") for p in (out / folder).iterdir())
    assert sorted(p.stem for p in (out / "records").iterdir()) == sorted(ref)
    assert_same_results(snapshot(out), ref)


def test_failed_unit_is_reported_and_others_finish(tmp_path: Path) -> None:
    study = synthetic_study(tmp_path / "study.yaml", n_models=1, n_tasks=1, with_train=False)
    text = study.read_text().replace("models:", "train:\n- {name: broken, recipe: synthetic, options: {}}\nmodels:")
    text += "- {name: child, train: broken, revisions: [epoch1]}\n"
    study.write_text(text)
    result = run(study, tmp_path / "out", progress=False)
    labels = [label for label, _ in result.failed]
    assert len(labels) == 2 and "broken" in labels[0] and "child" in labels[1]
    assert result.ran == 1   # the unrelated unit still finished
    with Store.open(tmp_path / "out", read_only=True) as store:
        assert len(store.finished()) == 1


def test_real_eval_units_on_a_tiny_model(tmp_path: Path) -> None:
    """Eval units go through calibench.evaluate.run_eval on a real (tiny) GPT-NeoX folder."""
    pytest.importorskip("calibench.evaluate", reason="calibench.evaluate is not available")
    import yaml

    from calibench.models.tiny import build_tiny_model

    build_tiny_model(tmp_path / "tiny", ["The capital of France is Paris. " * 20, "Berlin is in Germany. " * 20])
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "tiny", "settings": {"limit": 6, "bootstrap": 20},
        "tasks": [{"name": "world-mc", "methods": ["choice", "continuation-sum"]},
                  {"name": "world-facts", "methods": ["first-token"]}],
        "models": [{"name": "tiny", "pretrained": str(tmp_path / "tiny")}]}))
    result = run(study, tmp_path / "out", progress=False)
    assert result.failed == [] and result.ran == 2
    got = snapshot(tmp_path / "out")
    methods = sorted(m for records, _ in got.values() for m in records["method"].unique())
    assert methods == ["choice", "continuation-sum", "first-token"]
    for records, metrics in got.values():
        assert len(records) == 6 * records["method"].nunique()
        assert {"ece", "accuracy"} <= {m["metric"] for m in metrics}
    assert run(study, tmp_path / "out", progress=False).ran == 0


@pytest.mark.slow
def test_lab_recipes_end_to_end(tmp_path: Path) -> None:
    """world -> pretrain -> SFT train units, then eval units on the lab tasks of that world (about a minute)."""
    import yaml

    study = tmp_path / "lab.yaml"
    study.write_text(yaml.safe_dump({
        "name": "lab-mini", "settings": {"seed": 0, "bootstrap": 20, "limit": 20},
        "tasks": [{"name": "lab-mc", "methods": ["choice"]}, {"name": "lab-facts", "methods": ["first-token"]}],
        "train": [
            {"name": "world", "recipe": "world", "options": {"people": 40, "n_instructions": 48, "n_preferences": 16}},
            {"name": "pretrain", "recipe": "pretrain", "after": ["world"],
             "options": {"sizes": ["lab-20k"], "steps": 32, "eval_items": 20}},
            {"name": "sft", "recipe": "sft", "after": ["world", "pretrain"],
             "options": {"base": "@pretrain:lab-20k/step32", "data": "narrow", "method": "lora", "epochs": 1,
                         "eval_items": 20}},
        ],
        "models": [
            {"name": "lab-20k", "train": "pretrain", "revisions": ["lab-20k/step16", "lab-20k/step32"]},
            {"name": "sft", "train": "sft", "revisions": ["epoch1"], "stage": "sft", "tuning": "lora",
             "base": "lab-20k"},
        ]}))
    result = run(study, tmp_path / "out", progress=False)
    assert result.failed == [] and result.ran == 3 + 6
    got = snapshot(tmp_path / "out")
    assert sorted({r["task"].iloc[0] for r, _ in got.values()}) == ["lab-facts", "lab-mc"]
    assert all(len(r) == 20 for r, _ in got.values())
    assert run(study, tmp_path / "out", progress=False).ran == 0


def test_eval_unit_scores_in_memory_like_run_eval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An eval unit is score + summarise in memory: no run_eval, no temporary run folder, nothing
    re-read, one model load for both tasks, and the very records run_eval writes for the same inputs."""
    import tempfile

    import pandas as pd
    import yaml

    import calibench.evaluate as evaluate
    from calibench.models.tiny import build_tiny_model
    from calibench.records import read_records
    from calibench.study.config import load_study
    from calibench.study.units import expand
    from calibench.study.work import ModelCache, execute_unit

    build_tiny_model(tmp_path / "tiny", ["The capital of France is Paris. " * 20, "Berlin is in Germany. " * 20])
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "tiny", "settings": {"limit": 6, "bootstrap": 20},
        "tasks": [{"name": "world-mc", "methods": ["choice", "continuation-sum"]},
                  {"name": "world-facts", "methods": ["first-token"]}],
        "models": [{"name": "tiny", "pretrained": str(tmp_path / "tiny")}]}))
    units = expand(load_study(study), strict=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    real_run_eval = evaluate.run_eval

    def no_run_eval(*args: object, **kwargs: object) -> None:
        raise AssertionError("a study unit must not go through run_eval")

    monkeypatch.setattr(evaluate, "run_eval", no_run_eval)
    cache = ModelCache()
    results = [execute_unit(u.key, dict(u.spec), None, cache) for u in units]
    assert all(r.ok for r in results), [r.error for r in results]
    assert cache.loads == 1
    assert list(scratch.iterdir()) == []
    assert list(tmp_path.rglob("*.parquet")) == []
    assert [len(r.records) for r in results] == [12, 6]
    assert {m["metric"] for m in results[0].metrics} >= {"ece", "accuracy"}

    spec = units[0].spec
    s = spec["settings"]
    run = real_run_eval(f"pretrained={tmp_path / 'tiny'}", [spec["task"]], list(spec["methods"]), tmp_path / "run",
                        batch_size=s["batch_size"], seed=s["seed"], limit=spec["limit"], bootstrap=0,
                        progress=False, figures=False)
    on_disk = read_records(run.out_dir / "records.parquet")
    # issue 11: a study's records name a local model relative to the study folder (portable); a run's
    # records keep the absolute path it was given. Every other byte is the same.
    assert set(results[0].records["model"]) == {"tiny"}
    assert set(on_disk["model"]) == {str((tmp_path / "tiny").resolve())}
    for got in (results[0].records.assign(model=on_disk["model"]), run.records):
        pd.testing.assert_frame_equal(got.drop(columns="probs"), on_disk.drop(columns="probs"), check_exact=True)
        assert got["probs"].tolist() == on_disk["probs"].tolist()


def test_model_cache_holds_one_model_per_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    import calibench.models.loading as loading
    from calibench.study.executors import LocalExecutor
    from calibench.study.work import ModelCache

    calls: list[tuple[str, str]] = []

    def fake_load(args: str, device: str, **kwargs: object) -> object:
        assert kwargs["hasher"] is cache.hasher or kwargs["hasher"] is other.hasher
        calls.append((args, device))
        return object()

    monkeypatch.setattr(loading, "load_model", fake_load)
    cache, other = ModelCache(), ModelCache()
    a = cache.get("pretrained=a", "cpu")
    assert cache.get("pretrained=a", "cpu") is a
    b = cache.get("pretrained=b", "cpu")
    assert b is not a
    assert cache.get("pretrained=a", "cpu") is not a  # only one model is held: a was dropped for b
    assert cache.get("pretrained=a", "cuda") is not None
    assert cache.loads == 4 and calls == [("pretrained=a", "cpu"), ("pretrained=b", "cpu"),
                                          ("pretrained=a", "cpu"), ("pretrained=a", "cuda")]
    other.get("pretrained=a", "cuda")
    assert other.loads == 1 and len(calls) == 5  # no process-wide state: a second owner loads for itself
    assert LocalExecutor().cache is not LocalExecutor().cache
    shared = ModelCache()
    assert LocalExecutor(shared).cache is shared


def test_resume_trusts_unchanged_records_without_rehashing_them(tmp_path: Path, monkeypatch) -> None:
    """Finished units are recognised by the size and mtime recorded at finish; only a file whose size
    or mtime moved is hashed, and a changed one is re-run."""
    import calibench.study.store as store_mod

    study = synthetic_study(tmp_path / "study.yaml", n_models=2, n_tasks=2, with_train=False)
    out = tmp_path / "out"
    first = run(study, out, progress=False)
    hashed: list[Path] = []
    real = store_mod.file_sha256
    monkeypatch.setattr(store_mod, "file_sha256", lambda p: hashed.append(Path(p)) or real(p))
    again = run(study, out, progress=False)
    assert again.ran == 0 and again.skipped == first.total and hashed == []

    files = sorted((out / "records").glob("*.parquet"))
    touched, changed = files[0], files[1]
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))  # same bytes
    data = changed.read_bytes()
    changed.write_bytes(data[:-8] + bytes(8))  # same size, other bytes, new mtime
    third = run(study, out, progress=False)
    assert sorted(set(hashed)) == sorted([touched, changed]) and hashed.count(touched) == 1
    assert third.ran == 1 and third.skipped == first.total - 1  # only the changed unit re-runs
    hashed.clear()
    assert run(study, out, progress=False).ran == 0 and hashed == []  # the touched file's new mtime is kept


def test_stores_from_before_the_quick_check_are_hashed_once(tmp_path: Path) -> None:
    study = synthetic_study(tmp_path / "study.yaml", n_models=1, n_tasks=1, with_train=False)
    out = tmp_path / "out"
    run(study, out, progress=False)
    con = duckdb.connect(str(out / "study.duckdb"))
    con.execute("UPDATE units SET records_stat = NULL")
    con.close()
    assert run(study, out, progress=False).ran == 0
