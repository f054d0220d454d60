"""The HTML report: self-contained, escaped, claims computed from CIs, and it renders in real Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from calibench.study.findings import (
    AGREE,
    CLAIMS,
    DISAGREE,
    INCONCLUSIVE,
    NOT_TESTED,
    EvalUnit,
    cell_verdict,
    combine,
    evaluate_claims,
)
from calibench.study.report import build_report
from calibench.study.results import load_study_data
from calibench.study.runner import run

EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated study with a designed effect: SFT makes the model overconfident, more so each epoch."""
    root = tmp_path_factory.mktemp("report")
    study = {
        "name": "report-test",
        "description": f"description with {EVIL}",
        "settings": {"seed": 0, "bootstrap": 200},
        "methods": ["choice", "continuation-sum"],
        "tasks": [{"name": EVIL, "items": 500}, {"name": "plain-task", "items": 500}],
        "train": [{"name": "sft", "recipe": "synthetic", "options": {"checkpoints": {
            "epoch1": {"skill": 0.7, "sharpness": 1.5}, "epoch2": {"skill": 0.7, "sharpness": 4.0}}}}],
        "models": [
            {"name": "small", "synthetic": {"skill": 0.5, "sharpness": 2.5}, "params": "10M", "stage": "pretrained"},
            {"name": "large", "synthetic": {"skill": 0.7, "sharpness": 1.0}, "params": "1B", "stage": "pretrained"},
            {"name": "sft", "train": "sft", "revisions": ["epoch1", "epoch2"], "stage": "sft", "tuning": "full",
             "data": "narrow", "base": "large"},
        ],
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    result = run(path, root / "out", progress=False)
    assert result.failed == []
    return root / "out"


@pytest.fixture(scope="module")
def report(study_dir: Path) -> Path:
    return build_report(study_dir)


def test_report_is_self_contained(report: Path) -> None:
    text = report.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert "http://" not in text and "https://" not in text and "url(" not in text and "@import" not in text
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"' >]+)""", text)
    assert refs, "expected embedded images and in-page links"
    assert all(r.startswith(("data:image/png;base64,", "#")) for r in refs), refs
    assert text.count("data:image/png;base64,") >= 5   # reliability grids, scale, alignment


def test_record_text_is_escaped(report: Path) -> None:
    text = report.read_text()
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_findings_follow_the_designed_effects(study_dir: Path) -> None:
    data = load_study_data(study_dir)
    try:
        findings = {f.claim.id: f for f in evaluate_claims(data.units, data.delta)}
    finally:
        data.store.close()
    # sharpness 1.0 -> 1.5 -> 4.0: instruction tuning hurts, more epochs hurt more; the 10M model is worse calibrated
    assert findings["zhu-sft-hurts"].verdict == AGREE
    assert findings["zhu-epochs"].verdict == AGREE
    assert findings["zhu-scale"].verdict == AGREE
    assert findings["oh-sce-choice"].verdict == AGREE
    assert len(findings["zhu-sft-hurts"].cells) == 4          # 1 pair x 2 tasks x 2 methods
    for f in findings["zhu-sft-hurts"].cells:
        assert f.low > 0 and f.delta > 0.05 and f.n == 500
    # the study has no RL, no LoRA, no checkpoints by step: those claims are not tested
    for cid in ("zhu-rlhf", "zhu-lora", "zhu-dynamics", "zhu-narrow-data"):
        assert findings[cid].verdict == NOT_TESTED


def test_verdict_rules() -> None:
    assert cell_verdict(0.01, 0.05, +1) == AGREE
    assert cell_verdict(-0.05, -0.01, +1) == DISAGREE
    assert cell_verdict(-0.01, 0.05, +1) == INCONCLUSIVE
    assert cell_verdict(-0.05, -0.01, -1) == AGREE
    assert cell_verdict(-0.03, 0.01, 0, margin=0.02) == AGREE        # no harm: CI below the margin
    assert cell_verdict(0.001, 0.01, 0, margin=0.02) == DISAGREE     # significant harm, however small
    assert cell_verdict(-0.01, 0.05, 0, margin=0.02) == INCONCLUSIVE
    assert combine([AGREE, INCONCLUSIVE], "consensus") == AGREE
    assert combine([AGREE, DISAGREE], "consensus") == INCONCLUSIVE
    assert combine([AGREE, AGREE, INCONCLUSIVE], "every") == INCONCLUSIVE
    assert combine([AGREE, DISAGREE], "every") == DISAGREE
    assert combine([INCONCLUSIVE, AGREE], "some") == AGREE
    assert combine([], "some") == NOT_TESTED


def test_disagreeing_numbers_give_disagree() -> None:
    """The same claims flip when the numbers flip (a stub delta: aligned models are BETTER calibrated)."""
    lab = {"stage": "pretrained", "params": 1e9, "epoch": 0}
    base = EvalUnit("k0", "base", "", "t", lab, ("choice",))
    sft = EvalUnit("k1", "sft", "epoch1", "t", {"stage": "sft", "base": "base", "epoch": 1}, ("choice",))
    findings = {f.claim.id: f for f in evaluate_claims([base, sft], lambda a, b, m, metric: (-0.05, -0.08, -0.02,
                                                                                                0.001, 100))}
    assert findings["zhu-sft-hurts"].verdict == DISAGREE
    assert findings["oh-sce-choice"].verdict == DISAGREE
    assert findings["oh-ece-harmless"].verdict == AGREE
    assert {c.id for c in CLAIMS} == set(findings)


# -- real browser ------------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _CDP:
    """A minimal Chrome DevTools Protocol client over websocket-client."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > end:
                raise TimeoutError(method)
            self.events.append(json.loads(self.ws.recv()))

    def js(self, expression: str) -> object:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    pytest.importorskip("websocket", reason="websocket-client is not installed")
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1280,2000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        end = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            assert proc.poll() is None, "chromium exited at start"
            assert time.monotonic() < end, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            pages = [t for t in json.load(resp) if t["type"] == "page"]
        cdp = _CDP(pages[0]["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log", "Network"):
            cdp.call(f"{domain}.enable")
        cdp.events.clear()
        cdp.call("Page.navigate", url=report.resolve().as_uri())
        cdp.wait_for("Page.loadEventFired")
        images = cdp.js("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert images and all(c and w > 0 and h > 0 for c, w, h in images), images
        assert cdp.js(f"document.body.innerText.includes({json.dumps(EVIL)})") is True   # shown as text
        assert cdp.js("document.scripts.length") == 0
        assert cdp.js("document.querySelectorAll('table').length") >= 3
        shot = cdp.call("Page.captureScreenshot", format="png")["data"]
        assert len(shot) > 10_000
        errors = [e for e in cdp.events
                  if (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
                  or e.get("method") == "Runtime.exceptionThrown"
                  or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
        assert errors == []
        requests = [e["params"]["request"]["url"] for e in cdp.events if e.get("method") == "Network.requestWillBeSent"]
        assert all(u.startswith(("file:", "data:")) for u in requests), requests
        cdp.ws.close()
    finally:
        proc.kill()
        proc.wait()


# -- the study file's metrics, the template as package data, the drawing seam ----------------------------------


@pytest.fixture(scope="module")
def chosen_metrics_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny study whose file asks for MCE and ECE only (in that order)."""
    root = tmp_path_factory.mktemp("chosen")
    study = {"name": "chosen", "settings": {"seed": 0, "bootstrap": 50}, "methods": ["choice"],
             "metrics": ["mce", "ece"], "tasks": [{"name": "t", "items": 200}],
             "models": [{"name": "base", "synthetic": {"skill": 0.6, "sharpness": 1.0}, "stage": "pretrained"},
                        {"name": "tuned", "synthetic": {"skill": 0.6, "sharpness": 3.0}, "stage": "sft",
                         "base": "base"}]}
    (root / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    assert run(root / "study.yaml", root / "out", progress=False).failed == []
    return root / "out"


def test_study_metrics_choose_the_table_columns(chosen_metrics_dir: Path) -> None:
    from calibench.study.report import delta_rows, stage_tables

    data = load_study_data(chosen_metrics_dir)
    try:
        assert data.shown_metrics == ("mce", "ece")
        tables = stage_tables(data)
        deltas = delta_rows(data)
        stored = data.metrics
    finally:
        data.store.close()
    assert [t["title"] for t in tables] == ["Pretrained", "Instruction tuned (SFT)"]
    row = tables[0]["rows"][0]
    want = stored[(stored["unit"] == "base") & (stored["metric"] == "mce")]["estimate"].iloc[0]
    assert row["cells"][0]["est"] == f"{want:.3f}" and len(row["cells"]) == 2
    assert [d["metric"] for d in deltas] == ["ece"]          # deltas: the shown metrics among DELTA_METRICS
    text = build_report(chosen_metrics_dir).read_text()
    heads = re.findall(r"<table class=\"metrics\"><thead><tr>(.*?)</tr>", text)
    assert heads and all(h == "<th>model</th><th>task</th><th>method</th><th>n</th><th>mce</th><th>ece</th><th>validity</th>"
                         for h in heads)
    assert "<th>auroc</th>" not in text


def test_template_ships_as_package_data() -> None:
    import fnmatch
    from importlib.resources import files

    import tomllib

    from calibench.study.report import TEMPLATE

    template = files("calibench.study") / "templates" / TEMPLATE
    assert template.is_file()
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["calibench"]
    assert any(fnmatch.fnmatch(f"study/templates/{TEMPLATE}", g) for g in globs), globs


def test_template_escapes_every_injected_string(study_dir: Path) -> None:
    from calibench.study.report import render

    data = load_study_data(study_dir)
    try:
        data.name = EVIL
        data.description = '"quoted" & <b>bold</b>'
        text = render(data)
    finally:
        data.store.close()
    assert "<script" not in text.lower() and "<b>bold</b>" not in text
    assert "<title>calibench study &lt;script&gt;" in text and "&#34;quoted&#34; &amp; &lt;b&gt;" in text


def test_metric_lines_draw_the_given_numbers() -> None:
    import numpy as np

    from calibench.report.lines import PALETTE, Line, Panel, plot_metric_lines, png_data_uri

    panels = [Panel("scale: a", [Line("choice", [1e6, 1e9], [0.2, 0.1], [0.15, float("nan")], [0.25, 0.12])],
                    {"base x": 0.3}),
              Panel("scale: b", [Line("m1", [1, 2], [0.5, 0.4], [0.4, 0.3], [0.6, 0.5]),
                                 Line("m2", [1, 2], [0.1, 0.2], [0.0, 0.1], [0.2, 0.3])])]
    fig = plot_metric_lines(panels, xlabel="parameters", ylabel="ECE", logx=True)
    a, b = fig.axes
    assert a.get_title(loc="left") == "scale: a" and a.get_xscale() == "log"
    np.testing.assert_allclose(a.containers[0].lines[0].get_ydata().astype(float), [0.2, 0.1])
    first, second = a.collections[0].get_segments()
    np.testing.assert_allclose(first[:, 1], [0.15, 0.25])       # the CI [low, high] is the error bar
    np.testing.assert_allclose(second[:, 1], [0.1, 0.12])       # a NaN low bound draws no lower bar
    assert sorted(t.get_text() for t in a.get_legend().get_texts()) == ["base x", "choice"]
    assert [c.lines[0].get_color() for c in b.containers] == list(PALETTE[:2])
    assert png_data_uri(fig).startswith("data:image/png;base64,")
