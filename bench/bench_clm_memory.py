"""Token-level CLM scoring of >= 1M tokens: peak memory must not grow with corpus size.

    .venv/bin/python bench/bench_clm_memory.py [--model tiny10m|smollm2] [--quick] [--threads 1]
        [--sizes 250000,1000000] [--window 256] [--stride 256] [--batch-size 8]
        [--out bench/results/clm_memory_<model>.json]

Each corpus size runs in a fresh subprocess (so ``ru_maxrss`` is that run's own peak) and scores
the corpus with the ``token`` method the way ``calibench eval`` does: ``iter_token_records`` over
``ScoringEngine.score_tokens``, each batch of records streamed into one ``pyarrow.ParquetWriter``.
The corpus is world prose (``world-clm`` paragraphs with their phrasing varied by seed, 20 per
document) produced lazily, so the text itself is never all in memory either. The report gives peak
RSS per size, the growth from the smallest to the largest size, tokens/s, the Parquet size and the
number of rows read back from it.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

PARAGRAPHS_PER_DOC = 20
MAX_GROWTH_MB = 32.0  # "does not grow": allocator noise is tens of MB at most


@functools.lru_cache(maxsize=2)
def _paragraphs(seed: int) -> tuple[str, ...]:
    from calibench.tasks.world import world_clm

    return tuple(d.text for d in world_clm(seed=seed))


class LazyCorpus(Sequence):
    """Documents made on demand (doc i from seed i // docs_per_seed), so memory stays flat."""

    def __init__(self, n_docs: int) -> None:
        self.n_docs = n_docs
        self.per_seed = len(_paragraphs(0)) // PARAGRAPHS_PER_DOC

    def __len__(self) -> int:
        return self.n_docs

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        from calibench.tasks.base import CLMDoc

        if not 0 <= i < self.n_docs:
            raise IndexError(i)
        paras = _paragraphs(i // self.per_seed)
        k = (i % self.per_seed) * PARAGRAPHS_PER_DOC
        return CLMDoc(item_id=f"doc{i}", text="\n\n".join(paras[k : k + PARAGRAPHS_PER_DOC]))


def score_corpus(model: Any, tok: Any, n_tokens: int, out_path: str | Path, *, window: int, stride: int,
                 batch_size: int) -> dict[str, Any]:
    """Stream ``token`` records of at least ``n_tokens`` tokens into ``out_path`` (Parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from calibench.methods import iter_token_records
    from calibench.models.engine import ScoringEngine
    from calibench.records import COLUMNS, arrow_schema
    from calibench.tasks.base import Task

    engine = ScoringEngine(model, tok, batch_size=batch_size, progress=False)
    task = Task(name="bench-clm", kind="clm", items=LazyCorpus(10**7), content_hash="bench")
    schema = arrow_schema()
    n = correct = 0
    conf_sum = 0.0
    start = time.perf_counter()
    writer = pq.ParquetWriter(str(out_path), schema)
    try:
        frames = iter_token_records(engine, task, options={"window": window, "stride": stride})
        for frame in frames:
            frame["model"], frame["revision"] = "bench", ""
            writer.write_table(pa.Table.from_pandas(frame[list(COLUMNS)], schema=schema, preserve_index=False))
            n += len(frame)
            correct += int(frame["correct"].sum())
            conf_sum += float(frame["confidence"].sum())
            if n >= n_tokens:
                break
        frames.close()
    finally:
        writer.close()
    seconds = time.perf_counter() - start
    rows = pq.ParquetFile(str(out_path)).metadata.num_rows
    return {"tokens": n, "seconds": round(seconds, 2), "tok_per_s": round(n / seconds), "rows_in_parquet": rows,
            "parquet_mb": round(Path(out_path).stat().st_size / 2**20, 2), "accuracy": correct / n,
            "mean_confidence": conf_sum / n, "peak_rss_mb": round(C.peak_rss_mb(), 1)}


def worker(a: argparse.Namespace) -> None:
    """One size in this (fresh) process; prints one JSON line."""
    import json

    C.set_threads(a.threads)
    model, tok, _ = C.load_bench_model(a.model)
    rss_loaded = C.peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        res = score_corpus(model, tok, a.worker_tokens, Path(tmp) / "records.parquet", window=a.window,
                           stride=a.stride, batch_size=a.batch_size)
    res["peak_rss_after_load_mb"] = round(rss_loaded, 1)
    print(json.dumps(res))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny10m", choices=["tiny10m", "smollm2"])
    p.add_argument("--quick", action="store_true", help="sizes 5k and 20k tokens")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sizes", help="comma-separated token counts (default 250000,1000000)")
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--stride", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--worker-tokens", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help="JSON path (default bench/results/clm_memory_<model>.json; '' to skip)")
    a = p.parse_args(argv)
    if a.worker_tokens:
        worker(a)
        return {}
    sizes = [int(s) for s in (a.sizes or ("5000,20000" if a.quick else "250000,1000000")).split(",")]
    C.build_tiny10m() if a.model == "tiny10m" else None  # build once, outside the measured processes
    env = C.environment(a.threads)
    script = str(Path(__file__).resolve())
    runs = []
    for size in sizes:
        args = [script, "--model", a.model, "--threads", str(a.threads), "--window", str(a.window),
                "--stride", str(a.stride), "--batch-size", str(a.batch_size), "--worker-tokens", str(size)]
        runs.append({"target_tokens": size, **C.run_json_subprocess(args)})
    growth = runs[-1]["peak_rss_mb"] - runs[0]["peak_rss_mb"]
    result = {"benchmark": "clm_memory", "model": a.model, "environment": env, "window": a.window,
              "stride": a.stride, "batch_size": a.batch_size, "runs": runs,
              "peak_rss_growth_mb": round(growth, 1), "flat_memory": growth < MAX_GROWTH_MB,
              "scoring_growth_mb": [round(r["peak_rss_mb"] - r["peak_rss_after_load_mb"], 1) for r in runs]}
    out = a.out if a.out is not None else str(C.RESULTS_DIR / f"clm_memory_{a.model}.json")
    C.finish(result, out or None)
    return result


if __name__ == "__main__":
    main()
