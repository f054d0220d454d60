"""The metric registry is the one place that says what each metric takes; everything else reads it."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import calibench.metrics as metrics_pkg
from calibench.errors import CalibenchError
from calibench.metrics import (
    INPUT_KINDS,
    METRICS,
    MetricSpec,
    bootstrap_ci,
    ece,
    get_spec,
    metric_function,
    paired_delta,
    summarize,
)
from calibench.metrics.bootstrap import bootstrap_replicates
from calibench.metrics.registry import group_inputs, resolve
from calibench.metrics.resample import Layout, RowKeys, resample_indices
from calibench.records import make_records, probs_matrix


def test_every_spec_names_a_known_input_kind_and_its_columns() -> None:
    assert set(INPUT_KINDS) == {"correct", "top", "probs"}
    for name, spec in METRICS.items():
        assert spec.name == name
        assert spec.columns == INPUT_KINDS[spec.kind].columns
        assert set(spec.options) <= {"n_bins", "binning"}
        assert spec.replicates is not None  # every built-in metric has vectorised replicates
    assert METRICS["sce"].columns == ("probs", "label")
    assert METRICS["ace"].options == ("n_bins",)  # always equal-mass: no binning option
    with pytest.raises(TypeError):
        METRICS["mine"] = METRICS["ece"]  # type: ignore[index]  # read-only: no module-level mutation


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(CalibenchError, match="kind must be one of"):
        MetricSpec("bad", ece, "pairs")


def test_metric_function_binds_the_options_the_spec_lists() -> None:
    c, y = [0.1, 0.4, 0.45, 0.9], [0, 1, 0, 1]
    for name, spec in METRICS.items():
        fn = metric_function(name, n_bins=3, binning="mass")
        bound = fn.keywords if isinstance(fn, functools.partial) else {}
        assert set(bound) == set(spec.options), name
    assert metric_function("rmsce", n_bins=3, binning="mass")(c, y) == pytest.approx(
        ece(c, y, n_bins=3, binning="mass", norm="l2")
    )
    with pytest.raises(CalibenchError, match="unknown metric 'nope'; choose from accuracy, ece"):
        get_spec("nope")


def test_resolve_finds_the_spec_of_names_functions_and_partials() -> None:
    spec = METRICS["ece"]
    assert resolve("ece", {}).spec is spec
    assert resolve(ece, {"n_bins": 4}).options == {"n_bins": 4}
    got = resolve(functools.partial(ece, n_bins=15), {"norm": "l2"})
    assert (got.spec, got.function, got.options) == (spec, ece, {"n_bins": 15, "norm": "l2"})
    assert resolve(lambda c, y: 0.0, {}).spec is None


def test_summarize_reports_every_registered_metric_in_registry_order() -> None:
    rows = [{"confidence": 0.6 + 0.1 * (i % 3), "correct": i % 2 == 0, "probs": [0.6 + 0.1 * (i % 3),
             0.4 - 0.1 * (i % 3)], "label": 0 if i % 2 == 0 else 1} for i in range(12)]
    out = summarize(make_records(rows), n_resamples=0)
    assert out["metric"].tolist() == list(METRICS)


def test_group_inputs_give_each_kind_its_columns() -> None:
    rows = [{"confidence": 0.7, "correct": True, "probs": [0.7, 0.3], "label": 0},
            {"confidence": 0.6, "correct": False, "probs": [0.4, 0.6], "label": 0}]
    g = make_records(rows)
    inputs = group_inputs(g, probs_matrix(g))
    np.testing.assert_array_equal(inputs["correct"][0], [True, False])
    np.testing.assert_array_equal(inputs["top"][0], [0.7, 0.6])
    np.testing.assert_array_equal(inputs["probs"][1], [0, 0])
    open_answers = make_records([{"confidence": 0.7, "correct": True}])
    assert group_inputs(open_answers, probs_matrix(open_answers))["probs"] is None


def test_a_custom_spec_works_with_bootstrap_and_paired_delta() -> None:
    def gap(confidence, correct) -> float:
        return float(np.mean(np.asarray(confidence) - np.asarray(correct)))

    spec = MetricSpec("gap", gap, "top")  # no vectorised replicates: runs once per resample
    rng = np.random.default_rng(0)
    c = rng.random(200)
    y = rng.random(200) < c
    ci = bootstrap_ci(spec, c, y, n_resamples=50, seed=1)
    naive = [gap(c[i], y[i]) for chunk in resample_indices(200, 50, 1) for i in chunk]
    np.testing.assert_allclose(bootstrap_replicates(spec, c, y, n_resamples=50, seed=1), naive)
    assert ci.estimate == gap(c, y)
    ids = np.array([f"q{i}" for i in range(200)])
    a = {"item_id": ids, "confidence": c, "correct": y}
    b = {"item_id": ids, "confidence": np.clip(c + 0.1, 0, 1), "correct": y}
    d = paired_delta(spec, a, b, n_resamples=50)
    assert d.delta == pytest.approx(gap(b["confidence"], y) - gap(c, y))
    with pytest.raises(CalibenchError, match="paired_delta cannot tell which record columns metric 'gap'"):
        paired_delta(gap, a, b, n_resamples=10)


def test_options_the_vectorised_path_does_not_know_fall_back_to_the_metric() -> None:
    c, y = np.array([0.2, 0.7, 0.9]), np.array([0, 1, 1])
    with pytest.raises(CalibenchError, match="norm must be"):
        bootstrap_ci(ece, c, y, n_resamples=5, norm="l3")  # the metric's own message
    layout = Layout.for_top(c, y.astype(bool))
    assert METRICS["ece"].replicates((c, y.astype(bool)), {"norm": "l3"}, layout) is None
    assert METRICS["auroc"].replicates((c, y.astype(bool)), {"n_bins": 3}, layout) is None


def test_row_keys_sum_each_row_like_a_loop() -> None:
    rng = np.random.default_rng(5)
    keys = rng.integers(0, 4, size=(3, 50))
    w = rng.random((3, 50))
    rk = RowKeys(keys, 6)
    expected = np.zeros((3, 6))
    counts = np.zeros((3, 6), dtype=np.int64)
    for r in range(3):
        for k, v in zip(keys[r], w[r], strict=True):
            expected[r, k] += v
            counts[r, k] += 1
    np.testing.assert_allclose(rk.sums(w), expected, rtol=1e-14)
    np.testing.assert_array_equal(rk.sums(), counts)


def _metrics_imports() -> dict[str, set[str]]:
    """For each module of calibench.metrics, the calibench.metrics modules it imports (anywhere in it)."""
    root = Path(metrics_pkg.__file__).parent
    names = {p.stem for p in root.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "calibench.metrics":
                    deps |= {a.name if a.name in names else "__init__" for a in node.names}
                elif node.module.startswith("calibench.metrics."):
                    deps.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "calibench.metrics":
                        deps.add("__init__")
                    elif alias.name.startswith("calibench.metrics."):
                        deps.add(alias.name.split(".")[2])
        graph[path.stem] = deps - {path.stem}
    return graph


def test_no_import_circle_in_metrics_even_through_function_level_imports() -> None:
    graph = _metrics_imports()
    assert not any("__init__" in deps for name, deps in graph.items() if name != "__init__")
    assert "registry" in graph["bootstrap"] and "bootstrap" not in graph["smooth"]
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                raise AssertionError(f"import circle: {' -> '.join([*path, node, dep])}")
            if dep not in state:
                visit(dep, [*path, node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_cli_summary_columns_and_choices_come_from_registries() -> None:
    from calibench.commands import evaluate as evaluate_cmd

    assert {name for _, name in evaluate_cmd.SUMMARY_COLUMNS} <= set(METRICS)
    for metric, stand_in in evaluate_cmd.TOP_LABEL_STAND_IN.items():
        assert (METRICS[metric].kind, METRICS[stand_in].kind) == ("probs", "top")


def test_frame_inputs_and_array_inputs_give_the_same_ci() -> None:
    rng = np.random.default_rng(3)
    c = rng.random(120)
    y = rng.random(120) < c
    table = summarize(pd.DataFrame({"confidence": c, "correct": y}), n_resamples=30, seed=2)
    row = table.set_index("metric").loc["aurc"]
    from calibench.metrics.summary import summarize_inputs

    arrays = {r["metric"]: r for r in summarize_inputs({"top": (c, y), "correct": (y,)}, n_resamples=30, seed=2)}
    assert (row["estimate"], row["low"], row["high"]) == tuple(arrays["aurc"][k] for k in ("estimate", "low", "high"))
    assert row["estimate"] == bootstrap_ci("aurc", c, y, n_resamples=30, seed=2).estimate
