"""Executors: where unit functions run. The driver always writes the store (one writer).

- ``local``: one unit after another in this process, with a progress bar.
- ``ray``: each unit is a Ray task with its own resources (``num_cpus``/``num_gpus`` from the study);
  units start as soon as their dependencies finish; results come back to the driver, which stores
  them. Ray is optional: it is imported only here, with a clear error when missing. On a multi-node
  cluster, train units write checkpoints under the study folder, so it must be on a shared file
  system; eval units return their records by value and need no shared storage. A Ray task loads
  its model for its unit only (the local executor keeps one loaded model across units).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from calibench.errors import CalibenchError
from calibench.study.work import ModelCache, UnitResult, execute_unit

if TYPE_CHECKING:
    from calibench.study.units import Unit


class Driver(Protocol):
    """What an executor needs from the driver (``calibench.study.runner.Driver``), the store's one writer."""

    def ready(self, unit: Unit) -> bool | None: ...
    def prepare(self, unit: Unit) -> tuple[dict[str, Any], str | None]: ...
    def finish(self, unit: Unit, result: UnitResult) -> None: ...
    def fail(self, unit: Unit, error: str) -> None: ...


class Executor(Protocol):
    def execute(self, driver: Driver, pending: list[Unit], *, progress: bool = True) -> None: ...


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Any]:
    bar = Progress(TextColumn("[bold]study[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.description}"), disable=not enabled, transient=False)
    with bar:
        task = bar.add_task("", total=total)

        class _Handle:
            def describe(self, text: str) -> None:
                bar.update(task, description=text)

            def advance(self) -> None:
                bar.advance(task)

        yield _Handle()


class LocalExecutor:
    """Run units one by one in this process, in dependency order; ``cache`` keeps the loaded model
    between consecutive units of the same model."""

    def __init__(self, cache: ModelCache | None = None) -> None:
        self.cache = cache if cache is not None else ModelCache()

    def execute(self, driver: Driver, pending: list[Unit], *, progress: bool = True) -> None:
        with _progress(len(pending), progress) as bar:
            for unit in pending:
                bar.describe(unit.label)
                state = driver.ready(unit)
                if state is None:
                    driver.fail(unit, "a unit it depends on failed")
                elif not state:
                    driver.fail(unit, "a unit it depends on did not run")
                else:
                    try:
                        spec, staging = driver.prepare(unit)
                    except CalibenchError as exc:
                        driver.fail(unit, str(exc))
                    else:
                        driver.finish(unit, execute_unit(unit.key, spec, staging, self.cache))
                bar.advance()


class RayExecutor:
    """Run units as Ray tasks; connects to ``address`` or starts a local Ray if none is running."""

    def __init__(self, address: str | None = None) -> None:
        # Ray's start-up lines follow the "ray" logger as it was before Ray's import resets it
        # (``--quiet`` sets it to errors only).
        self.log_level = max(logging.getLogger("ray").getEffectiveLevel(), logging.INFO)
        try:
            import ray
        except ImportError as exc:
            raise CalibenchError("--executor ray needs Ray: pip install 'calibench[ray]' (or 'ray>=2.9')") from exc
        self.ray = ray
        self.address = address

    def _init(self) -> None:
        if self.ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False,
                                  "include_dashboard": False, "logging_level": self.log_level}
        if self.address:
            kwargs["address"] = self.address
        try:
            self.ray.init(**kwargs)
        except Exception as exc:  # connection errors have many types across Ray versions
            raise CalibenchError(f"cannot start or reach Ray at {self.address or 'local'}: {exc}") from exc

    def execute(self, driver: Driver, pending: list[Unit], *, progress: bool = True) -> None:
        self._init()
        ray = self.ray
        remote = ray.remote(execute_unit)
        waiting = list(pending)
        running: dict[Any, Unit] = {}
        with _progress(len(pending), progress) as bar:
            while waiting or running:
                still: list[Unit] = []
                for unit in waiting:
                    state = driver.ready(unit)
                    if state is None:
                        driver.fail(unit, "a unit it depends on failed")
                        bar.advance()
                    elif state:
                        try:
                            spec, staging = driver.prepare(unit)
                        except CalibenchError as exc:
                            driver.fail(unit, str(exc))
                            bar.advance()
                            continue
                        opts = _ray_options(unit.resources)
                        running[remote.options(**opts).remote(unit.key, spec, staging)] = unit
                    else:
                        still.append(unit)
                waiting = still
                if not running:
                    for unit in waiting:  # dependencies can never finish
                        driver.fail(unit, "a unit it depends on did not run")
                        bar.advance()
                    break
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    unit = running.pop(ref)
                    bar.describe(unit.label)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # worker died, out of memory, ...
                        driver.fail(unit, f"Ray task failed: {exc}")
                    else:
                        driver.finish(unit, result)
                    bar.advance()


def _ray_options(resources: dict[str, float]) -> dict[str, Any]:
    opts: dict[str, Any] = {"num_cpus": resources.get("num_cpus", 1.0), "num_gpus": resources.get("num_gpus", 0.0),
                            "max_retries": 0}
    if resources.get("memory"):
        opts["memory"] = resources["memory"]
    return opts


def resolve_executor(name: str) -> str:
    """``auto`` is ``ray`` where Ray is installed and the machine has two or more cores (independent
    units then run side by side; the lifecycle study's 15-minute budget assumes two workers), else
    ``local``. Other names pass through. Results do not depend on the choice, except RL weights
    (docs/lifecycle-lab.md, "Measured times")."""
    if name != "auto":
        return name
    import importlib.util

    return "ray" if importlib.util.find_spec("ray") is not None and (os.cpu_count() or 1) >= 2 else "local"


def get_executor(name: str, *, address: str | None = None) -> Executor:
    """``local``, ``ray`` or ``auto`` (``resolve_executor``); ``address`` (Ray only) defaults to
    $RAY_ADDRESS or a fresh local Ray."""
    name = resolve_executor(name)
    if name == "local":
        if address:
            raise CalibenchError("--address is only for --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address or os.environ.get("RAY_ADDRESS"))
    raise CalibenchError(f"unknown executor {name!r} (use local, ray or auto)")
