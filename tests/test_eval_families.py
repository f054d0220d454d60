"""``calibench eval`` with the confidence families on a real tiny model: options reach the methods, the
records do not depend on the batch size, and the validity lines name the failing cells."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from calibench.cli import main
from test_evaluate import TEXT, write_tasks


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from pathlib import Path

    from calibench.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("families")
    tasks = write_tasks(root)
    texts = [TEXT] * 5 + [Path(p).read_text() for p in tasks.values()]
    model = build_tiny_model(root / "m", texts, vocab_size=400, hidden=32, layers=2, heads=2, context=128, seed=0)
    return {"root": root, "tasks": tasks, "model": model}


def _run(world, out, batch_size, capsys):
    tasks = world["tasks"]
    args = ["eval", "--model-args", f"pretrained={world['model']}", "--tasks", f"{tasks['mc']},{tasks['facts']}",
            "--methods", "consistency,semantic,p-true-fewshot,probe", "--n-samples", "3", "--temperature", "1.5",
            "--probe-folds", "2", "--out", str(out), "--bootstrap", "0", "--quiet", "--no-figures",
            "--batch-size", str(batch_size), "--threads", "1"]
    assert main(args) == 0
    return pd.read_parquet(out / "records.parquet"), capsys.readouterr().out


def test_eval_runs_the_families_with_their_options(world, capsys) -> None:
    one, text = _run(world, world["root"] / "b1", 1, capsys)
    assert len(one) == 4 * 2 * 6  # four methods, two tasks, six items
    config = json.loads((world["root"] / "b1" / "config.json").read_text())
    assert config["options"]["n_samples"] == 3 and config["options"]["temperature"] == 1.5
    assert config["options"]["probe_folds"] == 2
    extra = json.loads(one[one["method"] == "semantic"]["extra"].iloc[0])
    assert extra["n_samples"] == 3 and len(extra["samples"]) == 3
    # a random-init model fails the gates; each failing cell gets one line with its reason
    lines = [ln for ln in text.splitlines() if ln.startswith("not valid: ")]
    assert lines and all(" · " in ln and ": " in ln[len("not valid: "):] for ln in lines)
    four, _ = _run(world, world["root"] / "b4", 4, capsys)
    cols = ["task", "method", "item_id", "pred", "correct"]
    pd.testing.assert_frame_equal(one[cols], four[cols])  # seeded per item: the batch does not matter
    for a, b in zip(one["extra"], four["extra"], strict=True):
        ea, eb = json.loads(a), json.loads(b)
        assert ea.get("samples") == eb.get("samples") and ea.get("ideas") == eb.get("ideas")  # the same draws
        for key in ea:  # numbers up to the last bits padding changes
            if isinstance(ea[key], float):
                assert ea[key] == pytest.approx(eb[key], rel=1e-6, abs=1e-9)
    assert (one["confidence"] - four["confidence"]).abs().max() < 1e-6
