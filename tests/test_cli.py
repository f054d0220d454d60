"""The CLI shell: usage mistakes are short messages with exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from calibench import __version__
from calibench.cli import main

CALIBENCH = Path(sys.executable).parent / "calibench"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no-such-command"], "No such command"),
        (["eval", "--tasks", "world-mc"], "Missing"),
        (["eval", "--model-args", "pretrained=x", "--tasks", "t", "--out", "o", "--threads", "0"], "threads"),
        (["metrics"], "Missing"),
        (["study", "run"], "Missing"),
    ],
)
def test_usage_errors_exit_2_without_traceback(argv: list[str], message: str) -> None:
    done = subprocess.run([str(CALIBENCH), *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert message in done.stderr


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"calibench {__version__}"
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("metrics", "eval", "compare", "from-lm-eval", "train", "study", "report", "lifecycle"):
        assert command in out
