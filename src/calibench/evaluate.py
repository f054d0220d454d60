"""``run_eval``: one model, several tasks, every requested confidence method, one run folder out.

A run folder holds:

* ``records.parquet``: the contract columns (calibench.records), one row per item x method (per token
  for CLM). Chunks from ``calibench.scoring.score`` are streamed through ``records.RecordWriter``
  into a temporary file that is renamed at the end, so a crash never leaves a half-written table.
  The same chunks are kept in memory for the metrics and diagrams: nothing is read back.
* ``metrics.json``: every metric with a bootstrap CI (BCa by default) per task x method (``summarize``).
* ``reliability_<task>.png``: one grid per task, a reliability diagram per method.
* ``config.json``: what is needed to reproduce the numbers (package versions, model id, revision and
  weights hash, seed, task content hashes, methods, options, the command line).

The same call twice gives identical records: seeds are fixed, tasks are loaded with the seed, the
engine decodes greedily and the methods are pure functions of the engine's numbers.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import random
import re
import shlex
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calibench.errors import CalibenchError
from calibench.io import write_json
from calibench.limits import check_summary_options
from calibench.methods import MethodOptions, parse_methods, resolve_methods
from calibench.records import RECORDS_FILE, RecordWriter
from calibench.runfolder import check_out, staged_folder
from calibench.scoring import RecordChunk, score

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
_PACKAGES = ("calibench", "torch", "transformers", "tokenizers", "numpy", "pandas", "pyarrow")


@dataclass
class RunResult:
    """A finished run: its folder, the records written and the metrics table."""

    out_dir: Path
    records: pd.DataFrame
    metrics: pd.DataFrame
    not_measured: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)  # (task, method) -> why


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (greedy scoring is deterministic anyway; sampling code is not)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    import torch

    torch.manual_seed(seed)


def slug(name: str) -> str:
    """A file-name-safe version of a task name (task names may be paths)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem if "/" in name else name).strip("_") or "task"


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pkg in _PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _jsonable_metrics(metrics: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for rec in metrics.to_dict("records"):
        rows.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()})
    return rows


def _spec_dict(spec: Any) -> Any:
    if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(spec).items()}
    return None if spec is None else str(spec)


def _log(progress: bool, message: str) -> None:
    if progress:
        from rich.console import Console

        Console(stderr=True, highlight=False).print(message)


def load_tasks(names: Sequence[str], *, limit: int | None, seed: int) -> list[Any]:
    """Load each task once; two names resolving to the same task name are an error."""
    from calibench.tasks import load_task

    if not names:
        raise CalibenchError("no tasks given")
    tasks, seen = [], set()
    for name in names:
        task = load_task(name, limit=limit, seed=seed)
        if task.name in seen:
            raise CalibenchError(f"task '{task.name}' is given twice")
        seen.add(task.name)
        if not task.items:
            raise CalibenchError(f"task '{task.name}' has no items")
        tasks.append(task)
    return tasks


def run_eval(
    model_args: str,
    tasks: Sequence[str],
    methods: str | Sequence[str],
    out_dir: str | Path,
    *,
    batch_size: int = 8,
    device: str = "cpu",
    seed: int = 0,
    limit: int | None = None,
    num_fewshot: int = 0,
    chat_template: bool = False,
    n_bins: int = 10,
    bootstrap: int = 1000,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    progress: bool = True,
    loaded: Any = None,
    max_new_tokens: int = 8,
    window: int | None = None,
    stride: int | None = None,
    command: str | None = None,
    figures: bool = True,
    method_options: Mapping[str, Any] | None = None,
) -> RunResult:
    """Evaluate one model on ``tasks`` with ``methods`` (``"all"`` or names) and write ``out_dir``.

    ``loaded`` (a ``LoadedModel``) skips loading, e.g. when a caller scores one model several times;
    ``model_args`` is then only recorded. ``figures=False`` skips the reliability PNGs (they take
    longer than scoring a small task). Study units do not come through here: they share the steps
    below (``load_tasks``, ``score_loaded``, ``seed_everything``) and keep their records in memory. Inputs are validated before the model is loaded, so a typo
    in a method or task name fails in a second, not after minutes of loading.
    """
    started = time.time()
    out = Path(out_dir)
    check_out(out)  # a file, or a folder that is not a run, is refused before anything is loaded
    check_summary_options(n_bins, bootstrap)
    if batch_size < 1:
        raise CalibenchError(f"--batch-size must be >= 1, got {batch_size}")
    opts = make_method_options(num_fewshot=num_fewshot, chat_template=chat_template,
                               max_new_tokens=max_new_tokens, window=window, stride=stride, extra=method_options)
    parse_methods(methods)
    from calibench.models.loading import load_model, parse_model_args

    spec = parse_model_args(model_args) if loaded is None else None
    seed_everything(seed)
    task_objs = load_tasks(tasks, limit=limit, seed=seed)
    units = resolve_methods(methods, task_objs)
    if loaded is None:
        loaded = load_model(spec, device=device, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    model_id, revision = provenance(loaded)

    counts: dict[tuple[str, str], int] = {}
    not_measured: dict[tuple[str, str], str] = {}
    frames: list[pd.DataFrame] = []
    t0 = time.time()
    with staged_folder(out) as stage:  # ``out`` gets the whole run (manifest last) or keeps the old one
        chunks = score_loaded(loaded, units, opts, batch_size=batch_size, device=device, seed=seed, progress=progress)
        with RecordWriter(stage / RECORDS_FILE) as writer, closing(chunks):
            for chunk in chunks:
                key = (chunk.task.name, chunk.method)
                counts[key] = counts.get(key, 0) + len(chunk.frame)
                if chunk.not_measured:
                    not_measured[key] = chunk.not_measured
                elif len(chunk.frame):
                    writer.write(chunk.frame)
                    frames.append(chunk.frame)
                if chunk.last:
                    done = "not measured" if chunk.not_measured else f"{counts[key]} records"
                    _log(progress, f"[{len(counts)}/{len(units)}] {chunk.task.name} · {chunk.method}: "
                                   f"{done} in {time.time() - t0:.1f}s")
                    t0 = time.time()
        if not frames:
            raise CalibenchError("no method measured anything: " + "; ".join(not_measured.values()))
        records = pd.concat(frames, ignore_index=True)
        metrics = _summarize(records, n_bins=n_bins, bootstrap=bootstrap, seed=seed)
        write_json(stage / METRICS_FILE, {"n_bins": n_bins, "binning": "width", "bootstrap": bootstrap, "level": 0.95,
                                        "seed": seed, "metrics": _jsonable_metrics(metrics)})
        pngs = write_reliability_grids(records, stage, n_bins=n_bins) if figures else []
        write_json(stage / CONFIG_FILE, {
            "calibench_run": 1,
            "command": command if command is not None else shlex.join(sys.argv),
            "versions": _versions(),
            "model": {"model_args": model_args, "model_id": model_id, "revision": revision,
                      "weights_hash": getattr(loaded, "weights_hash", None), "spec": _spec_dict(getattr(loaded, "spec", None))},
            "tasks": [{"name": t.name, "kind": t.kind, "n_items": len(t.items), "content_hash": t.content_hash}
                      for t in task_objs],
            "requested": {"tasks": list(tasks), "methods": methods if isinstance(methods, str) else list(methods)},
            "units": [{"task": t.name, "method": m, "n_records": counts[(t.name, m)],
                       **({"not_measured": not_measured[(t.name, m)]} if (t.name, m) in not_measured else {})}
                      for t, m in units],
            "seed": seed,
            "options": {**dataclasses.asdict(opts), "batch_size": batch_size, "device": device, "limit": limit,
                        "n_bins": n_bins, "bootstrap": bootstrap, "trust_remote_code": trust_remote_code,
                        "allow_pickle": allow_pickle},
            "figures": pngs,
            "seconds": round(time.time() - started, 3),
        })
    return RunResult(out, records, metrics, not_measured)


# -- the shared steps (run_eval above, study eval units in calibench.study.work) ---------------------------


def make_method_options(*, num_fewshot: int = 0, chat_template: bool = False, max_new_tokens: int = 8,
                        window: int | None = None, stride: int | None = None,
                        extra: Mapping[str, Any] | None = None) -> MethodOptions:
    """The method options of a run, validated (one place builds them for runs and study units);
    ``extra`` holds the sampling, probe and verbalized options (``--n-samples``, ``method_options:``)."""
    return MethodOptions.from_mapping({"num_fewshot": num_fewshot, "chat_template": chat_template,
                                       "max_new_tokens": max_new_tokens, "window": window, "stride": stride,
                                       **(extra or {})})


def provenance(loaded: Any) -> tuple[str, str]:
    """(model, revision) strings a loaded model's records carry."""
    return str(loaded.model_id), str(getattr(loaded, "revision", None) or "")


def build_engine(loaded: Any, *, batch_size: int, device: str, progress: bool) -> Any:
    """A ScoringEngine over a loaded model (its spec's ``max_length`` caps the context)."""
    from calibench.models.engine import ScoringEngine

    max_length = getattr(getattr(loaded, "spec", None), "max_length", None)
    return ScoringEngine(loaded.model, loaded.tokenizer, batch_size=batch_size, max_length=max_length,
                         device=device, progress=progress)


def score_loaded(loaded: Any, units: Sequence[tuple[Any, str]], options: MethodOptions, *, batch_size: int,
                 device: str, seed: int, progress: bool) -> Iterator[RecordChunk]:
    """Seed, build the engine and yield every unit's record chunks (``calibench.scoring.score``)."""
    seed_everything(seed)
    engine = build_engine(loaded, batch_size=batch_size, device=device, progress=progress)
    model_id, revision = provenance(loaded)
    yield from score(engine, units, tokenizer=loaded.tokenizer, options=options, model_id=model_id,
                     revision=revision)


def _summarize(records: pd.DataFrame, *, n_bins: int, bootstrap: int, seed: int) -> pd.DataFrame:
    from calibench.metrics import summarize

    return summarize(records, n_bins=n_bins, n_resamples=bootstrap, seed=seed)


def write_reliability_grids(records: pd.DataFrame, out: Path, *, n_bins: int) -> list[str]:
    """One PNG per task: a reliability diagram per method, in record order."""
    from calibench.report.diagrams import reliability_diagram
    from calibench.report.plots import plot_reliability_grid

    written = []
    for task, group in records.groupby("task", sort=False):
        diagrams = {
            str(method): reliability_diagram(g["confidence"].to_numpy(float), g["correct"].to_numpy(bool),
                                             n_bins=n_bins)
            for method, g in group.groupby("method", sort=False)
        }
        name = f"reliability_{slug(str(task))}.png"
        fig = plot_reliability_grid(diagrams, out / name, suptitle=str(task))
        _close(fig)
        written.append(name)
    return written


def _close(fig: Any) -> None:
    """Release a matplotlib Figure's memory (pyplot-free figures need no plt.close)."""
    fig.clear()
