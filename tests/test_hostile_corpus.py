"""Every file of tests/hostile/ through every command that reads such a file: exit code 2, exactly one
line on stderr, no traceback, bounded time (issue 11).

The corpus: records that coerce (string or bool confidence, probs as a JSON string, duplicated items or
keys, ``correct`` contradicting probs, confidence that is not max(probs), a missing field, a 20 kB
value, broken JSON; mixed class counts, which only warn), study files (an alias bomb, a recursive alias, duplicate keys, a Python tag), a
task file with a duplicate key, broken lm-eval samples; a FIFO and a symlink to /dev/zero are made per
test. ``good.jsonl`` is the valid file the others are compared against.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

HOSTILE = Path(__file__).parent / "hostile"
GOOD = HOSTILE / "good.jsonl"
ACCEPTED = ("good.jsonl", "mixed_classes.jsonl")  # valid; mixed class counts only warn (variable-choice tasks)
RECORDS = sorted(p for p in HOSTILE.glob("*.jsonl") if p.name not in ACCEPTED and not p.name.startswith("samples_")
                 and not p.name.startswith("task_"))
STUDIES = sorted(HOSTILE.glob("*.yaml"))
TIME_LIMIT_S = 30.0  # generous for a loaded CI machine; a bomb takes minutes and gigabytes


def _special(tmp_path: Path) -> list[Path]:
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.jsonl"
    zero.symlink_to("/dev/zero")
    return [fifo, zero]


def _check(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    from calibench.cli import main

    t0 = time.monotonic()
    code = main([str(a) for a in argv])
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert code == 2, (argv, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert len(lines[0]) < 2100
    assert elapsed < TIME_LIMIT_S, (argv, elapsed)
    return lines[0]


def test_corpus_is_small() -> None:
    files = list(HOSTILE.iterdir())
    assert len(files) >= 15
    assert all(f.stat().st_size < 64 * 1024 for f in files)


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.name)
def test_metrics_refuses_hostile_records(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _check(["metrics", path, "--bootstrap", "10"], capsys)


def test_mixed_class_counts_run_with_one_warning_line(capsys: pytest.CaptureFixture[str]) -> None:
    from calibench.cli import main

    assert main(["metrics", str(HOSTILE / "mixed_classes.jsonl"), "--bootstrap", "0", "--json"]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("warning: ") and "class-wise metrics" in err[0]


def test_metrics_refuses_special_files_and_bombs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in _special(tmp_path):
        assert "not a regular file" in _check(["metrics", path, "--bootstrap", "0"], capsys)
    _check(["metrics", GOOD, "--n-bins", "10000000", "--bootstrap", "10"], capsys)


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.name)
def test_compare_refuses_hostile_records(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _check(["compare", GOOD, path, "--bootstrap", "10", "--out", tmp_path / "cmp"], capsys)
    assert not (tmp_path / "cmp").exists()


def test_compare_refuses_special_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in _special(tmp_path):
        _check(["compare", GOOD, path, "--bootstrap", "10", "--out", tmp_path / "cmp"], capsys)
    _check(["compare", GOOD, GOOD, "--n-bins", "10000000", "--out", tmp_path / "cmp"], capsys)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_study_plan_refuses_hostile_study_files(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _check(["study", "plan", path], capsys)


def test_study_plan_refuses_special_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "s.yaml"
    os.mkfifo(fifo)
    _check(["study", "plan", fifo], capsys)


def test_report_refuses_a_corrupt_study_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "study.duckdb").write_bytes((HOSTILE / "alias_bomb.yaml").read_bytes() * 20)
    assert "corrupt" in _check(["report", tmp_path], capsys)
    _check(["report", tmp_path / "missing"], capsys)


@pytest.mark.parametrize("path", [*RECORDS, HOSTILE / "task_duplicate_key.jsonl"], ids=lambda p: p.name)
def test_eval_refuses_hostile_task_files(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _check(["eval", "--model-args", f"pretrained={tmp_path / 'no-model'}", "--tasks", path,
            "--out", tmp_path / "run", "--quiet"], capsys)
    assert not (tmp_path / "run").exists()


def test_eval_refuses_special_task_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in _special(tmp_path):
        _check(["eval", "--model-args", f"pretrained={tmp_path}", "--tasks", path, "--out", tmp_path / "run"],
               capsys)


@pytest.mark.parametrize("path", [*RECORDS, HOSTILE / "samples_broken_2026-01-01T00-00-00.jsonl"],
                         ids=lambda p: p.name)
def test_from_lm_eval_refuses_hostile_samples(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _check(["from-lm-eval", path, "--out", tmp_path / "o", "--bootstrap", "0"], capsys)
    assert not (tmp_path / "o" / "records.parquet").exists()
