"""`calibench metrics` end to end on large records files: wall time and peak RSS, now and before.

    .venv/bin/python bench/bench_cli_scale.py [--sizes 1e6,1e7] [--resamples 1000]
        [--base-src /work/wt/base/src] [--base-sizes 1e5] [--no-read | --read-only]
        [--out bench/results/cli_scale.json]

What a user runs on a token-level or MMLU-sized run: one records file of N records (one task x method,
4-class probabilities, seeded), read, validated and summarised with every metric and
``--resamples``-resample CIs by the real command line, each run in its own process timed from the
outside (GNU time: wall clock, CPU time and the largest process's peak RSS; ``TreeMemory``: the
peak PSS summed over the command and the chunk workers it forks). Sizes of 1e6 and below are written
as JSONL (the slowest reader path), larger ones as Parquet (what ``calibench eval`` writes). For each
size the read alone (``read_records``, its own process) is timed too, unless ``--no-read``, so the
bootstrap's share is the difference; ``--read-only`` times only the read (at 1e7, the command itself takes
minutes).

The baseline is the same command on the code under ``--base-src`` (the previous implementation, e.g.
``git worktree add /work/wt/base <commit> --detach``), run in the same session at each of
``--base-sizes`` next to this code at the same size (``speedup_same_size``). The environment is the
caller's (no BLAS thread pinning), as a user's would be. The load average at start and end is recorded:
the machine may be shared. Targets (reported, not asserted): 1e6 < 30 s with peak memory (RSS, and the tree's PSS) < 2 GB, 1e7 < 300 s,
on 2 cores.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

REPO_SRC = Path(__file__).resolve().parents[1] / "src"
DEFAULT_BASE_SRC = "/work/wt/base/src"
TARGETS = {"1000000": {"seconds": 30.0, "peak_rss_mb": 2048.0}, "10000000": {"seconds": 300.0}}


def write_records(n: int, path: Path, seed: int = 0, temperature: float = 1.0) -> Path:
    """N records of a 4-option task (softmax probabilities, label drawn from them), JSONL or Parquet.

    ``temperature`` rescales the logits after the labels are drawn: the same items and labels, scored
    by a more (< 1) or less (> 1) confident model, as two runs that ``calibench compare`` pairs."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 4)) * 1.5
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    labels = (rng.random(n)[:, None] < np.cumsum(p, axis=1)).argmax(axis=1)
    if temperature != 1.0:
        p = np.exp(logits / temperature)
        p /= p.sum(axis=1, keepdims=True)
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
    run, stdout = C.time_cli(["metrics", str(path), "--bootstrap", str(resamples)], env, timeout)
    if "error" in run:
        return run
    return {**run, "table": {cells[0].strip(): " ".join(c.strip() for c in cells[1:]) for line in stdout.splitlines()
                             if line.startswith("\u2502") and len(cells := line.strip("\u2502 ").split("\u2502")) >= 2}}


def run_read(src: Path, path: Path, timeout: float) -> dict[str, Any]:
    """Time ``read_records(PATH)`` alone in a child process (wall clock and peak RSS)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = ["/usr/bin/time", "-f", "BENCH %e %U %S %M", sys.executable, "-c",
           "import sys; from calibench.records import read_records; read_records(sys.argv[1])", str(path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    stats = [line.split() for line in proc.stderr.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not stats:
        return {"error": proc.stderr[-2000:]}
    wall, user, system, rss_kb = (float(x) for x in stats[-1][1:])
    return {"seconds": wall, "cpu_seconds": round(user + system, 2), "peak_rss_mb": round(rss_kb / 1024, 1)}


def _sizes(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s.strip()]


def _path(tmp: str, n: int) -> Path:
    return Path(tmp) / f"r{n}{'.jsonl' if n <= 1_000_000 else '.parquet'}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e6,1e7", help="record counts of this code's runs (comma-separated)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--base-src", default=DEFAULT_BASE_SRC, help="src folder of the previous code ('' to skip)")
    ap.add_argument("--base-sizes", default="1e5", help="sizes at which both the previous code and this one run")
    ap.add_argument("--no-read", action="store_true", help="do not time the read on its own")
    ap.add_argument("--read-only", action="store_true", help="time only the read (no command, no baseline)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per child process")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    sizes, base_sizes = _sizes(args.sizes), _sizes(args.base_sizes)
    result: dict[str, Any] = {"bench": "cli_scale", "resamples": args.resamples, "cpus": os.cpu_count(),
                              "load_average_at_start": os.getloadavg(), "python": platform.python_version(),
                              "argv": sys.argv[1:] if argv is None else argv, "runs": {}, "speedup_same_size": {}}
    base_src = Path(args.base_src) if args.base_src and Path(args.base_src).is_dir() else None
    with tempfile.TemporaryDirectory(prefix="calibench-cli-scale-") as tmp:
        for n in sorted(set(sizes) | (set(base_sizes) if base_src is not None else set())):
            path = write_records(n, _path(tmp, n))
            fmt = path.suffix[1:]
            if args.read_only:
                result["runs"][f"read@{n}"] = {"n": n, "format": fmt, "load_average": os.getloadavg(),
                                               **run_read(REPO_SRC, path, args.timeout)}
                path.unlink()
                continue
            if base_src is not None and n in base_sizes:
                base = {"n": n, "format": fmt, "load_average": os.getloadavg(),
                        **run_cli(base_src, path, args.resamples, args.timeout)}
                result["runs"][f"base@{n}"] = base
            run = {"n": n, "format": fmt, "load_average": os.getloadavg(),
                   **run_cli(REPO_SRC, path, args.resamples, args.timeout)}
            if not args.no_read:
                run["read_only"] = run_read(REPO_SRC, path, args.timeout)
            target = TARGETS.get(str(n))
            if target and "error" not in run:
                run["target"] = target
                # memory: the larger of the biggest process's RSS and the whole tree's PSS (forked workers)
                memory = {**run, "peak_rss_mb": max(run["peak_rss_mb"], run.get("peak_tree_pss_mb", 0.0))}
                run["meets_target"] = all(memory[k] < v for k, v in target.items())
            result["runs"][f"calibench@{n}"] = run
            b = result["runs"].get(f"base@{n}")
            if b is not None and "error" not in b and "error" not in run:
                result["speedup_same_size"][str(n)] = round(b["seconds"] / run["seconds"], 1)
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
