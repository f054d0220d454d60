"""The study report as a reviewer reads it: lifecycle figure first, verdicts with effect sizes, summary with
caveats, stage x method reliability grids for every task x method, per-bucket tables, 150 dpi, alt text."""

from __future__ import annotations

import base64
import dataclasses
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from calibench.study.findings import NOT_TESTED, evaluate_claims
from calibench.study.numbers import fmt_num
from calibench.study.results import StudyData, bucket_metrics, load_study_data
from calibench.study.runner import run
from calibench.world.derived import BUCKETS

EVIL = "<script>alert(1)</script>"
ITEMS = 300


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated life: pretraining checkpoints -> SFT epochs -> RL and DPO from the last epoch, a smaller
    pretrained model, and a near-chance model that fails the validity gates."""
    root = tmp_path_factory.mktemp("life")
    study = {
        "name": "life-test", "settings": {"seed": 0, "bootstrap": 100},
        "methods": ["choice", "continuation-sum"],
        "metrics": ["accuracy", "ece", "sce", "brier"],
        "tasks": [{"name": "t-a", "items": ITEMS}, {"name": "t-b", "items": ITEMS}],
        "train": [
            {"name": "pre", "recipe": "synthetic", "options": {"checkpoints": {
                "step16": {"skill": 0.4, "sharpness": 2.0}, "step256": {"skill": 0.6, "sharpness": 1.0}}}},
            {"name": "sft", "recipe": "synthetic", "options": {"checkpoints": {
                "epoch1": {"skill": 0.65, "sharpness": 1.6}, "epoch2": {"skill": 0.65, "sharpness": 4.0}}}},
            {"name": "rl", "recipe": "synthetic", "options": {"checkpoints": {"final": {"skill": 0.66, "sharpness": 2.8}}}},
            {"name": "dpo", "recipe": "synthetic", "options": {"checkpoints": {"final": {"skill": 0.66, "sharpness": 1.4}}}},
        ],
        "models": [
            {"name": "noise", "synthetic": {"skill": 0.001, "sharpness": 1.0}, "params": "5M", "stage": "pretrained"},
            {"name": "small", "synthetic": {"skill": 0.5, "sharpness": 1.5}, "params": "10M", "stage": "pretrained"},
            {"name": "big", "train": "pre", "revisions": ["step16", "step256"], "params": "1B", "stage": "pretrained"},
            {"name": "sft", "train": "sft", "revisions": ["epoch1", "epoch2"], "stage": "sft", "tuning": "full",
             "data": "diverse", "base": "big"},
            {"name": "rl", "train": "rl", "revisions": ["final"], "stage": "rl", "base": "sft"},
            {"name": "dpo", "train": "dpo", "revisions": ["final"], "stage": "dpo", "base": "sft"},
        ],
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    assert run(path, root / "out", progress=False).failed == []
    return root / "out"


def _bucketed(data: StudyData) -> None:
    """Give every item an exposure bucket in its id (as lab facts/MC ids carry), the same on every unit."""
    for u in data.units:
        rec = data.records(u.key).copy()
        ids = sorted(set(rec["item_id"]))
        new = {i: f"mc-{BUCKETS[k % 3]}-{k:04d}-field" for k, i in enumerate(ids)}
        rec["item_id"] = rec["item_id"].map(new)
        data._records[u.key] = rec


@pytest.fixture(scope="module")
def rendered(study_dir: Path) -> tuple[str, dict]:
    from calibench.study.report import render

    data = load_study_data(study_dir)
    try:
        _bucketed(data)
        text = render(data)
        facts = {"units": data.units, "metrics": data.metrics.copy(),
                 "records": {u.key: data.records(u.key) for u in data.units}, "shown": data.shown_metrics}
    finally:
        data.store.close()
    return text, facts


def _section(text: str, sid: str) -> str:
    start = text.index(f'<section id="{sid}">')
    return text[start:text.index("</section>", start)]


def _images(text: str) -> list[str]:
    return re.findall(r"<img\b[^>]*>", text)


def test_the_report_opens_with_the_lifecycle_figure(rendered: tuple[str, dict]) -> None:
    text, _ = rendered
    first_img = text.index("<img ")
    assert text.index('<section id="lifecycle">') < first_img < text.index('<section id="findings">')
    assert text.index('<section id="findings">') < text.index('<section id="summary">') < text.index(
        '<section id="sidebyside">')
    alt = re.search(r'alt="([^"]*)"', text[first_img:]).group(1)
    assert alt.startswith("Lifecycle figure: ECE, accuracy, SCE (columns)")
    assert "x ticks: step16, step256, epoch1, epoch2, RL, DPO" in alt


def test_lifecycle_numbers_are_the_stored_ones(study_dir: Path) -> None:
    from calibench.study.life import life_chart, spine

    data = load_study_data(study_dir)
    try:
        steps = spine(data.units)
        chart = life_chart(data, ["ece", "accuracy"])
    finally:
        data.store.close()
    assert [(s.row, s.branch) for s in steps] == [("big@step16", False), ("big@step256", False),
                                                  ("sft@epoch1", False), ("sft@epoch2", False),
                                                  ("rl@final", True), ("dpo@final", True)]
    assert [s.label for s in chart.spans] == ["pretraining", "SFT", "RL", "DPO"]
    ece_a = chart.rows[0][0]
    assert ece_a.title == "t-a: ECE"
    choice = next(s for s in ece_a.series if s.label == "choice")
    spine_line, to_rl, to_dpo = choice.segments
    m = data.metrics
    want = [m[(m["unit"] == name) & (m["task"] == "t-a") & (m["method"] == "choice") & (m["metric"] == "ece")]
            ["estimate"].iloc[0] for name in ("big@step16", "big@step256", "sft@epoch1", "sft@epoch2")]
    np.testing.assert_allclose(spine_line.estimate, want)
    assert list(spine_line.x) == [0, 1, 2, 3]
    assert list(to_rl.x) == [3, 4] and list(to_dpo.x) == [3, 5]    # both branches start at the last SFT epoch
    # the designed effect is visible: sharper SFT epochs, larger ECE
    assert want[3] > want[1] + 0.05


def test_verdicts_show_effect_sizes_and_reasons(study_dir: Path, rendered: tuple[str, dict]) -> None:
    text, facts = rendered
    data = load_study_data(study_dir)
    try:
        _bucketed(data)
        findings = evaluate_claims(data.units, data)
    finally:
        data.store.close()
    section = _section(text, "findings")
    rows = re.findall(r"<tr><td>([\w-]+)<span class=ci>.*?</tr>", section, flags=re.S)
    assert rows == [f.claim.id for f in findings]
    for f in findings:
        row = re.search(rf"<tr><td>{f.claim.id}<span.*?</tr>", section, flags=re.S).group(0)
        shown = "not testable" if f.verdict == NOT_TESTED else f.verdict      # the word for it
        assert '<span class="badge' in row and f">{shown}</span>" in row
        if f.cells:
            assert fmt_num(f.effect) in row and f"[{fmt_num(f.low)}, {fmt_num(f.high)}]" in row
            assert f"<td>{fmt_num(f.p_adjusted, 3)}</td>" in row
        else:
            assert f.verdict == NOT_TESTED and "<b>not testable:</b>" in row
        if f.invalid:
            assert f"{len(f.invalid)} cells fail validity" in row
            assert all(why.replace(">", "&gt;") in row for why in f.invalid)
    by = {f.claim.id: f for f in findings}
    # the near-chance model is the smallest: every scale cell fails validity, and the table says why
    assert by["zhu-scale"].verdict == NOT_TESTED and "failed validity" in by["zhu-scale"].reason
    assert by["zhu-sft-hurts"].cells and by["zhu-sft-hurts"].effect > 0


def test_summary_states_the_caveats(rendered: tuple[str, dict]) -> None:
    text, facts = rendered
    section = _section(text, "summary")
    assert len(re.findall(r"<li>", section)) >= 9 + 3       # one sentence per claim, then the caveats
    assert "Simulated models" in section
    assert f"Sample size: {ITEMS} to {ITEMS} items per evaluation" in section
    assert "fail a validity gate" in section and "not testable here" in section


def test_invalid_rows_are_marked_in_the_metric_tables(rendered: tuple[str, dict]) -> None:
    text, _ = rendered
    section = _section(text, "stages")
    noise = re.findall(r"<tr><td>noise</td>.*?</tr>", section, flags=re.S)
    assert noise and all('<span class=warn title="' in r and "not above chance" in r for r in noise)
    big = re.findall(r"<tr><td>big@step256</td>.*?</tr>", section, flags=re.S)
    assert big and all(r.endswith("<td>ok</td></tr>") for r in big)


def test_grids_cover_every_task_and_method(rendered: tuple[str, dict]) -> None:
    from calibench.study.life import life_rows

    text, facts = rendered
    section = _section(text, "reliability")
    rows = [s.row for s in life_rows(facts["units"])]
    assert rows[:6] == ["big@step16", "big@step256", "sft@epoch1", "sft@epoch2", "rl@final", "dpo@final"]
    assert set(rows[6:]) == {"noise", "small"}
    tasks = {u.task: u.methods for u in facts["units"]}
    for task, methods in tasks.items():
        assert (f'alt="Reliability diagrams of task {task}: one row per model revision ({", ".join(rows)}), one '
                f'column per method ({", ".join(methods)})') in section
    assert section.count("<img ") == len(tasks)


def test_every_image_is_150_dpi_with_alt_text(rendered: tuple[str, dict]) -> None:
    text, _ = rendered
    images = _images(text)
    assert len(images) >= 5
    for tag in images:
        alt = re.search(r'alt="([^"]*)"', tag)
        assert alt and len(alt.group(1)) > 10, tag[:80]
        png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', tag).group(1))
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        at = png.index(b"pHYs")
        x_ppm, y_ppm, unit = struct.unpack(">IIB", png[at + 4:at + 13])
        assert unit == 1 and round(x_ppm * 0.0254) >= 150 and round(y_ppm * 0.0254) >= 150


def test_exposure_table_per_bucket_and_pooled(rendered: tuple[str, dict]) -> None:
    from calibench.study.exposure import by_exposure

    text, facts = rendered
    section = _section(text, "exposure")
    unit = next(u for u in facts["units"] if u.name == "sft@epoch2" and u.task == "t-a")
    rec = facts["records"][unit.key]
    direct = by_exposure(rec[rec["method"] == "choice"], ("accuracy", "ece", "sce", "brier"))
    body = section[section.index("<summary>t-a"):]
    block = body[body.index("<tr><td>sft@epoch2</td><td>choice"):]
    rows = re.findall(r"<tr(?: class=pooled)?><td>[^<]*</td><td>[^<]*(?:<span[^>]*>[^<]*</span>)?</td>"
                      r"<td>(\w+)</td><td>(\d+)</td>(.*?)</tr>", block, flags=re.S)[:4]
    assert [r[0] for r in rows] == ["often", "rare", "never", "pooled"]
    for bucket, n, cells in rows[:3]:
        want = direct[direct["bucket"] == bucket].iloc[0]
        assert int(n) == int(want["n"]) == ITEMS // 3
        values = re.findall(r"<td>([^<]*)", cells)
        assert values == [fmt_num(want[m]) for m in ("accuracy", "ece", "sce", "brier")]
        assert cells.count("<span class=ci>[") == 4          # each with its bootstrap CI over the bucket
    m = facts["metrics"]
    pooled_ece = m[(m["key"] == unit.key) & (m["method"] == "choice") & (m["metric"] == "ece")].iloc[0]
    assert int(rows[3][1]) == ITEMS
    assert f"{fmt_num(pooled_ece['estimate'])}<span class=ci>[{fmt_num(pooled_ece['low'])}, " in rows[3][2]


def test_bucket_metrics_leave_undefined_metrics_empty(study_dir: Path) -> None:
    data = load_study_data(study_dir)
    try:
        _bucketed(data)
        u = data.units[0]
        rec = data.records(u.key).copy()
        rec["probs"] = None                       # a method without a probability vector: no SCE, no Brier
        data._records[u.key] = rec
        table = bucket_metrics(data, u, ("accuracy", "ece", "sce"))
        with_ci = bucket_metrics(data, data.units[1], ("accuracy", "ece"), n_resamples=200)
    finally:
        data.store.close()
    assert list(table.columns) == ["method", "bucket", "n", "accuracy", "ece", "sce"]
    assert table["sce"].isna().all() and table["ece"].notna().all()
    assert sorted(set(table["bucket"])) == sorted(BUCKETS)
    assert list(with_ci.columns)[-4:] == ["accuracy_low", "accuracy_high", "ece_low", "ece_high"]
    for metric in ("accuracy", "ece"):      # the interval brackets the bucket's estimate and has width
        assert (with_ci[f"{metric}_low"] <= with_ci[metric]).all() and (with_ci[metric] <= with_ci[f"{metric}_high"]).all()
        assert (with_ci[f"{metric}_high"] - with_ci[f"{metric}_low"] > 0.01).all()


def test_study_strings_are_escaped_in_the_new_sections(study_dir: Path) -> None:
    from calibench.study.report import render

    data = load_study_data(study_dir)
    try:
        _bucketed(data)
        data.name = EVIL
        rename = {u.model: EVIL + u.model for u in data.units}
        data.units = [dataclasses.replace(u, model=rename[u.model], labels={
            **u.labels, "base": rename.get(u.labels.get("base"), u.labels.get("base"))}) for u in data.units]
        data.metrics = data.metrics.assign(unit=[EVIL + x for x in data.metrics["unit"]])
        text = render(data)
    finally:
        data.store.close()
    assert "<script" not in text.lower()
    esc = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for sid in ("lifecycle", "reliability", "exposure", "stages"):
        assert esc in _section(text, sid), sid


def test_a_study_without_a_life_has_no_lifecycle_section(tmp_path: Path) -> None:
    from study_helpers import rendered_synthetic

    text = rendered_synthetic(tmp_path, n_models=2, n_tasks=1, items=40)
    assert '<section id="lifecycle">' not in text and 'href="#lifecycle"' not in text
    assert '<section id="exposure">' not in text            # synthetic item ids carry no bucket
    assert text.index('<section id="findings">') < text.index('<section id="summary">')
    assert all('alt="' in tag for tag in _images(text))


def test_plot_life_draws_the_given_numbers() -> None:
    from calibench.report.life import DODGE, LifeChart, LifePanel, LifeSeries, StageSpan, plot_life
    from calibench.report.lines import Line

    series = [LifeSeries("m1", [Line("m1", [0, 1], [0.1, 0.2], [0.05, 0.15], [0.15, 0.25]),
                                Line("m1", [1, 2], [0.2, 0.4], [0.15, 0.3], [0.25, 0.5])], [(2.0, 0.4)]),
              LifeSeries("m2", [Line("m2", [0, 1], [0.3, 0.3], [0.2, 0.2], [0.4, 0.4])])]
    chart = LifeChart({0.0: "step0", 1.0: "epoch1", 2.0: "RL"},
                      [StageSpan("pretraining", 0, 0), StageSpan("SFT", 1, 1), StageSpan("RL", 2, 2)],
                      [[LifePanel("t: ECE", "ECE", series), None]])
    fig = plot_life(chart)
    ax, blank = fig.axes
    assert not blank.get_visible()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["step0", "epoch1", "RL"]
    spine_m1, branch_m1, spine_m2 = (c.lines[0] for c in ax.containers)
    np.testing.assert_allclose(np.asarray(spine_m1.get_xdata(), dtype=float), [-DODGE / 2, 1 - DODGE / 2])
    np.testing.assert_allclose(np.asarray(branch_m1.get_ydata(), dtype=float), [0.2, 0.4])
    assert branch_m1.get_linestyle() == "--" and spine_m1.get_linestyle() == "-"
    np.testing.assert_allclose(np.asarray(spine_m2.get_xdata(), dtype=float), [DODGE / 2, 1 + DODGE / 2])
    hollow = [ln for ln in ax.lines if ln.get_markerfacecolor() == "white"]
    assert len(hollow) == 1 and list(hollow[0].get_ydata()) == [0.4]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["m1", "m2", "fails a validity gate"]


def test_plot_matrix_places_every_cell() -> None:
    from calibench.report.diagrams import reliability_diagram
    from calibench.report.plots import plot_matrix

    rng = np.random.default_rng(0)
    conf = rng.uniform(0.3, 1.0, 200)
    d = reliability_diagram(conf, rng.random(200) < conf)
    rows, cols = ["r0", "r1", "r2"], ["a", "b"]
    fig = plot_matrix({(r, c): d for r in rows for c in cols if (r, c) != ("r1", "b")}, rows, cols)
    mains = [ax for ax in fig.axes if ax.get_title(loc="left")]
    assert [ax.get_title(loc="left").split("\n")[0] for ax in mains] == [
        "r0 · a", "r0 · b", "r1 · a", "r2 · a", "r2 · b"]
    boxes = [ax.get_position() for ax in fig.axes]
    for i, a in enumerate(boxes):          # no two axes overlap
        for b in boxes[i + 1:]:
            assert a.x1 <= b.x0 + 1e-9 or b.x1 <= a.x0 + 1e-9 or a.y1 <= b.y0 + 1e-9 or b.y1 <= a.y0 + 1e-9
    # a row's diagrams share their height; row r sits above row r + 1
    assert mains[0].get_position().y0 > mains[2].get_position().y1 > mains[3].get_position().y1



@pytest.mark.slow
def test_quick_lifecycle_report(tmp_path: Path) -> None:
    """The real thing: `calibench lifecycle --quick`'s study (tiny lab models, minutes on CPU) reported."""
    from calibench.study.lifecycle import TASKS, write_lifecycle_study
    from calibench.study.report import build_report

    out = tmp_path / "lc"
    study = write_lifecycle_study(out, "quick")
    assert run(study, out, progress=False).failed == []
    text = build_report(out).read_text()
    first = _images(text)[0]
    assert 'alt="Lifecycle figure: ECE, accuracy, SCE' in first and "lab-300k -&gt; sft-full-diverse" in first
    grids = _section(text, "reliability")
    for task in TASKS:
        assert f'one column per method ({", ".join(task["methods"])})' in grids, task["name"]
        assert f'alt="Reliability diagrams of task {task["name"]}: ' in grids
    exposure = _section(text, "exposure")
    assert "<summary>lab-facts" in exposure and "<summary>lab-mc" in exposure and "lab-clm" not in exposure
    assert "<td>often</td>" in exposure and "<td>rare</td>" in exposure and "class=pooled" in exposure
    for tag in _images(text):
        png = base64.b64decode(re.search(r'base64,([^"]+)"', tag).group(1))
        at = png.index(b"pHYs")
        assert round(struct.unpack(">I", png[at + 4:at + 8])[0] * 0.0254) >= 150 and 'alt="' in tag
