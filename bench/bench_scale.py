"""Every metric with bootstrap CIs at scale: calibench against its previous code and a bootstrap peer.

    .venv/bin/python bench/bench_scale.py [--sizes 1e5,1e6,1e7] [--resamples 1000] [--cores 2]
        [--base-src /work/wt/base/src] [--base-max 1e6] [--peer-resamples 20] [--peer-max 1e6]
        [--out bench/results/scale.json]

For each size N, one group of N items (4-class probabilities, top-label confidence and correctness;
seeded, the same for every side) is summarised with all twelve metrics and ``--resamples``-resample
percentile CIs, each side in its own subprocess pinned to ``--cores`` cores (BLAS threads too):

- ``calibench``: ``summarize_inputs`` (the group sorted once, resamples as counts, one stream of draws
  for all metrics);
- ``base``: the code under ``--base-src`` (a checkout of the previous implementation), doing what its
  ``summarize`` did per group: ``bootstrap_ci`` of every registered metric on the same arrays. Its
  draws were item indices; ``summarize`` now draws sorted positions (``resample.resample_positions``),
  the same bootstrap with other draws, so the CIs agree to within bootstrap noise
  (``max_abs_diff_vs_base``; equality on the same draws is tested in tests/test_metrics_resample.py);
- ``peer``: a plain bootstrap loop as most projects write it -- ``sklearn.utils.resample`` indices,
  then scikit-learn's ``accuracy_score``, ``brier_score_loss``, ``roc_auc_score``, ``log_loss``, a
  10-bin ECE in numpy and ``relplot.smECE`` per resample (6 of the 12 metrics). It runs
  ``--peer-resamples`` resamples and is extrapolated linearly to ``--resamples`` (marked as such).

The 1-, 5- and 15-minute load averages are recorded at the start, before each size and at the end
(the machine may be shared). Each worker reports the timed wall clock and CPU time (data generation excluded) and its peak RSS (``ru_maxrss``,
which includes the input arrays; ``input_rss_mb`` is the RSS before the timed part). Prints one JSON
document (ratios: base / calibench and peer / calibench, time and RSS) and writes it to ``--out``.
Sides above ``--base-max`` / ``--peer-max`` are skipped (the previous code needs hours at 10^7).
Targets (reported, not asserted): 1M items < 30 s, 10M < 300 s, peak RSS < 2 GB at 1M on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

REPO_SRC = Path(__file__).resolve().parents[1] / "src"
DEFAULT_BASE_SRC = "/work/wt/base/src"
N_CLASSES = 4
TARGETS = {"1000000": {"seconds": 30.0, "peak_rss_mb": 2048.0}, "10000000": {"seconds": 300.0}}


def make_group(n: int, seed: int = 0) -> dict[str, tuple[np.ndarray, ...]]:
    """N items of a 4-option task: softmax probabilities, a label drawn from them, top-label confidence."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, N_CLASSES)) * 1.5
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    labels = (rng.random(n)[:, None] < np.cumsum(p, axis=1)).argmax(axis=1)
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == labels
    return {"correct": (correct,), "top": (conf, correct), "probs": (p, labels)}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------------------ workers


def run_calibench(inputs: dict[str, tuple[np.ndarray, ...]], resamples: int) -> dict[str, Any]:
    from calibench.metrics.summary import summarize_inputs

    # percentile intervals, as the previous code made them, so the two sides' numbers compare exactly
    # (the default BCa adds only its bias correction at these sizes: acceleration is off above 20,000 items)
    rows = summarize_inputs(inputs, n_resamples=resamples, seed=0, ci="percentile")
    return {r["metric"]: [r["estimate"], r["low"], r["high"]] for r in rows}


def run_base(inputs: dict[str, tuple[np.ndarray, ...]], resamples: int) -> dict[str, Any]:
    """What the previous ``summarize`` did for one group, on the same arrays."""
    import inspect

    from calibench.metrics import METRICS, bootstrap_ci, metric_function

    # percentile intervals on both sides (code that predates ``ci=`` made only those)
    options = {"ci": "percentile"} if "ci" in inspect.signature(bootstrap_ci).parameters else {}
    out = {}
    for name, spec in METRICS.items():
        kind = spec.kind if hasattr(spec, "kind") else spec[1]  # old registry: (function, kind)
        ci = bootstrap_ci(metric_function(name), *inputs[kind], n_resamples=resamples, seed=0, **options)
        out[name] = [ci.estimate, ci.low, ci.high]
    return out


def run_peer(inputs: dict[str, tuple[np.ndarray, ...]], resamples: int) -> dict[str, Any]:
    """A plain resample loop with scikit-learn's metrics (and relplot's smooth ECE)."""
    from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score
    from sklearn.utils import resample

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import relplot

    conf, correct = inputs["top"]
    p, labels = inputs["probs"]
    y = correct.astype(np.int64)
    rng = np.random.RandomState(0)
    items = np.arange(conf.shape[0])
    reps: dict[str, list[float]] = {k: [] for k in ("accuracy", "brier_top", "auroc", "nll", "ece", "smooth_ece")}
    edges = np.linspace(0.0, 1.0, 11)
    for _ in range(resamples):
        i = resample(items, random_state=rng)
        c, t = conf[i], y[i]
        reps["accuracy"].append(accuracy_score(t, np.ones_like(t)))
        reps["brier_top"].append(brier_score_loss(t, c))
        reps["auroc"].append(roc_auc_score(t, c))
        reps["nll"].append(log_loss(labels[i], p[i], labels=np.arange(N_CLASSES)))
        b = np.clip(np.searchsorted(edges[1:-1], c, side="left"), 0, 9)
        reps["ece"].append(float(np.abs(np.bincount(b, weights=c - t, minlength=10)).sum() / c.size))
        reps["smooth_ece"].append(float(relplot.smECE(c, t)))
    return {k: [float("nan"), *np.quantile(v, [0.025, 0.975]).tolist()] for k, v in reps.items()}


WORKERS = {"calibench": run_calibench, "base": run_base, "peer": run_peer}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(side: str, n: int, resamples: int) -> dict[str, Any]:
    inputs = make_group(n)
    input_rss = _rss_mb()
    start, cpu = time.perf_counter(), _cpu_seconds()
    values = WORKERS[side](inputs, resamples)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_seconds": round(_cpu_seconds() - cpu, 2), "peak_rss_mb": _rss_mb(),
            "input_rss_mb": input_rss, "resamples": resamples, "values": values}


# ------------------------------------------------------------------------------------------ driver


def _pin(cores: int) -> dict[str, str]:
    env = {k: str(cores) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return env


def spawn(side: str, n: int, resamples: int, *, src: str, cores: int, timeout: float) -> dict[str, Any]:
    """Run one side in a fresh interpreter with ``src`` first on PYTHONPATH, pinned to ``cores`` cores."""
    env = {**os.environ, **_pin(cores), "PYTHONPATH": src}
    cmd = [sys.executable, __file__, "--worker", side, "--n", str(n), "--resamples", str(resamples),
           "--cores", str(cores)]
    with C.TreeMemory() as memory:  # the worker and the chunk processes it forks
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        memory.watch(proc.pid)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (stderr.strip().splitlines() or ["failed"])[-1]}
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_tree_pss_mb": memory.peak_mb}


def _max_abs_diff(a: dict[str, list[float]], b: dict[str, list[float]]) -> float | None:
    diffs = [abs(x - y) for k in a.keys() & b.keys() for x, y in zip(a[k], b[k], strict=True)
             if np.isfinite(x) and np.isfinite(y)]
    return max(diffs) if diffs else None


def _ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    if "error" in a or "error" in b or key not in a or key not in b or not b[key]:
        return None
    return a[key] / b[key]


def bench(sizes: list[int], *, resamples: int, cores: int, base_src: str | None, base_max: int,
          peer_resamples: int, peer_max: int, timeout: float) -> dict[str, Any]:
    results = []
    load_at_start = os.getloadavg()
    for n in sizes:
        entry: dict[str, Any] = {"n": n, "load_average": os.getloadavg()}
        ours = spawn("calibench", n, resamples, src=str(REPO_SRC), cores=cores, timeout=timeout)
        entry["calibench"] = ours
        if base_src and n <= base_max:
            entry["base"] = spawn("base", n, resamples, src=base_src, cores=cores, timeout=timeout)
        if peer_resamples > 0 and n <= peer_max:
            peer = spawn("peer", n, peer_resamples, src=str(REPO_SRC), cores=cores, timeout=timeout)
            if "error" not in peer:
                peer["seconds_extrapolated"] = peer["seconds"] * resamples / peer_resamples
                peer["metrics"] = sorted(peer["values"])
            entry["peer"] = peer
        ratios: dict[str, float | None] = {}
        if "base" in entry:
            ratios["base_over_calibench_seconds"] = _ratio(entry["base"], ours, "seconds")
            ratios["base_over_calibench_peak_rss"] = _ratio(entry["base"], ours, "peak_rss_mb")
            if "error" not in entry["base"] and "error" not in ours:
                entry["max_abs_diff_vs_base"] = _max_abs_diff(ours["values"], entry["base"]["values"])
                entry["max_abs_diff_estimates_vs_base"] = _max_abs_diff(
                    {k: v[:1] for k, v in ours["values"].items()}, {k: v[:1] for k, v in entry["base"]["values"].items()})
        if "peer" in entry and "error" not in entry["peer"] and "error" not in ours:
            ratios["peer_over_calibench_seconds"] = entry["peer"]["seconds_extrapolated"] / ours["seconds"]
        entry["ratios"] = ratios
        target = TARGETS.get(str(n))
        if target and "error" not in ours:
            memory = {**ours, "peak_rss_mb": max(ours["peak_rss_mb"], ours.get("peak_tree_pss_mb", 0.0))}
            entry["meets_target"] = {k: memory[k] < v for k, v in target.items()}
        results.append(entry)
    return {
        "benchmark": "bench_scale: all metrics with bootstrap CIs",
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "cpu": platform.processor(),
                    "cores_used": cores, "cpu_count": os.cpu_count()},
        "options": {"sizes": sizes, "resamples": resamples, "peer_resamples": peer_resamples,
                    "base_src": base_src, "base_max": base_max, "peer_max": peer_max},
        "targets": TARGETS,
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "results": results,
    }


def _sizes(text: str) -> list[int]:
    try:
        return [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--sizes must be numbers like 1e5,1e6, got {text!r}") from exc


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=_sizes, default=_sizes("1e5,1e6,1e7"))
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--base-src", default=DEFAULT_BASE_SRC, help="src folder of the previous code ('' to skip)")
    ap.add_argument("--base-max", type=float, default=1e6, help="largest size the previous code runs at")
    ap.add_argument("--peer-resamples", type=int, default=20, help="peer resamples (0 to skip the peer)")
    ap.add_argument("--peer-max", type=float, default=1e6, help="largest size the peer runs at")
    ap.add_argument("--timeout", type=float, default=4 * 3600.0, help="seconds per subprocess")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        if hasattr(os, "sched_setaffinity"):
            allowed = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, allowed[: max(1, args.cores)])
        print(json.dumps(worker(args.worker, args.n, args.resamples)))
        return None
    base_src = args.base_src if args.base_src and Path(args.base_src).is_dir() else None
    result = bench(args.sizes, resamples=args.resamples, cores=args.cores, base_src=base_src,
                   base_max=int(args.base_max), peer_resamples=args.peer_resamples, peer_max=int(args.peer_max),
                   timeout=args.timeout)
    text = json.dumps(result, indent=2, allow_nan=True)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, args.out)
    return result


if __name__ == "__main__":
    main()
