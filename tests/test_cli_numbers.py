"""``calibench metrics``: filters, per-group recalibration that names what it skipped, notes, --ci."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibench.cli import main
from calibench.metrics import summarize
from calibench.records import make_records, write_records
from test_cli_metrics import _json, _rows


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An eval-like file: 'choice' has class probabilities, 'p-true' only a confidence; a second task."""
    rows = _rows(200, method="choice", temperature=0.5, seed=3)
    rows += [{k: r[k] for k in ("task", "method", "item_id", "confidence", "correct")}
             for r in _rows(200, method="p-true", temperature=0.5, seed=4)]
    rows += [{**r, "task": "other"} for r in _rows(100, method="choice", temperature=1.0, seed=5)]
    path = tmp_path_factory.mktemp("mixed") / "records.parquet"
    write_records(make_records(rows), path)
    return path


def test_temperature_recalibrates_the_groups_that_can_and_names_the_rest(mixed: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    result = _json(capsys, str(mixed), "--bootstrap", "0", "--recalibrate", "temperature")
    by = {(g["task"], g["method"]): g for g in result["groups"]}
    assert result["recalibration_skipped"] == ["mc / p-true"]
    assert "lacks class probabilities" in by[("mc", "p-true")]["recalibration_skipped"]
    assert "recalibrated" not in by[("mc", "p-true")]
    assert by[("mc", "choice")]["recalibrated"]["ece"]["estimate"] < by[("mc", "choice")]["metrics"]["ece"]["estimate"]
    notes = by[("mc", "p-true")]["notes"]
    assert any(n.startswith("sce, brier, nll not reported: 200 of 200 records have no class probabilities")
               for n in notes)
    assert any("not recalibrated with temperature" in n for n in notes)
    assert any(n.startswith("small n: 200 items < 300") for n in notes)


def test_task_and_method_filters(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _json(capsys, str(mixed), "--bootstrap", "0", "--task", "mc", "--method", "choice")
    assert [(g["task"], g["method"]) for g in result["groups"]] == [("mc", "choice")]
    assert result["filters"] == {"task": ["mc"], "method": ["choice"]}
    assert main(["metrics", str(mixed), "--task", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--task 'nope' matches no records; tasks: mc, other" in err and "Traceback" not in err


def test_default_rows_contain_their_estimates_and_percentile_marks_the_rest(
        mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _json(capsys, str(mixed), "--bootstrap", "200")
    assert result["ci"] == "bca"
    for g in result["groups"]:
        for m in g["metrics"].values():
            if m["estimate"] is not None and m["low"] is not None:
                assert m["low"] <= m["estimate"] <= m["high"]
    assert main(["metrics", str(mixed), "--bootstrap", "200", "--ci", "percentile", "--task", "other"]) == 0
    out = capsys.readouterr().out
    assert "95% CI (percentile)" in out
    assert main(["metrics", str(mixed), "--ci", "student"]) == 2
    assert "--ci must be one of bca, percentile" in capsys.readouterr().err


def test_all_groups_without_probs_is_still_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "top.jsonl"
    path.write_text("".join(json.dumps({"confidence": float(c), "correct": bool(c > 0.5)}) + "\n"
                            for c in np.linspace(0, 1, 20)))
    assert main(["metrics", str(path), "--recalibrate", "temperature"]) == 2
    assert "no group can be recalibrated" in capsys.readouterr().err


def test_mixed_option_counts_get_class_wise_metrics_and_a_note(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    rows = _rows(120, method="choice", temperature=0.7, seed=9)
    for i, r in enumerate(rows):
        if i % 3 == 0:  # a 3-option item: drop the last option if it is not the gold one
            if r["label"] == 3:
                continue
            p = np.array(r["probs"][:3])
            p /= p.sum()
            pred = int(np.argmax(p))
            r.update(probs=p.tolist(), pred="ABC"[pred], confidence=float(p.max()), correct=pred == r["label"])
    path = tmp_path / "arc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = _json(capsys, str(path), "--bootstrap", "0", "--recalibrate", "temperature")
    (g,) = result["groups"]
    lib = summarize(make_records([json.loads(line) for line in path.read_text().splitlines()]), n_resamples=0)
    est = dict(zip(lib["metric"], lib["estimate"], strict=True))
    for name in ("sce", "brier", "nll"):
        assert g["metrics"][name]["estimate"] == pytest.approx(est[name], abs=1e-12)
        assert g["recalibrated"][name]["estimate"] is not None
    assert any(n.startswith("items have 3-4 options") for n in g["notes"])
