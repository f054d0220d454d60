"""kill -9 of ``calibench eval --out EXISTING`` at random moments leaves the old run or the new one, never a
mix (issue 11); the loop itself is bench/kill_eval.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.slow
def test_kill_9_at_random_points_leaves_the_old_or_the_new_run(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    script = Path(__file__).parents[1] / "bench" / "kill_eval.py"
    spec = importlib.util.spec_from_file_location("kill_eval", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--kills", "10", "--seed", "1", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mixes: 0" in out
    assert out.count("folder holds the old run") + out.count("folder holds the new run") == 10
