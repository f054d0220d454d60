"""`calibench metrics` end to end on large records files: wall time and peak RSS, now and before.

    .venv/bin/python bench/bench_cli_scale.py [--sizes 1e6,1e7] [--resamples 1000]
        [--base-src /work/wt/base/src] [--base-size 1e5] [--out bench/results/cli_scale.json]

What a user runs on a token-level or MMLU-sized run: one records file of N records (one task x method,
4-class probabilities, seeded), read, validated and summarised with every metric and
``--resamples``-resample CIs by the real command line, each run in its own process timed from the
outside (``/usr/bin/time``-style: wall clock and the child's peak RSS). Sizes of 1e6 and below are
written as JSONL (the slowest reader path), larger ones as Parquet (what ``calibench eval`` writes).

The baseline is the same command on the code under ``--base-src`` (the previous implementation), run
in the same session at ``--base-size`` records, where it finishes in minutes (at 1e6 it took 28 min):
the ratio is per record and per resample, so it is reported as ``speedup_per_record_resample``.
Targets (reported, not asserted): 1e6 < 30 s with peak RSS < 2 GB, 1e7 < 300 s, on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO_SRC = Path(__file__).resolve().parents[1] / "src"
DEFAULT_BASE_SRC = "/work/wt/base/src"
TARGETS = {"1000000": {"seconds": 30.0, "peak_rss_mb": 2048.0}, "10000000": {"seconds": 300.0}}


def write_records(n: int, path: Path, seed: int = 0) -> Path:
    """N records of a 4-option task (softmax probabilities, label drawn from them), JSONL or Parquet."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 4)) * 1.5
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    labels = (rng.random(n)[:, None] < np.cumsum(p, axis=1)).argmax(axis=1)
    pred = p.argmax(axis=1)
    probs = pa.ListArray.from_arrays(pa.array(np.arange(0, 4 * n + 1, 4, dtype=np.int32)), pa.array(p.ravel()))
    table = pa.table({
        "model": pa.array(["m"] * n), "task": pa.array(["t"] * n), "method": pa.array(["choice"] * n),
        "item_id": pa.array(np.arange(n).astype(str)), "probs": probs, "label": pa.array(labels),
        "pred": pa.array(np.array(list("ABCD"))[pred]), "confidence": pa.array(p.max(axis=1)),
        "correct": pa.array(pred == labels), "extra": pa.array(["{}"] * n),
    })
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        # pyarrow has no JSON writer: pandas writes the lines (full double precision)
        table.to_pandas().to_json(path, orient="records", lines=True, double_precision=15)
    return path


def run_cli(src: Path, path: Path, resamples: int, timeout: float) -> dict[str, Any]:
    """Time ``calibench metrics PATH --bootstrap R`` in a child process under GNU time (its own wall
    clock, CPU time and peak RSS)."""
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "COLUMNS": "120"}
    cmd = ["/usr/bin/time", "-f", "BENCH %e %U %S %M", sys.executable, "-c",
           "from calibench.cli import main; raise SystemExit(main())",
           "metrics", str(path), "--bootstrap", str(resamples)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    stats = [line.split() for line in proc.stderr.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not stats:
        return {"error": (proc.stderr or proc.stdout)[-2000:]}
    wall, user, system, rss_kb = (float(x) for x in stats[-1][1:])
    return {"seconds": wall, "cpu_seconds": round(user + system, 2), "peak_rss_mb": round(rss_kb / 1024, 1),
            "table": {cells[0].strip(): " ".join(c.strip() for c in cells[1:]) for line in proc.stdout.splitlines()
                      if line.startswith("\u2502") and len(cells := line.strip("\u2502 ").split("\u2502")) >= 2}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e6,1e7")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--base-src", default=DEFAULT_BASE_SRC)
    ap.add_argument("--base-size", type=float, default=1e5)
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    result: dict[str, Any] = {"bench": "cli_scale", "resamples": args.resamples, "cpus": os.cpu_count(),
                              "load_average_at_start": os.getloadavg(), "python": platform.python_version(),
                              "runs": {}}
    with tempfile.TemporaryDirectory(prefix="calibench-cli-scale-") as tmp:
        base_src = Path(args.base_src) if args.base_src and Path(args.base_src).is_dir() else None
        if base_src is not None:
            n = int(args.base_size)
            path = write_records(n, Path(tmp) / f"r{n}.jsonl")
            result["runs"][f"base@{n}"] = {"n": n, **run_cli(base_src, path, args.resamples, args.timeout)}
            result["runs"][f"calibench@{n}"] = {"n": n, **run_cli(REPO_SRC, path, args.resamples, args.timeout)}
            b, c = result["runs"][f"base@{n}"], result["runs"][f"calibench@{n}"]
            if "error" not in b and "error" not in c:
                result["speedup_same_size"] = round(b["seconds"] / c["seconds"], 1)
        for n in sizes:
            suffix = ".jsonl" if n <= 1_000_000 else ".parquet"
            path = write_records(n, Path(tmp) / f"r{n}{suffix}")
            run = {"n": n, "format": suffix[1:], **run_cli(REPO_SRC, path, args.resamples, args.timeout)}
            target = TARGETS.get(str(n))
            if target and "error" not in run:
                run["target"] = target
                run["meets_target"] = all(run[k] < v for k, v in target.items())
            result["runs"][f"calibench@{n}"] = run
            path.unlink()
    result["load_average_at_end"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        from calibench.io import write_json

        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
