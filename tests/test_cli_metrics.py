"""``calibench metrics``: tables, JSON that matches the library, diagrams, recalibration, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from calibench.cli import main
from calibench.metrics import ece, sce
from calibench.records import make_records, write_records

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows(n: int, *, method: str, temperature: float, seed: int, model: str = "m") -> list[dict]:
    """4-way multiple choice; the reported probs are the true ones sharpened by 1/temperature."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        logits = rng.normal(0.0, 1.5, 4)
        truth = np.exp(logits) / np.exp(logits).sum()
        label = int(rng.choice(4, p=truth))
        q = np.exp(logits / temperature)
        q /= q.sum()
        pred = int(np.argmax(q))
        rows.append({"model": model, "task": "mc", "method": method, "item_id": str(i), "probs": q.tolist(),
                     "label": label, "pred": "ABCD"[pred], "confidence": float(q.max()), "correct": pred == label})
    return rows


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two groups: 'sharp' is over-confident (temperature 0.4), 'honest' is calibrated."""
    path = tmp_path_factory.mktemp("rec") / "records.jsonl"
    rows = _rows(300, method="sharp", temperature=0.4, seed=0) + _rows(300, method="honest", temperature=1.0, seed=1)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["metrics", *args, "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # the whole of stdout is one JSON document


def _group(result: dict, method: str) -> dict:
    (grp,) = [g for g in result["groups"] if g["method"] == method]
    return grp


def test_table_output(records: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["metrics", str(records), "--bootstrap", "20", "--n-bins", "15"]) == 0
    out = capsys.readouterr().out
    df = pd.read_json(records, lines=True)
    sharp = df[df["method"] == "sharp"]
    expected = ece(sharp["confidence"], sharp["correct"], n_bins=15)
    assert "mc / sharp" in out and "mc / honest" in out and "95% CI" in out
    for metric in ("accuracy", "ece", "ace", "mce", "rmsce", "sce", "brier", "nll", "auroc", "aurc", "smooth_ece"):
        assert metric in out
    assert f"{expected:.4f}" in out


def test_json_matches_the_library(records: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _json(capsys, str(records), "--bootstrap", "50", "--n-bins", "15", "--seed", "7")
    df = pd.read_json(records, lines=True)
    assert [g["method"] for g in result["groups"]] == ["sharp", "honest"]
    for method in ("sharp", "honest"):
        sub = df[df["method"] == method]
        grp = _group(result, method)
        assert grp["n"] == 300
        m = grp["metrics"]
        assert m["ece"]["estimate"] == pytest.approx(ece(sub["confidence"], sub["correct"], n_bins=15), abs=1e-12)
        probs, labels = np.stack(sub["probs"].to_numpy()), sub["label"].to_numpy()
        assert m["sce"]["estimate"] == pytest.approx(sce(probs, labels, n_bins=15), abs=1e-12)
        assert m["accuracy"]["estimate"] == pytest.approx(sub["correct"].mean())
        for v in m.values():
            assert v["low"] is not None and v["low"] <= v["high"]
    assert _group(result, "sharp")["metrics"]["ece"]["estimate"] > 2 * _group(result, "honest")["metrics"]["ece"]["estimate"]
    assert result["options"] == {"n_bins": 15, "binning": "width", "bootstrap": 50, "level": 0.95, "seed": 7,
                                 "recalibrate": None, "folds": None}


def test_bootstrap_zero_disables_cis_and_mass_binning(records: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _json(capsys, str(records), "--bootstrap", "0", "--binning", "mass")
    df = pd.read_json(records, lines=True)
    sub = df[df["method"] == "sharp"]
    m = _group(result, "sharp")["metrics"]
    assert m["ece"]["low"] is None and m["ece"]["high"] is None
    assert m["ece"]["estimate"] == pytest.approx(ece(sub["confidence"], sub["correct"], binning="mass"), abs=1e-12)


def test_json_is_deterministic_given_a_seed(records: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _json(capsys, str(records), "--bootstrap", "10", "--seed", "1")
    b = _json(capsys, str(records), "--bootstrap", "10", "--seed", "1")
    assert a == b


def test_diagrams(records: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png, svg = tmp_path / "d.png", tmp_path / "s.svg"
    result = _json(capsys, str(records), "--bootstrap", "0", "--diagram", str(png), "--smooth-diagram", str(svg))
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    assert "<svg" in svg.read_text()
    assert result["diagrams"] == [str(png), str(svg)]


def test_single_group_diagram(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    rows = _rows(120, method="sharp", temperature=0.5, seed=2)
    pd.DataFrame(rows).assign(probs=lambda d: d["probs"].map(json.dumps)).to_csv(path, index=False)
    out = tmp_path / "one.png"
    assert main(["metrics", str(path), "--bootstrap", "0", "--diagram", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_recalibrate_temperature_lowers_ece(records: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "recal.png"
    result = _json(capsys, str(records), "--bootstrap", "0", "--recalibrate", "temperature", "--diagram", str(png))
    sharp = _group(result, "sharp")
    raw, after = sharp["metrics"], sharp["recalibrated"]
    assert after["ece"]["estimate"] < 0.5 * raw["ece"]["estimate"]
    assert after["nll"]["estimate"] < raw["nll"]["estimate"]
    assert after["accuracy"]["estimate"] == raw["accuracy"]["estimate"]  # temperature keeps the argmax
    temps = [p["temperature"] for p in sharp["recalibration_params"]]
    assert len(temps) == 5 and all(1.8 < t < 3.5 for t in temps)  # the data was sharpened by 1/0.4 = 2.5
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_recalibrate_table_shows_both(records: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["metrics", str(records), "--bootstrap", "0", "--recalibrate", "platt", "--folds", "3"]) == 0
    out = capsys.readouterr().out
    assert "platt*" in out and "cross-fitted over 3 folds" in out


def test_top_label_recalibration_drops_class_wise_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "top.parquet"
    rows = [{k: r[k] for k in ("task", "method", "confidence", "correct")}
            for r in _rows(200, method="sharp", temperature=0.4, seed=5)]
    write_records(make_records(rows), path)
    grp = _json(capsys, str(path), "--bootstrap", "0", "--recalibrate", "isotonic")["groups"][0]
    assert "sce" not in grp["recalibrated"] and "sce" not in grp["metrics"]
    assert grp["recalibrated"]["ece"]["estimate"] < grp["metrics"]["ece"]["estimate"]


def test_temperature_needs_probs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "top.jsonl"
    lines = [json.dumps({"confidence": float(c), "correct": bool(c > 0.5)}) for c in np.linspace(0, 1, 20)]
    path.write_text("\n".join(lines) + "\n")
    assert main(["metrics", str(path), "--recalibrate", "temperature"]) == 2
    err = capsys.readouterr().err
    assert "temperature needs probs" in err and "Traceback" not in err


def test_several_files_keep_models_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in _rows(80, method="x", temperature=1.0, seed=1, model="base")))
    b.write_text("".join(json.dumps(r) + "\n" for r in _rows(80, method="x", temperature=0.3, seed=1, model="sft")))
    result = _json(capsys, str(a), str(b), "--bootstrap", "0")
    assert [(g["model"], g["n"]) for g in result["groups"]] == [("base", 80), ("sft", 80)]
    assert result["groups"][1]["label"] == "sft · mc / x"
    assert result["groups"][1]["metrics"]["ece"]["estimate"] > result["groups"][0]["metrics"]["ece"]["estimate"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-bins", "0"], "--n-bins must be >= 1"),
        (["--binning", "quantile"], "--binning must be one of width, mass"),
        (["--bootstrap", "-5"], "--bootstrap must be >= 0"),
        (["--recalibrate", "magic"], "--recalibrate must be one of"),
        (["--folds", "1"], "--folds must be >= 2"),
        (["--level", "95"], "--level must be in (0, 1)"),
        (["--diagram", "out.jpg"], "unknown image format"),
    ],
)
def test_bad_options(records: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["metrics", str(records), *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1


def test_broken_line_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"confidence": 0.9, "correct": 1}\n{"confidence": 0.2, "correct": 0}\n{"confidence": 0.7, \n')
    assert main(["metrics", str(path)]) == 2
    captured = capsys.readouterr()
    assert f"{path}:3:" in captured.err and "Traceback" not in captured.err and captured.out == ""


def test_too_few_records_for_the_folds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "few.jsonl"
    path.write_text("".join(json.dumps({"confidence": c, "correct": c > 0.5}) + "\n" for c in (0.2, 0.6, 0.9)))
    assert main(["metrics", str(path), "--recalibrate", "platt", "--bootstrap", "0"]) == 2
    assert "needs at least 5 records" in capsys.readouterr().err


def _console_script() -> Path:
    script = Path(sys.executable).parent / "calibench"
    if not script.exists():
        pytest.skip("calibench console script not installed next to the interpreter")
    return script


def test_console_script_end_to_end(records: Path, tmp_path: Path) -> None:
    script = _console_script()
    ok = subprocess.run([str(script), "metrics", str(records), "--bootstrap", "0", "--json"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert {g["method"] for g in json.loads(ok.stdout)["groups"]} == {"sharp", "honest"}
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"confidence": 0.9, "correct": 1}\nnot json\n')
    bad = subprocess.run([str(script), "metrics", str(broken)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [f"error: {broken}:2: invalid JSON (Expecting value at column 1)"]


def test_option_help_names_the_metrics_the_registry_gives_those_options() -> None:
    import inspect
    import re

    from calibench.commands import metrics as metrics_cmd
    from calibench.metrics import METRICS

    params = inspect.signature(metrics_cmd.metrics).parameters
    for option in ("n_bins", "binning"):
        named = set(re.findall(r"[A-Z]{2,}", params[option].default.help.split("(")[0]))
        assert {n.upper() for n, spec in METRICS.items() if option in spec.options} == named, option
