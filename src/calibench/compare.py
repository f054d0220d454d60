"""``compare_runs``: paired differences between two runs on the same items (Oh & Hwang's analysis).

For every (task, method) both runs scored, every metric is computed on both and their difference
``b - a`` gets a paired-bootstrap CI and two-sided p-value (the numbers of
``calibench.metrics.paired_delta``: each resample draws the same items from both runs, so item
difficulty cancels). All metrics of both runs of a unit come from one stream of draws
(``resample.replicate_layouts``, each run sorted once), so a CLM-sized unit costs a few passes over
its items per resample, not two bootstraps per metric. Runs must hold the
same item ids per shared unit; a mismatch is an error, never a silent intersection.

``ci`` chooses the interval (``calibench.metrics.intervals``: BCa by default, or percentile); the
p-value always comes from the same resamples (ties at 0 counted half). ``tasks``/``methods`` restrict
the comparison. Items with fewer options than others are zero-padded (``registry.padded_probs``) so
class-wise metrics are compared on mixed option counts too. ``notes`` say, per unit, which metrics
were left out and why, which intervals were widened, and when n is small for binned errors.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
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
    ci: str = "bca"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        rows = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                for r in self.table.to_dict("records")]
        return {"run_a": self.run_a, "run_b": self.run_b, "delta": "b - a", "n_bins": self.n_bins,
                "n_resamples": self.n_resamples, "seed": self.seed, "level": self.level,
                "only_in_a": [list(u) for u in self.only_a], "only_in_b": [list(u) for u in self.only_b],
                "ci": self.ci, "notes": list(self.notes), "rows": rows}


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


def _arrays(g: pd.DataFrame, probs: tuple[np.ndarray, np.ndarray] | None, k: int) -> dict[str, Any]:
    """One unit of a run as arrays for ``paired_delta`` (class probabilities zero-padded to k columns)."""
    out: dict[str, Any] = {"item_id": g["item_id"].to_numpy(), "confidence": g["confidence"].to_numpy(np.float64),
                           "correct": g["correct"].to_numpy(bool)}
    if probs is not None:
        p = probs[0] if probs[0].shape[1] == k else np.pad(probs[0], ((0, 0), (0, k - probs[0].shape[1])))
        out["probs"], out["label"] = p, probs[1]
    return out


def _select(units: list[tuple[str, str]], tasks: list[str] | None, methods: list[str] | None) -> list[tuple[str, str]]:
    for pos, chosen, option in ((0, tasks, "--task"), (1, methods, "--method")):
        if chosen:
            present = list(dict.fromkeys(u[pos] for u in units))
            unknown = [c for c in chosen if c not in present]
            if unknown:
                raise CalibenchError(f"{option} {unknown[0]!r} is in no unit both runs share; "
                                     f"{'tasks' if pos == 0 else 'methods'}: {', '.join(present)}")
            units = [u for u in units if u[pos] in chosen]
    return units


def compare_runs(run_a: str | Path, run_b: str | Path, *, n_resamples: int = 1000, seed: int = 0,
                 level: float = 0.95, n_bins: int | None = None, ci: str = "bca",
                 tasks: list[str] | None = None, methods: list[str] | None = None) -> Comparison:
    """Paired deltas (b minus a) of every metric for every task x method the two runs share.

    ``n_bins`` defaults to the bin count run A was summarised with (its metrics.json), else 10.
    """
    from calibench.metrics import METRICS, metric_function
    from calibench.metrics.bootstrap import delta_from_replicates
    from calibench.metrics.intervals import check_ci
    from calibench.metrics.notes import metric_notes
    from calibench.metrics.registry import group_inputs, padded_probs
    from calibench.metrics.resample import replicate_layouts
    from calibench.metrics.summary import ResamplingPlan
    from calibench.records import load_run_records

    ci = check_ci(ci)
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
    shared = _select(shared, tasks, methods)
    groups_a = dict(iter(rec_a.groupby(["task", "method"], sort=False)))
    groups_b = dict(iter(rec_b.groupby(["task", "method"], sort=False)))
    rows, notes = [], []
    for task, method in shared:
        ga, gb = groups_a[(task, method)], groups_b[(task, method)]
        _check_items(task, method, ga, gb)
        gb = gb.set_index("item_id").loc[ga["item_id"]].reset_index()  # same item order as A
        probs_a, probs_b = padded_probs(ga), padded_probs(gb)
        k = max(p[0].shape[1] for p in (probs_a, probs_b) if p is not None) if probs_a or probs_b else 0
        run_a_arrays, run_b_arrays = _arrays(ga, probs_a, k), _arrays(gb, probs_b, k)
        inputs_a = group_inputs(ga, None if probs_a is None else (run_a_arrays["probs"], probs_a[1]))
        inputs_b = group_inputs(gb, None if probs_b is None else (run_b_arrays["probs"], probs_b[1]))
        shown: dict[str, dict[str, Any]] = {}
        chosen = [(name, spec, metric_function(name, n_bins=n_bins)) for name, spec in METRICS.items()
                  if inputs_a[spec.kind] is not None and inputs_b[spec.kind] is not None]
        # both runs' metrics from one stream of item draws: resample r takes the same items from each
        plans = [ResamplingPlan(inputs, [(spec, fn) for _, spec, fn in chosen]) for inputs in (inputs_a, inputs_b)]
        reps_a, reps_b = replicate_layouts([(p.layout, p.kernels) for p in plans], n_resamples, seed)
        for i, (name, _, fn) in enumerate(chosen):
            arr_a, arr_b = plans[0].arrays[i], plans[1].arrays[i]
            est_a, est_b = float(fn(*arr_a)), float(fn(*arr_b))
            pdl = delta_from_replicates(fn, arr_a, arr_b, reps_a[i], reps_b[i], level=level, ci=ci,
                                        estimates=(est_a, est_b))
            rows.append({"task": task, "method": method, "metric": name, "a": est_a,
                         "b": est_b, "delta": pdl.delta, "low": pdl.low, "high": pdl.high,
                         "p_value": pdl.p_value, "n": pdl.n})
            shown[name] = {"estimate": pdl.delta, "low": pdl.low, "high": pdl.high, "widened": pdl.widened}
        missing_in = ga if probs_a is None else gb
        notes += [f"{task} · {method}: {n}" for n in metric_notes(missing_in, shown, n_bins=n_bins, ci=ci)
                  if "undefined" not in n]
        for r in rows:
            if (r["task"], r["method"]) == (task, method) and not math.isfinite(r["delta"]):
                side = " and ".join(s for s, v in (("A", r["a"]), ("B", r["b"])) if not math.isfinite(v))
                notes.append(f"{task} · {method}: {r['metric']} delta undefined: the metric is undefined in {side} "
                             "(e.g. auroc when every item is correct)")
    only_a = [u for u in units_a if u not in units_b]
    only_b = sorted(units_b - set(units_a))
    table = pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
    return Comparison(str(run_a), str(run_b), table, only_a, only_b, n_bins, n_resamples, seed, level, ci, notes)


def write_comparison(comparison: Comparison, out_dir: str | Path) -> list[Path]:
    """Write compare.json and the side-by-side reliability grid (A | B per task x method).

    Like a run folder, the output is staged beside ``out_dir`` and swapped in whole with its manifest
    (``calibench.runfolder.staged_folder``), so a killed compare never leaves a half-written folder.
    """
    from calibench.runfolder import staged_folder

    out = Path(out_dir)
    with staged_folder(out) as stage:
        _write_comparison(comparison, stage)
    return [out / COMPARE_FILE, out / GRID_FILE]


def _write_comparison(comparison: Comparison, out: Path) -> None:
    from calibench.records import load_run_records
    from calibench.report.diagrams import reliability_diagram
    from calibench.report.plots import plot_reliability_grid

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


def _label(run: str) -> str:
    p = Path(run)
    return p.name if p.is_dir() else p.parent.name


def default_out_dir(run_a: str | Path, run_b: str | Path) -> Path:
    """``<parent of B>/compare-<A>-vs-<B>``: beside the runs, never inside one."""
    pb = Path(run_b)
    parent = pb.parent if pb.is_dir() else pb.parent.parent
    return parent / f"compare-{_label(str(run_a))}-vs-{_label(str(run_b))}"

