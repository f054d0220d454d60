"""Issue 11, item 10: does moving a study change its records, and is batch size in the unit key?

    PYTHONPATH=SRC python bench/study_portability.py WORKDIR

Runs a one-unit study (a tiny local model, ``pretrained: ./tiny``) in WORKDIR/a, moves the whole folder to
WORKDIR/b and runs it again from scratch; prints the records' ``model`` values and whether the two
records files are equal; then plans the study with ``batch_size: 3`` and ``8`` and prints both keys.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

CLI = [sys.executable, "-c", "import sys; from calibench.cli import main; sys.exit(main())"]


def _study(root: Path, batch_size: int = 8) -> Path:
    path = root / f"study-{batch_size}.yaml"
    path.write_text(yaml.safe_dump({"name": "move", "settings": {"limit": 3, "bootstrap": 0, "batch_size": batch_size},
                                    "tasks": [{"name": "world-mc", "methods": ["choice"]}],
                                    "models": [{"name": "tiny", "pretrained": "./tiny"}]}))
    return path


def main() -> int:
    from calibench.models.tiny import build_tiny_model

    work = Path(sys.argv[1])
    shutil.rmtree(work, ignore_errors=True)
    a = work / "a"
    build_tiny_model(a / "tiny", ["The capital of France is Paris. Berlin is in Germany. " * 8] * 4,
                     vocab_size=300, hidden=16, layers=1, heads=2, context=64, seed=0)
    subprocess.run([*CLI, "study", "run", str(_study(a)), "--out", str(a / "out"), "--no-progress"], check=True,
                   capture_output=True)
    b = work / "b"
    shutil.move(a, b)
    shutil.rmtree(b / "out")
    subprocess.run([*CLI, "study", "run", str(b / "study-8.yaml"), "--out", str(b / "out"), "--no-progress"],
                   check=True, capture_output=True)
    ra = pd.read_parquet(next((b / "out" / "records").glob("*.parquet")))
    # and once more at the original place, to compare the two records files
    a.mkdir()
    shutil.copytree(b / "tiny", a / "tiny")
    subprocess.run([*CLI, "study", "run", str(_study(a)), "--out", str(a / "out"), "--no-progress"], check=True,
                   capture_output=True)
    rb = pd.read_parquet(next((a / "out" / "records").glob("*.parquet")))
    print("model in records at a:", sorted(set(rb["model"])))
    print("model in records at b:", sorted(set(ra["model"])))
    print("records equal after moving the study:", ra.equals(rb))
    keys = {}
    for bs in (3, 8):
        out = subprocess.run([*CLI, "study", "plan", str(_study(a, bs))], check=True, capture_output=True, text=True)
        keys[bs] = re.findall(r"\b[0-9a-f]{12}\b", out.stdout)[0]
    print(f"unit key with batch_size 3: {keys[3]}, with 8: {keys[8]}; same key: {keys[3] == keys[8]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
