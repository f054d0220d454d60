"""from-lm-eval: lm-evaluation-harness --log_samples files (real 0.4.x format) -> calibench records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

from calibench.errors import CalibenchError
from calibench.lm_eval_import import convert, convert_file
from calibench.records import read_records

FIX = Path(__file__).parent / "fixtures" / "lm_eval"


def _samples(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_committed_fixture_converts_with_provenance_and_softmax():
    records = convert([FIX])
    assert set(records["task"]) == {"arc_easy", "textgold"}
    assert set(records["model"]) == {"EleutherAI/pythia-70m"} and set(records["revision"]) == {"step1000"}
    assert set(records["method"]) == {"continuation-sum"}
    for path in sorted(FIX.rglob("samples_*.jsonl")):
        task = path.name.split("_2026")[0].removeprefix("samples_")
        got = records[records["task"] == task].set_index("item_id")
        for s in _samples(path):
            lls = np.array([float(r[0]) for r in s["filtered_resps"]])
            row = got.loc[str(s["doc_id"])]
            np.testing.assert_allclose(row["probs"], softmax(lls), rtol=0, atol=1e-12)
            assert row["pred"] == str(int(np.argmax(lls)))
            assert row["confidence"] == pytest.approx(softmax(lls).max())
            assert bool(row["correct"]) == (s["acc"] == 1.0)  # same verdict as lm-eval's own acc
            extra = json.loads(row["extra"])
            assert extra["loglikelihoods"] == lls.tolist()
            assert extra["is_greedy"] == [r[1] == "True" for r in s["filtered_resps"]]
    arc = records[records["task"] == "arc_easy"].set_index("item_id")
    assert arc["label"].tolist() == [1, 0, 3]
    text = records[records["task"] == "textgold"].set_index("item_id")
    assert text["label"].tolist() == [1, 0]  # targets "Rome" and "Madrid" are option texts
    assert text["correct"].tolist() == [True, False]


def test_lm_eval_writer_roundtrip_with_ambiguous_numeric_options(tmp_path):
    """Files written by lm-eval's own EvaluationTracker; "1" is option text 0 and index 1 at once."""
    pytest.importorskip("lm_eval")
    from lm_eval_samples import lm_eval_sample, write_with_lm_eval

    numeric = [
        # target is the option text "1" (index 0); the model prefers it, so lm-eval logged acc = 1
        lm_eval_sample(0, {"q": "1 x 1?"}, "1", "1 x 1 =", ["1", "2"], [-0.5, -2.0], [True, False]),
        # target is the index 1 (option "2"); the model prefers option 0, so acc = 0
        lm_eval_sample(1, {"q": "1 + 1?"}, 1, "1 + 1 =", ["1", "2"], [-0.5, -2.0], [True, False]),
    ]
    files = write_with_lm_eval(tmp_path, "org/tiny-model", "pretrained=org/tiny-model", "main",
                               {"numeric": numeric})
    assert [f.parent.name for f in files] == ["org__tiny-model"]
    assert _samples(files[0])[1]["target"] == "1"  # str(target): the type is gone, acc disambiguates
    records = convert(files)
    assert records["label"].tolist() == [0, 1]
    assert records["correct"].tolist() == [True, False]
    assert set(records["model"]) == {"org/tiny-model"} and set(records["revision"]) == {"main"}


def test_several_filters_keep_none_and_mutual_info_drops_unconditional(tmp_path):
    src = _samples(next(FIX.rglob("samples_arc_easy_*.jsonl")))
    lines = []
    for s in src:
        lines.append(json.dumps(s))
        other = dict(s, filter="take_first_other", filtered_resps=[["-0.1", "True"]] * len(s["filtered_resps"]))
        lines.append(json.dumps(other))
    path = tmp_path / "samples_arc_easy_2026-01-01T00-00-00.000001.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rows = convert_file(path)
    assert len(rows) == 3 and rows[0]["probs"] == pytest.approx(softmax([-4.25, -1.5, -6.0]).tolist())

    s = dict(src[0])
    n = len(s["filtered_resps"])
    s["arguments"] = dict(s["arguments"], **{f"gen_args_{n + i}": {"arg_0": "", "arg_1": s["arguments"][f"gen_args_{i}"]["arg_1"]}
                                             for i in range(n)})
    s["filtered_resps"] = s["filtered_resps"] + [["-9.0", "False"]] * n
    s["acc_mutual_info"] = 1.0
    path.write_text(json.dumps(s) + "\n")
    row = convert_file(path)[0]
    assert len(row["probs"]) == 3 and row["probs"] == pytest.approx(softmax([-4.25, -1.5, -6.0]).tolist())


def test_provenance_fallbacks_and_overrides(tmp_path):
    src = next(FIX.rglob("samples_arc_easy_*.jsonl"))
    folder = tmp_path / "my__model"
    folder.mkdir()
    plain = folder / "mysamples.jsonl"
    shutil.copy(src, plain)
    rows = convert_file(plain)
    assert rows[0]["model"] == "my__model" and rows[0]["task"] == "mysamples" and rows[0]["revision"] == ""
    rows = convert_file(plain, model="m", revision="r1", task="arc")
    assert (rows[0]["model"], rows[0]["revision"], rows[0]["task"]) == ("m", "r1", "arc")


def _bad(tmp_path: Path, mutate) -> Path:
    src = _samples(next(FIX.rglob("samples_arc_easy_*.jsonl")))
    lines = [json.dumps(s) for s in src]
    lines[1] = mutate(src[1])
    path = tmp_path / "samples_bad_2026-01-01T00-00-00.000001.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: '{"doc_id": 1, "target": ', r"bad_.*\.jsonl:2: invalid JSON"),
        (lambda s: "[1, 2]", r":2: each line must be a JSON object"),
        (lambda s: json.dumps(dict(s, filtered_resps=["Paris", "Rome"])), r":2: filtered_resps\[0\] is 'Paris', not a \[loglikelihood"),
        (lambda s: json.dumps(dict(s, filtered_resps=[["abc", "False"], ["-1", "True"]])), r":2: .*log-likelihood 'abc' is not a number"),
        (lambda s: json.dumps(dict(s, filtered_resps=[["0.5", "False"], ["-1", "True"]])), r":2: .*must be a number <= 0"),
        (lambda s: json.dumps(dict(s, filtered_resps=[["nan", "False"], ["-1", "True"]])), r":2: .*must be a number <= 0"),
        (lambda s: json.dumps(dict(s, arguments={}, filtered_resps=[["-1", "True"]])), r":2: 1 option\(s\)"),
        (lambda s: json.dumps(dict(s, target="7")), r":2: target '7' is neither an option index"),
        (lambda s: json.dumps(dict(s, target="[0, 1]")), r":2: target \[0, 1\] lists several gold answers"),
        (lambda s: json.dumps({k: v for k, v in s.items() if k != "doc_id"}), r":2: missing field 'doc_id'"),
        (lambda s: json.dumps({k: v for k, v in s.items() if k not in ("resps", "filtered_resps")}), r":2: missing 'filtered_resps'"),
        (lambda s: json.dumps(dict(s, doc_id=0)), r":2: doc_id 0 already seen on line 1"),
        (lambda s: json.dumps(dict(s, filtered_resps=s["filtered_resps"][:2])), r":2: 4 arguments but 2 responses"),
    ],
)
def test_malformed_samples_name_file_and_line(tmp_path, mutate, message):
    with pytest.raises(CalibenchError, match=message):
        convert([_bad(tmp_path, mutate)])


def test_multiple_input_tasks_are_refused(tmp_path):
    s = _samples(next(FIX.rglob("samples_textgold_*.jsonl")))[0]
    s["arguments"] = {"gen_args_0": {"arg_0": "The trophy didn't fit because the trophy", "arg_1": " was too big."},
                      "gen_args_1": {"arg_0": "The trophy didn't fit because the suitcase", "arg_1": " was too big."}}
    path = tmp_path / "samples_winogrande_2026-01-01T00-00-00.000001.jsonl"
    path.write_text(json.dumps(s) + "\n")
    with pytest.raises(CalibenchError, match=r":1: options are in the context \(a multiple-input task"):
        convert_file(path)


def test_path_errors(tmp_path):
    with pytest.raises(CalibenchError, match="no such file or folder"):
        convert([tmp_path / "missing.jsonl"])
    with pytest.raises(CalibenchError, match="no lm-eval samples_"):
        convert([tmp_path])
    (tmp_path / "samples_x_2026-01-01T00-00-00.1.jsonl").write_text("\n")
    with pytest.raises(CalibenchError, match="no samples"):
        convert([tmp_path])
    src = next(FIX.rglob("samples_arc_easy_*.jsonl"))
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    shutil.copy(src, a / src.name)
    shutil.copy(src, b / src.name)
    (tmp_path / "samples_x_2026-01-01T00-00-00.1.jsonl").unlink()
    with pytest.raises(CalibenchError, match="is also in"):
        convert([a / src.name, b / src.name], model="same")


def test_cli_writes_records_and_prints_summary(tmp_path):
    import typer
    from typer.testing import CliRunner

    from calibench.commands.from_lm_eval import register

    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps typer in multi-command mode
        pass

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["from-lm-eval", str(FIX), "--out", str(out), "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    assert "arc_easy" in result.output and "textgold" in result.output and "ECE" in result.output
    records = read_records(out / "records.parquet")
    assert len(records) == 5 and records["probs"].map(len).tolist() == [3, 4, 4, 2, 2]
    bad = CliRunner().invoke(app, ["from-lm-eval", str(tmp_path / "nope.jsonl"), "--out", str(out)])
    assert isinstance(bad.exception, CalibenchError)


def test_cli_keeps_models_apart(tmp_path):
    import typer
    from typer.testing import CliRunner

    from calibench.commands.from_lm_eval import register

    src = next(FIX.iterdir())
    for name, model in (("a", "org/base"), ("b", "org/aligned")):
        shutil.copytree(src, tmp_path / name)
        results = next((tmp_path / name).glob("results_*.json"))
        info = json.loads(results.read_text())
        results.write_text(json.dumps(dict(info, model_name=model)))
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["from-lm-eval", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out),
                                      "--bootstrap", "0"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "org/base" in result.output and "org/aligned" in result.output
    records = read_records(out / "records.parquet")
    assert records.groupby("model").size().to_dict() == {"org/aligned": 5, "org/base": 5}
