"""from-lm-eval on variable option counts (ARC), results files, and one-element list targets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

from calibench.errors import CalibenchError
from calibench.lm_eval_import import convert, convert_file
from calibench.metrics import summarize

FIX = Path(__file__).parent / "fixtures" / "lm_eval"


def test_arc_with_3_and_4_options_gets_brier_nll_and_sce() -> None:
    records = convert([FIX])
    arc = records[records["task"] == "arc_easy"]
    out = summarize(arc, n_resamples=0).set_index("metric")["estimate"]
    probs = [softmax(np.array(v)) for v in ([-4.25, -1.5, -6.0], [-2.0, -1.75, -5.5, -7.125],
                                            [-3.0, -2.5, -2.0, -0.5])]
    labels = [1, 0, 3]
    brier = np.mean([np.sum((p - np.eye(len(p))[y]) ** 2) for p, y in zip(probs, labels, strict=True)])
    nll = np.mean([-np.log(p[y]) for p, y in zip(probs, labels, strict=True)])
    assert out["brier"] == pytest.approx(brier, abs=1e-12)
    assert out["nll"] == pytest.approx(nll, abs=1e-12)
    assert np.isfinite(out["sce"])


def test_results_file_points_to_the_samples_files(tmp_path: Path) -> None:
    results = next(FIX.rglob("results_*.json"))
    with pytest.raises(CalibenchError, match=r"this is an lm-eval results file .* pass the samples_<task>_<date>"
                                             r"\.jsonl files or their folder instead; beside it: samples_"):
        convert([results])
    lone = tmp_path / "results_2026-01-01T00-00-00.json"
    lone.write_text(json.dumps({"results": {}}, indent=2))
    with pytest.raises(CalibenchError, match="run lm-eval with --log_samples"):
        convert([lone])


@pytest.mark.parametrize(("target", "label"), [([1], 1), ("[1]", 1), (["Rome"], 1), ("['Rome', 'Rome']", 1)])
def test_one_element_list_targets(tmp_path: Path, target: object, label: int) -> None:
    src = next(FIX.rglob("samples_textgold_*.jsonl"))
    lines = [json.loads(x) for x in src.read_text().splitlines() if x.strip()]
    lines[0]["target"] = target
    dest = tmp_path / src.name
    dest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    shutil.copy(next(src.parent.glob("results_*.json")), tmp_path)
    rows = convert_file(dest)
    assert rows[0]["label"] == label and rows[0]["correct"] is True


def test_cli_notes_option_counts(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from calibench.commands.from_lm_eval import register

    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:
        pass

    result = CliRunner().invoke(app, ["from-lm-eval", str(FIX), "--out", str(tmp_path / "run"), "--bootstrap", "0"],
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "note (arc_easy): items have 3-4 options" in result.output
    assert "note (arc_easy): small n: 3 items < 300" in result.output
