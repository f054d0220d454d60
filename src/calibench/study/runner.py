"""Run a study: expand it into units, skip finished ones, execute the rest, store each result once.

The driver (this module) owns the store; unit functions (``execute_unit``) are pure: they get a
JSON spec and return a result, so the same function runs in-process (local executor) or as a Ray
task. Each unit kind dispatches to one small adapter, so wiring a new backend is a few lines:

- eval units -> ``eval_adapter`` -> ``calibench.evaluate.run_eval`` into a temp folder, records read back;
- eval units of simulated models -> ``calibench.study.synthetic.synthetic_records`` (tests/demos);
- train units -> ``TRAIN_ADAPTERS[recipe]`` -> the lifecycle lab (``calibench.train``).
"""

from __future__ import annotations

import shutil
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from calibench.errors import CalibenchError
from calibench.io import write_json
from calibench.study.config import Study, load_study
from calibench.study.lab import LAB_ADAPTERS
from calibench.study.store import Store
from calibench.study.synthetic import read_checkpoint, synthetic_records, synthetic_train
from calibench.study.units import Unit, expand, model_args

# -- unit results ---------------------------------------------------------------------------------------


@dataclass
class UnitResult:
    """What a unit function returns to the driver (picklable, so Ray can carry it)."""

    key: str
    ok: bool
    records: pd.DataFrame | None = None
    metrics: Any = None
    staged_dir: str | None = None
    error: str | None = None


@dataclass
class StudyResult:
    """Summary of one ``run``: how many units there are, ran, were already finished or failed."""

    out_dir: Path
    total: int
    ran: int
    skipped: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    recovered: dict[str, int] = field(default_factory=dict)


# -- adapters ---------------------------------------------------------------------------------------------


# One loaded model per process: consecutive units of the same model (one per task) load it once.
_LOADED: dict[str, Any] = {}


def _load_cached(args: str, device: str) -> Any:
    from calibench.models.loading import load_model

    cache_key = f"{args}|{device}"
    if cache_key not in _LOADED:
        _LOADED.clear()  # free the previous model before loading the next
        _LOADED[cache_key] = load_model(args, device=device)
    return _LOADED[cache_key]


def eval_adapter(spec: dict[str, Any], work_dir: Path) -> pd.DataFrame:
    """Score one model revision on one task with calibench.evaluate.run_eval; return its records."""
    from calibench.evaluate import run_eval
    from calibench.records import read_records
    from calibench.threads import torch_threads
    from calibench.train.config import quiet_transformers

    quiet_transformers()  # per-load progress bars would cut through the study's own progress bar

    s = spec["settings"]
    args = model_args(spec, path=spec.get("checkpoint_path"))
    with torch_threads(s.get("threads")):
        run_eval(args, [spec["task"]], list(spec["methods"]), work_dir,
                 batch_size=s["batch_size"], device=s["device"], seed=s["seed"], limit=spec["limit"],
                 num_fewshot=s["num_fewshot"], chat_template=spec["chat_template"], n_bins=s["n_bins"],
                 bootstrap=0, progress=False, figures=False, loaded=_load_cached(args, s["device"]),
                 method_options=s.get("method_options"))
    return read_records(work_dir / "records.parquet")


TRAIN_ADAPTERS: dict[str, Callable[[dict[str, Any], Path], dict[str, Any]]] = {
    "synthetic": synthetic_train, **LAB_ADAPTERS,
}


# Bootstrapping smooth ECE costs ~10x all other metrics together; studies report its estimate only.
NO_BOOTSTRAP: frozenset[str] = frozenset({"smooth_ece"})


def unit_metrics(records: pd.DataFrame, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Every metric per (task, method) with bootstrap CIs (``calibench.metrics.summarize``), stored with
    the unit so reports are instant; metrics in ``NO_BOOTSTRAP`` get their estimate only."""
    from calibench.metrics import summarize

    table = summarize(records, n_bins=settings["n_bins"], n_resamples=settings["bootstrap"],
                      seed=settings["seed"], no_bootstrap=NO_BOOTSTRAP)
    return table.to_dict("records")


def execute_unit(key: str, spec: dict[str, Any], staging: str | None = None) -> UnitResult:
    """Run one unit (in the driver or a Ray worker); never raises, errors come back in the result."""
    try:
        if spec["kind"] == "train":
            if staging is None:
                raise CalibenchError("train units need a staging folder")
            manifest = TRAIN_ADAPTERS[spec["recipe"]](spec, Path(staging))
            return UnitResult(key=key, ok=True, metrics=manifest, staged_dir=staging)
        if spec.get("synthetic_params") is not None:
            records = synthetic_records(spec, spec["synthetic_params"])
        else:
            work = Path(tempfile.mkdtemp(prefix="calibench-unit-"))
            try:
                records = eval_adapter(spec, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return UnitResult(key=key, ok=True, records=records, metrics=unit_metrics(records, spec["settings"]))
    except CalibenchError as exc:
        return UnitResult(key=key, ok=False, error=str(exc))
    except Exception as exc:  # a unit's bug must not kill the other units; keep the traceback
        return UnitResult(key=key, ok=False, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")


# -- the driver -------------------------------------------------------------------------------------------


class Driver:
    """Prepares units for execution and stores their results (the store's single writer)."""

    def __init__(self, store: Store, units: list[Unit]) -> None:
        self.store = store
        self.units = {u.key: u for u in units}
        self.done = store.finished_keys()
        self.failed: list[tuple[str, str]] = []
        self.broken: set[str] = set()

    def ready(self, unit: Unit) -> bool | None:
        """True when every dependency finished; None when one failed (so the unit cannot run)."""
        if any(d in self.broken for d in unit.deps):
            return None
        return all(d in self.done for d in unit.deps)

    def prepare(self, unit: Unit) -> tuple[dict[str, Any], str | None]:
        """Resolve inputs from finished dependencies, mark the unit started; return (spec, staging dir)."""
        spec = dict(unit.spec)
        if unit.kind == "train":
            deps = zip(spec["after"], unit.deps, strict=True)
            spec["inputs"] = {name: str(self.store.model_dir(k)) for name, k in deps}
            staging = str(self.store.staging_dir(unit.key))
        else:
            staging = None
            if spec["source"] == "synthetic":
                spec["synthetic_params"] = spec["synthetic"]
            elif spec["source"] == "train":
                spec["checkpoint_path"] = str(self._checkpoint(unit))
                if spec.get("train_recipe") == "synthetic":
                    spec["synthetic_params"] = read_checkpoint(spec["checkpoint_path"])
            if spec["task"].startswith("lab-") and ":" not in spec["task"] and spec.get("world_key"):
                # lab tasks read their items from the world the model was trained in
                spec["task"] = f"{spec['task']}:{self.store.model_dir(spec['world_key'])}"
        self.store.mark_started(unit.key, unit.kind, unit.spec)
        return spec, staging

    def _checkpoint(self, unit: Unit) -> Path:
        train_key = unit.spec["train_key"]
        stored = self.store.get(train_key)
        checkpoints = (stored.metrics or {}).get("checkpoints", {}) if stored else {}
        rev = unit.spec["revision"]
        if rev not in checkpoints and unit.spec.get("train_recipe") != "synthetic":
            from calibench.study.lab import find_checkpoints

            checkpoints = find_checkpoints(self.store.model_dir(train_key))  # folders on disk are the truth
        if rev not in checkpoints:
            raise CalibenchError(f"{unit.label}: train {unit.spec['train']!r} made no checkpoint {rev!r} "
                                 f"(it made: {', '.join(checkpoints) or 'none'})")
        return self.store.model_dir(train_key) / checkpoints[rev]

    def finish(self, unit: Unit, result: UnitResult) -> None:
        if not result.ok:
            self.fail(unit, result.error or "failed")
            return
        if unit.kind == "train":
            self.store.finish_train(unit.key, unit.spec, Path(result.staged_dir or ""), result.metrics)
        else:
            self.store.finish_eval(unit.key, unit.spec, result.records, result.metrics)
        self.done.add(unit.key)

    def fail(self, unit: Unit, error: str) -> None:
        self.store.mark_failed(unit.key, error)
        self.failed.append((unit.label, error))
        self.broken.add(unit.key)


def plan(study_file: str | Path) -> tuple[Study, list[Unit]]:
    """Validate a study and list its units without running anything (keys '?' where a task is unresolved)."""
    study = load_study(study_file)
    return study, expand(study)


def run(study_file: str | Path, out_dir: str | Path | None = None, *, executor: str = "local",
        address: str | None = None, progress: bool = True) -> StudyResult:
    """Run every unfinished unit of a study into ``out_dir`` (default ``runs/<study name>``)."""
    from calibench.study.executors import get_executor

    study = load_study(study_file)
    units = expand(study, strict=True)
    out = Path(out_dir) if out_dir is not None else Path("runs") / study.name
    runner = get_executor(executor, address=address)
    with Store.open(out) as store:
        recovered = store.recover()
        write_json(out / "study.json", {"name": study.name, "description": study.description,
                                        "metrics": list(study.metrics), "file": str(study.path),
                                        "units": [u.key for u in units]})
        driver = Driver(store, units)
        pending = [u for u in units if u.key not in driver.done]
        for u in units:
            if u.key in driver.done:
                store.update_spec(u.key, u.spec)
        runner.execute(driver, pending, progress=progress)
        result = StudyResult(out_dir=out, total=len(units), ran=len(pending) - len(driver.failed),
                             skipped=len(units) - len(pending), failed=list(driver.failed), recovered=recovered)
    return result
