"""Speed of calibench's metrics against netcal, torchmetrics and relplot on the same inputs.

    .venv/bin/python bench/bench_metrics.py [--out bench/results/metrics.json]

Three measurements, each the best of 3 runs (wall clock, ``time.perf_counter``):

1. ECE (10 equal-width bins) on 10 million items: calibench ``ece`` vs ``netcal.metrics.ECE``,
   ``torchmetrics.functional.classification.binary_calibration_error`` and ``relplot.metrics.binnedECE``.
   Confidences are drawn from U(0.5, 1) so that every library reads them as top-label confidences
   (netcal folds binary confidences below 0.5 over to 1 - c); the values must agree to 1e-6.
2. Bootstrap CI of ECE, 1000 resamples, 100,000 items (target < 5 s); and, for information, of smooth
   ECE on 10,000 items.
3. Smooth ECE on 1 million items: calibench ``smooth_ece`` vs ``relplot.smECE`` (values agree to 1e-6).

Prints the JSON and writes it atomically to ``--out``. Targets are reported, not asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from calibench.io import write_json
from calibench.metrics import bootstrap_ci, ece, smooth_ece

REPEATS = 3


def best_of(fn: Callable[[], Any], repeats: int = REPEATS) -> tuple[float, Any]:
    """(fastest wall time in seconds, value of the last call)."""
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def bench_ece(n: int, rng: np.random.Generator) -> dict[str, Any]:
    import torch
    from netcal.metrics import ECE as NetcalECE
    from torchmetrics.functional.classification import binary_calibration_error

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from relplot.metrics import binnedECE

    conf = rng.uniform(0.5, 1.0, n)
    correct = rng.random(n) < conf**1.5
    # each library gets its preferred input types, converted outside the timed region
    correct_int, correct_float = correct.astype(np.int64), correct.astype(np.float64)
    conf_t, correct_t = torch.from_numpy(conf), torch.from_numpy(correct_int)
    runs: dict[str, Callable[[], float]] = {
        "calibench": lambda: ece(conf, correct, n_bins=10),
        "netcal": lambda: float(NetcalECE(bins=10).measure(conf, correct_int)),
        "torchmetrics": lambda: float(binary_calibration_error(conf_t, correct_t, n_bins=10, norm="l1")),
        "relplot": lambda: float(binnedECE(conf, correct_float, nbins=10)),
    }
    out: dict[str, Any] = {"items": n, "n_bins": 10}
    for name, fn in runs.items():
        seconds, value = best_of(fn)
        out[name] = {"seconds": round(seconds, 4), "ece": value}
    ours = out["calibench"]
    for name in ("netcal", "torchmetrics", "relplot"):
        out[name]["calibench_speedup"] = round(out[name]["seconds"] / ours["seconds"], 1)
        out[name]["abs_diff"] = abs(out[name]["ece"] - ours["ece"])
    out["values_agree_1e-6"] = all(out[k]["abs_diff"] < 1e-6 for k in ("netcal", "torchmetrics", "relplot"))
    out["target_under_0.5s"] = ours["seconds"] < 0.5
    out["faster_than_all"] = all(
        out[k]["calibench_speedup"] > 1 for k in ("netcal", "torchmetrics", "relplot")
    )
    return out


def bench_bootstrap(
    metric: Callable[..., float], n: int, resamples: int, rng: np.random.Generator, target: float | None
) -> dict[str, Any]:
    conf = rng.random(n)
    correct = rng.random(n) < conf**2
    seconds, ci = best_of(lambda: bootstrap_ci(metric, conf, correct, n_resamples=resamples, seed=0))
    out = {
        "metric": metric.__name__,
        "items": n,
        "n_resamples": resamples,
        "seconds": round(seconds, 4),
        "estimate": ci.estimate,
        "low": ci.low,
        "high": ci.high,
    }
    if target is not None:
        out[f"target_under_{target:g}s"] = seconds < target
    return out


def bench_smooth(n: int, rng: np.random.Generator) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import relplot

    conf = rng.random(n)
    correct = rng.random(n) < conf**1.5
    correct_float = correct.astype(np.float64)
    ours_s, ours = best_of(lambda: smooth_ece(conf, correct, return_bandwidth=True))
    ref_s, ref = best_of(lambda: relplot.smECE(conf, correct_float, return_width=True))
    return {
        "items": n,
        "calibench": {"seconds": round(ours_s, 4), "smooth_ece": ours[0], "bandwidth": ours[1]},
        "relplot": {"seconds": round(ref_s, 4), "smooth_ece": float(ref[0]), "bandwidth": float(ref[1])},
        "calibench_speedup": round(ref_s / ours_s, 1),
        "abs_diff": abs(ours[0] - float(ref[0])),
        "values_agree_1e-6": abs(ours[0] - float(ref[0])) < 1e-6 and ours[1] == ref[1],
    }


def markdown_table(result: dict[str, Any]) -> str:
    """The measured numbers as the Markdown table used in docs/uncertainty.md."""
    e, b, sb, sm = (
        result["ece"],
        result["bootstrap_ci_ece"],
        result["bootstrap_ci_smooth_ece"],
        result["smooth_ece"],
    )
    rows = ["| task | calibench | other | speedup | values agree |", "| --- | ---: | ---: | ---: | --- |"]
    for lib in ("netcal", "torchmetrics", "relplot"):
        rows.append(
            f"| ECE, {e['items']:,} items | {e['calibench']['seconds']:.3f} s | {lib} {e[lib]['seconds']:.3f} s "
            f"| {e[lib]['calibench_speedup']}x | diff {e[lib]['abs_diff']:.1e} |"
        )
    rows.append(
        f"| smooth ECE, {sm['items']:,} items | {sm['calibench']['seconds']:.3f} s | relplot.smECE "
        f"{sm['relplot']['seconds']:.3f} s | {sm['calibench_speedup']}x | diff {sm['abs_diff']:.1e}, same bandwidth |"
    )
    for boot in (b, sb):
        rows.append(
            f"| bootstrap CI of {boot['metric']}, {boot['n_resamples']} resamples, {boot['items']:,} items "
            f"| {boot['seconds']:.3f} s | | | |"
        )
    m = result["machine"]
    rows.append("")
    rows.append(
        f"{result['timing']}; {m['cpu_count']} CPU cores shared with other jobs (1-minute load average "
        f"{m['load_average_1m_at_start']} at start, {m['load_average_1m_at_end']} at end); numpy {m['numpy']}, "
        f"torch {m['torch']}, netcal {m['netcal']}, torchmetrics {m['torchmetrics']}."
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/metrics.json")
    parser.add_argument("--ece-items", type=int, default=10_000_000)
    parser.add_argument("--bootstrap-items", type=int, default=100_000)
    parser.add_argument("--bootstrap-resamples", type=int, default=1000)
    parser.add_argument("--smooth-items", type=int, default=1_000_000)
    parser.add_argument("--markdown", action="store_true", help="also print the Markdown table")
    args = parser.parse_args(argv)

    import netcal
    import torch
    import torchmetrics

    rng = np.random.default_rng(0)
    result = {
        "command": "python bench/bench_metrics.py",
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "netcal": netcal.__version__,
            "torchmetrics": torchmetrics.__version__,
            "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        },
        "timing": f"best of {REPEATS} wall-clock runs",
        "ece": bench_ece(args.ece_items, rng),
        "bootstrap_ci_ece": bench_bootstrap(ece, args.bootstrap_items, args.bootstrap_resamples, rng, 5.0),
        "bootstrap_ci_smooth_ece": bench_bootstrap(smooth_ece, 10_000, args.bootstrap_resamples, rng, None),
        "smooth_ece": bench_smooth(args.smooth_items, rng),
    }
    result["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    write_json(args.out, result)
    import json

    json.dump(result, sys.stdout, indent=2, default=float)
    print()
    if args.markdown:
        print(markdown_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
