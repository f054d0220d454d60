"""``compare_runs``: paired differences between two runs on the same items (Oh & Hwang's analysis).

For every (task, method) both runs scored, every metric is computed on both and their difference
``b - a`` gets a paired-bootstrap CI and two-sided p-value (``calibench.metrics.paired_delta``:
each resample draws the same items from both runs, so item difficulty cancels). Runs must hold the
same item ids per shared unit; a mismatch is an error, never a silent intersection.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calibench.errors import CalibenchError
from calibench.io import write_json

COMPARE_COLUMNS = ("task", "method", "metric", "a", "b", "delta", "low", "high", "p_value", "n")
COMPARE_FILE = "compare.json"
GRID_FILE = "reliability_compare.png"


@dataclass
class Comparison:
    """The paired deltas (one row per task x method x metric) and the units only one run has."""

    run_a: str
    run_b: str
    table: pd.DataFrame
    only_a: list[tuple[str, str]]
    only_b: list[tuple[str, str]]
    n_bins: int
    n_resamples: int
    seed: int
    level: float

    def to_dict(self) -> dict[str, Any]:
        rows = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                for r in self.table.to_dict("records")]
        return {"run_a": self.run_a, "run_b": self.run_b, "delta": "b - a", "n_bins": self.n_bins,
                "n_resamples": self.n_resamples, "seed": self.seed, "level": self.level,
                "only_in_a": [list(u) for u in self.only_a], "only_in_b": [list(u) for u in self.only_b],
                "rows": rows}


def _run_n_bins(run: Path) -> int | None:
    path = run / "metrics.json" if run.is_dir() else run.parent / "metrics.json"
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["n_bins"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_items(task: str, method: str, a: pd.DataFrame, b: pd.DataFrame) -> None:
    ids_a, ids_b = set(a["item_id"]), set(b["item_id"])
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        example = (only_a or only_b)[0]
        raise CalibenchError(
            f"{task} · {method}: the runs scored different items ({len(only_a)} only in A, {len(only_b)} only "
            f"in B, e.g. '{example}'); compare needs the same task data (and, for token, the same tokenizer)"
        )


def compare_runs(run_a: str | Path, run_b: str | Path, *, n_resamples: int = 1000, seed: int = 0,
                 level: float = 0.95, n_bins: int | None = None) -> Comparison:
    """Paired deltas (b minus a) of every metric for every task x method the two runs share.

    ``n_bins`` defaults to the bin count run A was summarised with (its metrics.json), else 10.
    """
    from calibench.metrics import METRICS, metric_function, paired_delta
    from calibench.metrics.registry import group_inputs
    from calibench.records import load_run_records, probs_matrix

    pa, pb = Path(run_a), Path(run_b)
    rec_a, rec_b = load_run_records(pa), load_run_records(pb)
    if n_bins is None:
        n_bins = _run_n_bins(pa) or 10
    units_a = list(dict.fromkeys(zip(rec_a["task"], rec_a["method"], strict=True)))
    units_b = set(zip(rec_b["task"], rec_b["method"], strict=True))
    shared = [u for u in units_a if u in units_b]
    if not shared:
        raise CalibenchError(
            f"the runs share no task x method: A has {sorted(units_a)}, B has {sorted(units_b)}"
        )
    groups_a = dict(iter(rec_a.groupby(["task", "method"], sort=False)))
    groups_b = dict(iter(rec_b.groupby(["task", "method"], sort=False)))
    rows = []
    for task, method in shared:
        ga, gb = groups_a[(task, method)], groups_b[(task, method)]
        _check_items(task, method, ga, gb)
        gb = gb.set_index("item_id").loc[ga["item_id"]].reset_index()  # same item order as A
        inputs_a, inputs_b = group_inputs(ga, probs_matrix(ga)), group_inputs(gb, probs_matrix(gb))
        for name, spec in METRICS.items():
            arr_a, arr_b = inputs_a[spec.kind], inputs_b[spec.kind]
            if arr_a is None or arr_b is None or (spec.kind == "probs" and arr_a[0].shape != arr_b[0].shape):
                continue
            fn = metric_function(name, n_bins=n_bins)
            pdl = paired_delta(fn, ga, gb, n_resamples=n_resamples, level=level, seed=seed)
            rows.append({"task": task, "method": method, "metric": name, "a": float(fn(*arr_a)),
                         "b": float(fn(*arr_b)), "delta": pdl.delta, "low": pdl.low, "high": pdl.high,
                         "p_value": pdl.p_value, "n": pdl.n})
    only_a = [u for u in units_a if u not in units_b]
    only_b = sorted(units_b - set(units_a))
    table = pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
    return Comparison(str(run_a), str(run_b), table, only_a, only_b, n_bins, n_resamples, seed, level)


def write_comparison(comparison: Comparison, out_dir: str | Path) -> list[Path]:
    """Write compare.json and the side-by-side reliability grid (A | B per task x method)."""
    from calibench.records import load_run_records
    from calibench.report.diagrams import reliability_diagram
    from calibench.report.plots import plot_reliability_grid

    out = Path(out_dir)
    write_json(out / COMPARE_FILE, comparison.to_dict())
    rec_a, rec_b = load_run_records(comparison.run_a), load_run_records(comparison.run_b)
    name_a, name_b = _label(comparison.run_a), _label(comparison.run_b)
    diagrams = {}
    units = list(dict.fromkeys(zip(comparison.table["task"], comparison.table["method"], strict=True)))
    for task, method in units:
        for tag, name, rec in (("A", name_a, rec_a), ("B", name_b, rec_b)):
            g = rec[(rec["task"] == task) & (rec["method"] == method)]
            diagrams[f"{tag}: {name}\n{task} · {method}"] = reliability_diagram(
                g["confidence"].to_numpy(np.float64), g["correct"].to_numpy(bool), n_bins=comparison.n_bins)
    fig = plot_reliability_grid(diagrams, out / GRID_FILE, ncols=2)
    fig.clear()
    return [out / COMPARE_FILE, out / GRID_FILE]


def _label(run: str) -> str:
    p = Path(run)
    return p.name if p.is_dir() else p.parent.name


def default_out_dir(run_a: str | Path, run_b: str | Path) -> Path:
    """``<parent of B>/compare-<A>-vs-<B>``: beside the runs, never inside one."""
    pb = Path(run_b)
    parent = pb.parent if pb.is_dir() else pb.parent.parent
    return parent / f"compare-{_label(str(run_a))}-vs-{_label(str(run_b))}"

