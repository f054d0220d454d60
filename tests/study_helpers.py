"""Shared helpers for the study tests: small synthetic studies (simulated models, no weights)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml

from calibench.study.store import Store


def synthetic_study(path: Path, *, n_models: int = 3, n_tasks: int = 4, items: int = 60,
                    bootstrap: int = 20, with_train: bool = True, name: str = "synthetic-test",
                    task_prefix: str = "synth") -> Path:
    """Write a study of simulated models (one train unit feeding one model when ``with_train``)."""
    models: list[dict] = [
        {"name": f"m{i}", "synthetic": {"skill": 0.45 + 0.1 * i, "sharpness": 1.6 - 0.25 * i},
         "params": f"{10 * 4 ** i}M", "stage": "pretrained"}
        for i in range(n_models)
    ]
    study: dict = {
        "name": name,
        "settings": {"seed": 0, "bootstrap": bootstrap, "n_bins": 10},
        "methods": ["choice", "continuation-sum"],
        "tasks": [{"name": f"{task_prefix}-{j}", "items": items} for j in range(n_tasks)],
        "models": models,
    }
    if with_train:
        study["train"] = [{"name": "sft", "recipe": "synthetic", "options": {"checkpoints": {
            "epoch1": {"skill": 0.7, "sharpness": 1.8}, "epoch2": {"skill": 0.7, "sharpness": 2.4}}}}]
        models.append({"name": "sft", "train": "sft", "revisions": ["epoch1", "epoch2"], "stage": "sft",
                       "tuning": "full", "data": "narrow", "base": models[-1]["name"]})
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def snapshot(study_dir: Path) -> dict[str, tuple[pd.DataFrame, object]]:
    """key -> (records, metrics) of every finished eval unit in a study folder."""
    with Store.open(study_dir, read_only=True) as store:
        return {u.key: (pd.read_parquet(u.records_path), u.metrics) for u in store.finished("eval")}


def assert_same_results(a: dict, b: dict) -> None:
    """Records bit-identical; metrics equal up to the last bits (numpy's SIMD sums depend on memory
    alignment, so the same numbers summed in another process can differ by an ulp)."""
    assert sorted(a) == sorted(b)
    for key in a:
        pd.testing.assert_frame_equal(a[key][0], b[key][0], check_exact=True)
        ma, mb = a[key][1], b[key][1]
        assert len(ma) == len(mb)
        for x, y in zip(ma, mb, strict=True):
            assert {k: v for k, v in x.items() if k not in ("estimate", "low", "high")} == \
                   {k: v for k, v in y.items() if k not in ("estimate", "low", "high")}
            for k in ("estimate", "low", "high"):
                assert (x[k] is None and y[k] is None) or math.isclose(x[k], y[k], rel_tol=1e-12, abs_tol=1e-15), (x, y)


def rendered_synthetic(tmp_path: Path, **kwargs) -> str:
    """Run a synthetic study (``synthetic_study`` kwargs, no train units) and return its HTML report."""
    from calibench.study.report import render
    from calibench.study.results import load_study_data
    from calibench.study.runner import run

    path = synthetic_study(tmp_path / "s.yaml", with_train=False, **kwargs)
    assert run(path, tmp_path / "out", progress=False).failed == []
    data = load_study_data(tmp_path / "out")
    try:
        return render(data)
    finally:
        data.store.close()
