"""The Ray executor: units run as Ray tasks on a local Ray started here; results equal the local executor's."""

from __future__ import annotations

from pathlib import Path

import pytest

from calibench.study.runner import run
from study_helpers import assert_same_results, snapshot, synthetic_study

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'calibench[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (start-up takes seconds)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_results_equal_local(local_ray, tmp_path: Path) -> None:
    study = synthetic_study(tmp_path / "study.yaml", n_models=2, n_tasks=3)
    local = run(study, tmp_path / "local", executor="local", progress=False)
    distributed = run(study, tmp_path / "ray", executor="ray", progress=False)
    assert distributed.failed == [] and distributed.ran == local.ran == local.total
    assert_same_results(snapshot(tmp_path / "ray"), snapshot(tmp_path / "local"))
    # resumable under Ray too: nothing left to run
    again = run(study, tmp_path / "ray", executor="ray", progress=False)
    assert again.ran == 0 and again.skipped == local.total


def test_ray_respects_unit_resources(local_ray, tmp_path: Path) -> None:
    """Per-unit resources from the study reach Ray; a unit asking for both CPUs still runs."""
    from calibench.study.config import load_study
    from calibench.study.executors import _ray_options
    from calibench.study.units import expand

    study = synthetic_study(tmp_path / "study.yaml", n_models=1, n_tasks=1, with_train=False)
    study.write_text(study.read_text() + "resources: {num_cpus: 2}\n")
    unit = expand(load_study(study))[0]
    assert _ray_options(unit.resources) == {"num_cpus": 2.0, "num_gpus": 0.0, "max_retries": 0}
    result = run(study, tmp_path / "out", executor="ray", progress=False)
    assert result.failed == [] and result.ran == 1


def test_bad_address_is_one_clear_error(tmp_path: Path) -> None:
    from calibench.errors import CalibenchError
    from calibench.study.executors import get_executor

    with pytest.raises(CalibenchError, match="--address is only for --executor ray"):
        get_executor("local", address="127.0.0.1:1")
    with pytest.raises(CalibenchError, match="unknown executor"):
        get_executor("dask")


def test_auto_executor_uses_two_workers_only_where_ray_and_two_cores_exist(monkeypatch) -> None:
    import importlib.util

    from calibench.study import executors

    monkeypatch.setattr(executors.os, "cpu_count", lambda: 2)
    assert executors.resolve_executor("auto") == ("ray" if importlib.util.find_spec("ray") else "local")
    assert executors.resolve_executor("local") == "local" and executors.resolve_executor("ray") == "ray"
    monkeypatch.setattr(executors.os, "cpu_count", lambda: 1)
    assert executors.resolve_executor("auto") == "local"
    assert isinstance(executors.get_executor("auto"), executors.LocalExecutor)
    monkeypatch.setattr(executors.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert executors.resolve_executor("auto") == "local"
