"""The report's side-by-side section: models on the same items, paired deltas that equal paired_delta's."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from calibench.metrics import metric_function, paired_delta
from calibench.study.findings import NEEDS, NOT_TESTED, EvalUnit, evaluate_claims
from calibench.study.numbers import fmt_num
from calibench.study.results import load_study_data
from calibench.study.runner import run
from calibench.study.sidebyside import (
    MAX_ALL_PAIRS,
    compared_models,
    metric_rows,
    model_pairs,
    pair_deltas,
)

ITEMS, BOOT = 2000, 200


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two simulated models of the same skill: "calm" calibrated (sharpness 1), "sharp" overconfident
    (sharpness 3), so ECE(sharp) - ECE(calm) is large and positive; a third task only "calm" scores."""
    root = tmp_path_factory.mktemp("sbs")
    study = {
        "name": "sbs-test", "settings": {"seed": 0, "bootstrap": BOOT},
        "methods": ["choice", "continuation-sum"],
        "tasks": [{"name": "t-shared", "items": ITEMS}, {"name": "t-alone", "items": 50}],
        "models": [
            {"name": "calm", "synthetic": {"skill": 0.6, "sharpness": 1.0}, "params": "10M", "stage": "pretrained"},
            {"name": "sharp", "synthetic": {"skill": 0.6, "sharpness": 3.0}, "params": "10M", "stage": "sft",
             "tasks": ["t-shared"]},
        ],
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    assert run(path, root / "out", progress=False).failed == []
    return root / "out"


def true_ece_gap(method: str) -> float:
    """Population ECE(sharp) - ECE(calm) of the simulation (calibench.study.synthetic): with K options and
    u ~ Beta(4 skill, 4 (1 - skill)), confidence and accuracy differ by (1 - 1/K) |u^(1/s) - u|."""
    from scipy.special import beta

    from calibench.study.synthetic import METHOD_SHARPNESS

    a, b = 0.6 * 4, 0.4 * 4
    moment = lambda t: beta(a + t, b) / beta(a, b)  # noqa: E731 - E[u^t]
    ece = lambda s: 0.75 * abs(moment(1 / s) - moment(1))  # noqa: E731
    f = METHOD_SHARPNESS[method]
    return ece(3.0 * f) - ece(1.0 * f)


def _direct(data, a: EvalUnit, b: EvalUnit, method: str, metric: str):
    ra, rb = data.records(a.key), data.records(b.key)
    return paired_delta(metric_function(metric, n_bins=10), ra[ra["method"] == method], rb[rb["method"] == method],
                        n_resamples=BOOT, seed=0)


def test_compared_models_need_two_models_on_a_task(study_dir: Path) -> None:
    data = load_study_data(study_dir)
    try:
        compared = compared_models(data.units)
        assert list(compared) == ["t-shared"]                       # t-alone has one model
        assert [u.name for u in compared["t-shared"]] == ["calm", "sharp"]   # study order: B - A = sharp - calm
    finally:
        data.store.close()


def test_pair_deltas_equal_paired_delta(study_dir: Path) -> None:
    data = load_study_data(study_dir)
    try:
        models = compared_models(data.units)["t-shared"]
        rows = pair_deltas(data, models)
        assert [(r["method"], r["b"], r["a"], r["n"]) for r in rows] == [
            ("choice", "sharp", "calm", ITEMS), ("continuation-sum", "sharp", "calm", ITEMS)]
        for r in rows:
            for metric, cell in zip(data.shown_metrics, r["cells"], strict=True):
                d = _direct(data, models[0], models[1], r["method"], metric)
                assert cell == {"delta": fmt_num(d.delta), "low": fmt_num(d.low), "high": fmt_num(d.high),
                                "p": fmt_num(d.p_value), "sig": d.p_value < 0.05}, (r["method"], metric)
            ece = r["cells"][data.shown_metrics.index("ece")]
            # the designed effect: the overconfident model's ECE is higher by about the known gap (binned ECE
            # of the calibrated model is ~0.03 above its true 0 at this n, so the gap reads a bit low)
            assert ece["sig"] and float(ece["low"]) > 0
            assert abs(float(ece["delta"]) - true_ece_gap(r["method"])) < 0.05, (r["method"], ece)
        table = metric_rows(data, models)
        assert [(r["method"], r["model"]) for r in table] == [("choice", "calm"), ("choice", "sharp"),
                                                              ("continuation-sum", "calm"),
                                                              ("continuation-sum", "sharp")]
        stored = data.metrics
        want = stored[(stored["unit"] == "sharp") & (stored["task"] == "t-shared") & (stored["method"] == "choice")
                      & (stored["metric"] == "ece")]["estimate"].iloc[0]
        assert table[1]["cells"][data.shown_metrics.index("ece")]["est"] == fmt_num(want)
    finally:
        data.store.close()


def test_report_shows_the_pair_deltas(study_dir: Path) -> None:
    from calibench.study.report import render

    data = load_study_data(study_dir)
    try:
        text = render(data)
        calm, sharp = compared_models(data.units)["t-shared"]
        d = _direct(data, calm, sharp, "choice", "ece")
    finally:
        data.store.close()
    section = text[text.index('<section id="sidebyside">'):text.index('<section id="stages">')]
    rows = re.findall(r"<tr><td>choice</td><td>sharp &minus; calm</td><td>(\d+)</td>(.*?)</tr>", section)
    assert len(rows) == 1 and rows[0][0] == str(ITEMS)
    cells = re.findall(r"<td>(.*?)</td>", rows[0][1])
    ece_cell = cells[list(data.shown_metrics).index("ece")]
    assert (f'<span class="sig">{fmt_num(d.delta)}</span><span class=ci>[{fmt_num(d.low)}, {fmt_num(d.high)}] '
            f"p={fmt_num(d.p_value)}</span>") == ece_cell
    assert section.count("<img ") == 1            # accuracy vs ECE; the reliability grids have their own section
    rel = text[text.index('<section id="reliability">'):text.index('<section id="scale">')]
    for task in ("t-shared", "t-alone"):            # every task gets its grid, the shared one included
        assert f'alt="Reliability diagrams of task {task}: ' in rel
    # both models declare 10M: no scale figure, and the section says what it would need
    scale = text[text.index('<section id="scale">'):text.index('<section id="dynamics">')]
    assert "Not in this study: needs models of two or more different declared sizes (params:)." in scale


def test_model_names_are_escaped_in_the_section(study_dir: Path) -> None:
    from calibench.study.report import render

    evil = "<b>x</b>&\"y"
    data = load_study_data(study_dir)
    try:
        data.units = [dataclasses.replace(u, model=evil + u.model) for u in data.units]
        text = render(data)
    finally:
        data.store.close()
    section = text[text.index('<section id="sidebyside">'):text.index('<section id="stages">')]
    assert "<b>x</b>" not in text
    assert "&lt;b&gt;x&lt;/b&gt;&amp;&#34;ysharp &minus; &lt;b&gt;x&lt;/b&gt;&amp;&#34;ycalm" in section


def test_deltas_pair_only_shared_items(study_dir: Path) -> None:
    data = load_study_data(study_dir)
    try:
        calm, sharp = compared_models(data.units)["t-shared"]
        rec = data.records(sharp.key)
        keep = sorted(set(rec["item_id"]))[30:]
        data._records[sharp.key] = rec[rec["item_id"].isin(keep)]
        est, low, high, p, n = data.delta(calm, sharp, "choice", "ece")
        ra = data.records(calm.key)
        ra = ra[(ra["method"] == "choice") & ra["item_id"].isin(keep)]
        rb = data.records(sharp.key)
        d = paired_delta(metric_function("ece", n_bins=10), ra, rb[rb["method"] == "choice"], n_resamples=BOOT, seed=0)
        assert n == ITEMS - 30 and (est, low, high, p) == (d.delta, d.low, d.high, d.p_value)
    finally:
        data.store.close()


def test_many_models_pair_neighbours() -> None:
    units = [EvalUnit(f"k{i}", f"m{i}", "", "t", {}, ("choice",)) for i in range(MAX_ALL_PAIRS + 2)]
    few = model_pairs(units[:3])
    assert [(a.model, b.model) for a, b in few] == [("m0", "m1"), ("m0", "m2"), ("m1", "m2")]
    many = model_pairs(units)
    assert [(a.model, b.model) for a, b in many] == [(f"m{i}", f"m{i + 1}") for i in range(len(units) - 1)]


def test_untested_claims_say_why() -> None:
    base = EvalUnit("k0", "gemma", "", "t", {"stage": "base", "params": 2.7e8}, ("choice",))
    sft = EvalUnit("k1", "smol", "", "t", {"stage": "sft", "params": 1.35e8}, ("choice",))
    findings = {f.claim.id: f for f in evaluate_claims([base, sft], lambda *a: (0.0, -1.0, 1.0, 1.0, 10))}
    assert all(f.verdict == NOT_TESTED for f in findings.values())
    assert findings["zhu-scale"].reason == NEEDS["scale"] and "params:" in NEEDS["scale"]
    assert findings["zhu-dynamics"].reason == NEEDS["dynamics"] and "checkpoints" in NEEDS["dynamics"]
    assert findings["zhu-sft-hurts"].reason == NEEDS["sft_vs_base"]
    # a comparison that finds pairs but not the claimed method says so
    tuned = EvalUnit("k2", "tuned", "", "t", {"stage": "sft", "base": "gemma"}, ("first-token",))
    base2 = dataclasses.replace(base, methods=("first-token",))
    f = {f.claim.id: f for f in evaluate_claims([base2, tuned], lambda *a: (0.0, -1.0, 1.0, 1.0, 10))}
    assert f["oh-sce-choice"].verdict == NOT_TESTED and "choice method" in f["oh-sce-choice"].reason
    assert f["zhu-sft-hurts"].reason is None


def test_scale_uses_declared_params_of_every_stage() -> None:
    from calibench.study.report import scale_series

    gemma = EvalUnit("k0", "gemma", "", "t", {"stage": "base", "params": 2.7e8}, ("choice",))
    smol = EvalUnit("k1", "smol", "", "t", {"stage": "sft", "params": 1.35e8}, ("choice",))
    chat = EvalUnit("k2", "smol-chat", "", "t", {"stage": "sft", "params": 1.35e8, "chat_template": True},
                    ("choice",))
    series = scale_series([smol, chat, gemma])
    assert {k: [(x, u.model) for x, u in v] for k, v in series.items()} == {
        "sft": [(1.35e8, "smol")], "sft, chat template": [(1.35e8, "smol-chat")], "base": [(2.7e8, "gemma")]}
    assert scale_series([smol, chat]) == {}           # one size only: nothing to plot


def test_plot_matrix_and_scatter_draw_the_given_numbers() -> None:
    from calibench.report.diagrams import reliability_diagram
    from calibench.report.lines import MARKERS, PALETTE, Point, ScatterPanel, plot_scatter
    from calibench.report.plots import plot_matrix

    rng = np.random.default_rng(0)
    conf = rng.uniform(0.3, 1.0, 100)
    diag = reliability_diagram(conf, rng.random(100) < conf, n_bins=10)
    fig = plot_matrix({("a", "x"): diag, ("b", "y"): diag}, ["a", "b"], ["x", "y"])
    titles = [ax.get_title(loc="left").split("\n")[0] for ax in fig.axes if ax.get_title(loc="left")]
    assert titles == ["a · x", "b · y"]              # (b, x) and (a, y) are left blank
    panel = ScatterPanel("p", [Point("m1", "choice", 0.6, 0.5, 0.7, 0.1, 0.05, 0.2),
                               Point("m2", "sequence", 0.4, float("nan"), 0.5, 0.3, 0.2, 0.4)])
    ax = plot_scatter([panel], xlabel="accuracy", ylabel="ECE").axes[0]
    first, second = ax.containers
    assert first.lines[0].get_xydata().tolist() == [[0.6, 0.1]] and first.lines[0].get_color() == PALETTE[0]
    assert second.lines[0].get_marker() == MARKERS[1] and second.lines[0].get_color() == PALETTE[1]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["m1", "m2", "choice", "sequence"]


def test_scale_ticks_name_the_declared_sizes() -> None:
    from calibench.report.lines import Line, Panel, count_label, plot_metric_lines

    assert [count_label(x) for x in (1.35e8, 2.7e8, 1.4e9, 7e4, 12)] == ["135M", "270M", "1.4B", "70k", "12"]
    panel = Panel("scale: t", [Line("choice", [1.35e8, 2.7e8], [0.3, 0.2], [0.2, 0.1], [0.4, 0.3])])
    ax = plot_metric_lines([panel], xlabel="parameters", ylabel="ECE", logx=True,
                           xticks={1.35e8: "135M", 2.7e8: "270M"}).axes[0]
    assert list(ax.get_xticks()) == [1.35e8, 2.7e8]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["135M", "270M"]


def test_undefined_delta_shows_na_without_a_ci(study_dir: Path) -> None:
    data = load_study_data(study_dir)
    try:
        calm, sharp = compared_models(data.units)["t-shared"]
        rec = data.records(sharp.key).copy()
        rec["correct"] = False                       # no right answer: AUROC undefined for "sharp"
        data._records[sharp.key] = rec
        row = next(r for r in pair_deltas(data, [calm, sharp]) if r["method"] == "choice")
        auroc = row["cells"][data.shown_metrics.index("auroc")]
        assert auroc == {"delta": "n/a", "low": None, "high": None, "p": None, "sig": False}
        acc = row["cells"][data.shown_metrics.index("accuracy")]
        d = _direct(data, calm, sharp, "choice", "accuracy")
        assert acc["delta"] == fmt_num(d.delta) and d.delta < -0.5
    finally:
        data.store.close()


def test_real_small_compares_the_chat_template_on_the_same_items() -> None:
    from calibench.study.runner import plan
    from calibench.study.shipped import find_study

    _, units = plan(find_study("real-small"))
    specs = {(u.spec["model"], u.spec["task"]): u.spec for u in units}
    assert sorted({m for m, _ in specs}) == ["gemma3-270m", "smollm2-135m-instruct", "smollm2-135m-instruct-chat"]
    for task in ("world-facts", "world-mc"):
        plain, chat = specs[("smollm2-135m-instruct", task)], specs[("smollm2-135m-instruct-chat", task)]
        assert (plain["chat_template"], chat["chat_template"]) == (False, True)
        assert plain["pretrained"] == chat["pretrained"] and plain["task_hash"] == chat["task_hash"]
        assert plain["limit"] == chat["limit"] == specs[("gemma3-270m", task)]["limit"] == 100
    assert len({u.key for u in units}) == 6
    # the report pairs them: every pair of the three models, the chat-templated one as B
    evals = [EvalUnit(u.key, u.spec["model"], "", u.spec["task"], u.spec["labels"], tuple(u.spec["methods"]))
             for u in units]
    pairs = model_pairs(compared_models(evals)["world-mc"])
    assert ("smollm2-135m-instruct", "smollm2-135m-instruct-chat") in [(a.model, b.model) for a, b in pairs]


def test_every_task_gets_a_models_x_methods_grid(tmp_path: Path) -> None:
    from study_helpers import rendered_synthetic

    text = rendered_synthetic(tmp_path, n_models=2, n_tasks=5, items=30)
    section = text[text.index('<section id="sidebyside">'):text.index('<section id="stages">')]
    assert section.count("<img ") == 1 and 'alt="Reliability diagrams of' not in section   # accuracy vs ECE
    rel = text[text.index('<section id="reliability">'):text.index('<section id="scale">')]
    for j in range(5):       # no cap: every task, each with both models (rows) and both methods (columns)
        assert (f'alt="Reliability diagrams of task synth-{j}: one row per model revision (m0, m1), one column '
                f'per method (choice, continuation-sum)') in rel
