"""`calibench compare` end to end on two large runs: wall time, CPU and peak memory, now and before.

    .venv/bin/python bench/bench_compare_scale.py [--sizes 1e5,1e6] [--resamples 1000]
        [--base-src /work/wt/landed/src] [--base-sizes 1e5] [--out bench/results/compare_scale.json]

Two records files of N records each score the same items (one task x method, 4-class probabilities,
the same labels; run B's logits are run A's at temperature 1.5, a less confident model), written as
JSONL up to 1e6 records and as Parquet above. ``calibench compare A B --bootstrap R --json`` is timed
in its own process (GNU time: wall, CPU, the largest process's peak RSS; ``TreeMemory``: the peak PSS
of the command and the chunk workers it forks). It computes every metric of both runs with paired
CIs and p-values, and draws the reliability diagrams.

The baseline is the same command on the code under ``--base-src`` (the code before compare shared
one stream of draws between its metrics and runs: each metric's paired delta was two bootstraps of
its own), run in the same session at each of ``--base-sizes``. The load average is recorded at start
and end (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from bench_cli_scale import write_records  # noqa: E402

REPO_SRC = Path(__file__).resolve().parents[1] / "src"
DEFAULT_BASE_SRC = "/work/wt/landed/src"
TEMPERATURE_B = 1.5


def run_compare(src: Path, a: Path, b: Path, out: Path, resamples: int, timeout: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    run, stdout = C.time_cli(["compare", str(a), str(b), "--bootstrap", str(resamples), "--out", str(out), "--json"],
                             env, timeout)
    if "error" in run:
        return run
    rows = json.loads(stdout)["rows"]
    return {**run, "deltas": {r["metric"]: [r["delta"], r["low"], r["high"], r["p_value"]] for r in rows}}


def _sizes(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e5,1e6", help="record counts per run (comma-separated)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--base-src", default=DEFAULT_BASE_SRC, help="src folder of the previous code ('' to skip)")
    ap.add_argument("--base-sizes", default="1e5", help="sizes at which the previous code runs too")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per command")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    base_sizes = set(_sizes(args.base_sizes)) if args.base_src else set()
    result: dict[str, Any] = {
        "benchmark": "bench_compare_scale: calibench compare on two runs of N records",
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()},
        "options": {"sizes": args.sizes, "resamples": args.resamples, "base_src": args.base_src,
                    "base_sizes": sorted(base_sizes), "temperature_b": TEMPERATURE_B},
        "load_average_at_start": os.getloadavg(), "runs": {}, "speedup_same_size": {},
    }
    with tempfile.TemporaryDirectory(prefix="calibench-compare-scale-") as tmp:
        for n in _sizes(args.sizes):
            suffix = ".jsonl" if n <= 1_000_000 else ".parquet"
            a = write_records(n, Path(tmp) / f"a{n}{suffix}")
            b = write_records(n, Path(tmp) / f"b{n}{suffix}", temperature=TEMPERATURE_B)
            sides = [("calibench", REPO_SRC)] + ([("base", Path(args.base_src))] if n in base_sizes else [])
            for side, src in sides:
                run = run_compare(src, a, b, Path(tmp) / f"cmp-{side}-{n}", args.resamples, args.timeout)
                result["runs"][f"{side}@{n}"] = {"n": n, "load_average": os.getloadavg(), **run}
            ours, base = result["runs"][f"calibench@{n}"], result["runs"].get(f"base@{n}")
            if base is not None and "error" not in base and "error" not in ours:
                result["speedup_same_size"][str(n)] = round(base["seconds"] / ours["seconds"], 1)
                result["max_abs_diff_vs_base"] = max(
                    abs(x - y) for k in ours["deltas"] for x, y in zip(ours["deltas"][k], base["deltas"][k], strict=True)
                    if x == x and y == y)  # NaN-free pairs
            a.unlink()
            b.unlink()
    result["load_average_at_end"] = os.getloadavg()
    C.finish(result, args.out)
    return result


if __name__ == "__main__":
    main()
