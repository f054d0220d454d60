"""``compare_runs`` and ``calibench compare`` on small hand-made runs (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibench.cli import main
from calibench.compare import compare_runs, default_out_dir, write_comparison
from calibench.errors import CalibenchError
from calibench.io import write_json
from calibench.records import make_records, write_records


def make_run(path: Path, units: dict[tuple[str, str], list[tuple[str, float, bool, list[float] | None]]],
             *, n_bins: int = 10) -> Path:
    """A run folder: records.parquet from (item_id, confidence, correct, probs) rows + metrics.json."""
    rows = []
    for (task, method), items in units.items():
        for item_id, conf, ok, probs in items:
            label = None
            if probs is not None:
                top = int(np.argmax(probs))
                label = top if ok else (top + 1) % len(probs)
            rows.append({"task": task, "method": method, "item_id": item_id, "confidence": conf,
                         "correct": ok, "probs": probs, "label": label, "pred": str(top if probs else "")})
    write_records(make_records(rows), path / "records.parquet")
    write_json(path / "metrics.json", {"n_bins": n_bins, "metrics": []})
    return path


def mc_items(correct: list[bool], conf: float) -> list:
    return [(f"q{i}", conf, ok, [conf, 1 - conf]) for i, ok in enumerate(correct)]


@pytest.fixture()
def runs(tmp_path):
    n = 40
    a = make_run(tmp_path / "base", {
        ("mc", "choice"): mc_items([i % 2 == 0 for i in range(n)], 0.9),
        ("facts", "sequence"): [(f"f{i}", 0.6, i < 3, None) for i in range(5)],
    })
    b_items = mc_items([True] * n, 0.9)
    b = make_run(tmp_path / "aligned", {
        ("mc", "choice"): b_items[::-1],  # another order: items are matched on item_id
        ("mc", "continuation-sum"): mc_items([True] * n, 0.8),
    })
    return a, b


def test_paired_deltas_by_hand(runs):
    a, b = runs
    comp = compare_runs(a, b, n_resamples=100)
    assert comp.only_a == [("facts", "sequence")] and comp.only_b == [("mc", "continuation-sum")]
    t = comp.table.set_index("metric")
    assert set(comp.table["method"]) == {"choice"}
    # A: half right at confidence 0.9 -> accuracy 0.5, ECE 0.4; B: all right -> 1.0, ECE 0.1
    assert t.loc["accuracy", ["a", "b", "delta"]].tolist() == pytest.approx([0.5, 1.0, 0.5])
    assert t.loc["ece", ["a", "b", "delta"]].tolist() == pytest.approx([0.4, 0.1, -0.3])
    # top-label Brier: A = (0.1^2 + 0.9^2) / 2 = 0.41, B = 0.01
    assert t.loc["brier_top", "delta"] == pytest.approx(0.01 - 0.41)
    # class-wise metrics exist because both runs have probs; brier (multiclass) = 2 x top-label here
    assert t.loc["brier", "delta"] == pytest.approx(2 * (0.01 - 0.41))
    assert t.loc["accuracy", "n"] == 40
    assert t.loc["accuracy", "low"] <= 0.5 <= t.loc["accuracy", "high"]
    assert t.loc["accuracy", "p_value"] < 0.05  # B is right on every item A misses
    assert comp.n_bins == 10


def test_identical_runs_have_zero_delta_and_n_bins_from_run(tmp_path):
    units = {("mc", "choice"): mc_items([True, False, True, True], 0.7)}
    a = make_run(tmp_path / "a", units, n_bins=5)
    b = make_run(tmp_path / "b", units)
    comp = compare_runs(a, b, n_resamples=50)
    assert comp.n_bins == 5
    finite = comp.table["delta"].dropna()
    assert len(finite) >= 8 and (finite == 0).all()


def test_errors(tmp_path, runs):
    a, _ = runs
    other = make_run(tmp_path / "other", {("clm", "token"): [("d:0", 0.5, True, None), ("d:1", 0.5, False, None)]})
    with pytest.raises(CalibenchError, match="share no task x method"):
        compare_runs(a, other)
    fewer = make_run(tmp_path / "fewer", {("mc", "choice"): mc_items([True] * 39, 0.9)})
    with pytest.raises(CalibenchError, match=r"different items \(1 only in A, 0 only in B, e.g. 'q39'\)"):
        compare_runs(a, fewer)
    with pytest.raises(CalibenchError, match="not a calibench run"):
        compare_runs(a, tmp_path / "missing")


def test_cli_json_and_files(runs, capsys):
    a, b = runs
    assert main(["compare", str(a), str(b), "--json", "--bootstrap", "10"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["delta"] == "b - a" and data["n_resamples"] == 10
    acc = next(r for r in data["rows"] if r["metric"] == "accuracy")
    assert acc["delta"] == pytest.approx(0.5)
    out = default_out_dir(a, b)
    assert out == a.parent / "compare-base-vs-aligned"
    assert (out / "compare.json").is_file() and (out / "reliability_compare.png").is_file()
    assert main(["compare", str(a), str(a.parent / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a calibench run" in err


def test_write_comparison_swaps_in_a_whole_folder(runs, tmp_path, monkeypatch):
    a, b = runs
    comp = compare_runs(a, b, n_resamples=20, seed=0)
    out = tmp_path / "cmp"
    write_comparison(comp, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"compare.json", "manifest.json"} <= set(before)

    def killed(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("calibench.report.plots.plot_reliability_grid", killed)
    with pytest.raises(OSError, match="disk full"):  # dies after compare.json was written to the stage
        write_comparison(compare_runs(a, b, n_resamples=30, seed=1), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old folder, untouched
    assert not list(tmp_path.glob(".cmp.*"))  # no staging folder left


def test_write_comparison_accepts_record_files(runs, tmp_path):
    a, b = runs
    comp = compare_runs(a / "records.parquet", b / "records.parquet", n_resamples=20)
    files = write_comparison(comp, tmp_path / "cmp")
    assert [f.name for f in files] == ["compare.json", "reliability_compare.png"]
    assert json.loads(files[0].read_text())["run_a"].endswith("records.parquet")


def test_one_stream_for_both_runs_gives_paired_delta_of_every_metric(tmp_path):
    """compare resamples every metric of both runs together; each row must be paired_delta's numbers."""
    from calibench.metrics import METRICS, metric_function, paired_delta
    from calibench.records import load_run_records

    rng = np.random.default_rng(4)
    n = 300

    def items(shift: float) -> list:
        conf = np.clip(rng.uniform(0.45, 1.0, n) - shift, 0.42, 1.0)  # above the other two options
        ok = rng.random(n) < conf - 0.1
        return [(f"q{i}", float(c), bool(y), [float(c), float(1 - c) * 0.7, float(1 - c) * 0.3])
                for i, (c, y) in enumerate(zip(conf, ok, strict=True))]

    a = make_run(tmp_path / "a", {("mc", "choice"): items(0.0)})
    b_rows = items(0.1)
    b = make_run(tmp_path / "b", {("mc", "choice"): b_rows[::-1]})  # another order: matched on item_id
    table = compare_runs(a, b, n_resamples=60, seed=3, ci="percentile").table.set_index("metric")
    assert list(table.index) == list(METRICS)
    ra, rb = load_run_records(a), load_run_records(b)
    for name in METRICS:
        pdl = paired_delta(metric_function(name), ra, rb, n_resamples=60, seed=3, ci="percentile")
        got = table.loc[name, ["delta", "low", "high", "p_value"]].tolist()
        np.testing.assert_allclose(got, [pdl.delta, pdl.low, pdl.high, pdl.p_value], rtol=0, atol=1e-12, err_msg=name)
