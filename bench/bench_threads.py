"""The default thread count of `calibench eval` against every fixed setting, on an idle and a busy CPU.

    .venv/bin/python bench/bench_threads.py [--model smollm2-135m-instruct] [--limit 20]
        [--tasks world-mc,world-facts,world-clm] [--out bench/results/threads.json]

Runs the real command (all methods, no bootstrap, no figures) once per setting -- the default
(``calibench.threads`` chooses), then ``--threads 1 .. os.cpu_count()`` -- first on the machine as it
is, then with one busy-looping process per ``--busy`` core started ``--settle`` seconds before, so
the load average the rule reads has risen. Reports wall times, the best fixed setting, and
``default / best`` per condition (the target: within 1.3x). The records of every setting must be
the same (to 1e-6), which the bench checks too.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_SRC = Path(__file__).resolve().parents[1] / "src"


def _spin() -> None:
    while True:
        pass


def run_eval(model: str, tasks: str, limit: int, threads: int | None, out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO_SRC), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    env.pop("OMP_NUM_THREADS", None)  # the setting under test decides
    cmd = [sys.executable, "-m", "calibench", "eval", "--model-args", f"pretrained={model}", "--tasks", tasks,
           "--methods", "all", "--limit", str(limit), "--bootstrap", "0", "--no-figures", "--quiet",
           "--out", str(out)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return round(time.perf_counter() - t0, 2)


def _max_diff(a: Path, b: Path) -> float:
    import numpy as np
    import pandas as pd

    x, y = pd.read_parquet(a / "records.parquet"), pd.read_parquet(b / "records.parquet")
    return float(np.max(np.abs(x["confidence"].to_numpy() - y["confidence"].to_numpy())))


def condition(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    settings: list[int | None] = [None, *range(1, (os.cpu_count() or 1) + 1)]
    load_before = os.getloadavg()[0]
    times = {}
    for s in settings:
        label = "default" if s is None else f"threads={s}"
        times[label] = run_eval(args.model, args.tasks, args.limit, s, tmp / f"{name}-{label}")
    fixed = {k: v for k, v in times.items() if k != "default"}
    best = min(fixed, key=fixed.get)
    return {"load_average_before": round(load_before, 2), "seconds": times, "best_fixed": best,
            "default_over_best": round(times["default"] / fixed[best], 3),
            "max_confidence_diff_vs_default": max(_max_diff(tmp / f"{name}-default", tmp / f"{name}-{k}")
                                                  for k in fixed)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tasks", default="world-mc,world-facts,world-clm")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--busy", type=int, default=1, help="busy-looping processes in the second condition")
    ap.add_argument("--settle", type=float, default=60.0, help="seconds for the load average to rise")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    result: dict[str, Any] = {"bench": "threads", "model": args.model, "tasks": args.tasks, "limit": args.limit,
                              "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="calibench-threads-") as tmp:
        result["idle"] = condition("idle", args, Path(tmp))
        spinners = [mp.Process(target=_spin, daemon=True) for _ in range(args.busy)]
        for p in spinners:
            p.start()
        try:
            time.sleep(args.settle)
            result[f"busy{args.busy}"] = condition("busy", args, Path(tmp))
        finally:
            for p in spinners:
                p.terminate()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        from calibench.io import write_json

        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
