"""Run a study: expand it into units, skip finished ones, execute the rest, store each result once.

The driver (this module) owns the store; unit functions (``calibench.study.work.execute_unit``) are
pure: they get a JSON spec and return a result, so the same function runs in-process (local
executor) or as a Ray task (``calibench.study.executors``). Imports go one way:
runner -> executors -> work -> (units, lab, synthetic, evaluate).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError
from calibench.io import write_json
from calibench.study.config import Study, load_study
from calibench.study.executors import get_executor
from calibench.study.lab import find_checkpoints
from calibench.study.store import Store
from calibench.study.synthetic import read_checkpoint
from calibench.study.units import Unit, expand
from calibench.study.work import UnitResult

# -- results ---------------------------------------------------------------------------------------------


@dataclass
class StudyResult:
    """Summary of one ``run``: how many units there are, ran, were already finished or failed."""

    out_dir: Path
    total: int
    ran: int
    skipped: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    recovered: dict[str, int] = field(default_factory=dict)


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


def _load(study_file: str | Path, settings: dict[str, Any] | None) -> Study:
    """Load a study; ``settings`` (e.g. ``study run --limit``) override the file's settings."""
    study = load_study(study_file)
    if not settings:
        return study
    limit = settings.get("limit")
    tasks = study.tasks if limit is None else tuple(  # a --limit caps per-task limits too
        dataclasses.replace(t, limit=min(t.limit, limit)) if t.limit else t for t in study.tasks)
    return dataclasses.replace(study, settings={**study.settings, **settings}, tasks=tasks)


def plan(study_file: str | Path, *, settings: dict[str, Any] | None = None) -> tuple[Study, list[Unit]]:
    """Validate a study and list its units without running anything (keys '?' where a task is unresolved)."""
    study = _load(study_file, settings)
    return study, expand(study)


def run(study_file: str | Path, out_dir: str | Path | None = None, *, executor: str = "local",
        address: str | None = None, progress: bool = True, settings: dict[str, Any] | None = None) -> StudyResult:
    """Run every unfinished unit of a study into ``out_dir`` (default ``runs/<study name>``); ``settings``
    override the file's (``limit`` changes unit keys, ``threads`` only speed)."""
    study = _load(study_file, settings)
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
