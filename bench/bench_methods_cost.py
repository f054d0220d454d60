"""Per-item cost of every confidence method, each run alone (its own session: nothing shared).

    .venv/bin/python bench/bench_methods_cost.py [--model tiny10m|smollm2] [--limit 24] [--n-samples 10]
        [--threads 2] [--batch-size 8] [--methods all-of-them] [--out bench/results/methods_cost_<model>.json]

For each (task, method) on world-facts and world-mc: wall seconds per item and model tokens per item
(``ScoringEngine.forward_tokens``: real, unpadded tokens through the model, the machine-independent
part), with the record count (verbalized methods leave unparsed items out). The sampling methods cost
about ``n_samples`` greedy generations each, plus the greedy answer; the probe one forward per item plus
the fit. A method that cannot run on the model (verbalized with no parseable answer) is reported with
its error instead of numbers. Run on a quiet machine; timings under load mean nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

METHODS = ("choice", "continuation-sum", "first-token", "sequence", "p-true", "verbalized", "verbalized-2s",
           "consistency", "semantic", "p-true-fewshot", "probe")


def measure(model: Any, tok: Any, *, limit: int, n_samples: int, batch_size: int,
            methods: tuple[str, ...] = METHODS) -> list[dict[str, Any]]:
    """One row per applicable (task, method): seconds and model tokens per item."""
    from calibench.errors import CalibenchError
    from calibench.methods import APPLIES_TO, ScoringSession
    from calibench.methods import METHODS as REGISTRY
    from calibench.models.engine import ScoringEngine
    from calibench.tasks import load_task

    rows = []
    for name in ("world-facts", "world-mc"):
        task = load_task(name, limit=limit)
        for method in methods:
            if task.kind not in APPLIES_TO[method]:
                continue
            engine = ScoringEngine(model, tok, batch_size=batch_size, progress=False)
            session = ScoringSession(engine, tok, {"n_samples": n_samples})
            t0, row = time.perf_counter(), {"task": name, "method": method, "items": len(task.items)}
            try:
                recs = REGISTRY[method](engine, task, session=session)
            except CalibenchError as err:
                rows.append({**row, "error": str(err)})
                continue
            sec = time.perf_counter() - t0
            rows.append({**row, "records": len(recs), "seconds_per_item": sec / len(task.items),
                         "tokens_per_item": engine.forward_tokens / len(task.items)})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny10m", choices=("tiny10m", "smollm2"))
    ap.add_argument("--limit", type=int, default=24, help="items per task")
    ap.add_argument("--n-samples", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--model-dir", default=None, help="tiny10m: reuse this folder")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    threads = C.set_threads(args.threads)
    model, tok, desc = C.load_bench_model(args.model, model_dir=args.model_dir)
    rows = measure(model, tok, limit=args.limit, n_samples=args.n_samples, batch_size=args.batch_size,
                   methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()))
    C.finish({"benchmark": "methods_cost", "model": args.model, "model_description": desc,
              "model_info": C.model_info(model), "limit": args.limit, "n_samples": args.n_samples,
              "batch_size": args.batch_size, "environment": C.environment(threads), "rows": rows},
             args.out if args.out else Path(__file__).parent / "results" / f"methods_cost_{args.model}.json")


if __name__ == "__main__":
    main()
