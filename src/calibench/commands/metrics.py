"""CLI: ``calibench metrics RECORDS...``: every calibration metric of a records file, with CIs.

The command is a thin shell over the library: ``read_records`` (validation with file:line),
``calibench.metrics.summarize`` (numbers and bootstrap CIs), ``calibench.recalibrate.cross_fit``
(out-of-fold recalibration, so no reported number is fitted on the items it scores) and
``calibench.report`` (diagrams). Tables go to stdout, or with ``--json`` one JSON document and nothing
else; every message goes to stderr so stdout stays machine-readable.

``--task``/``--method`` select groups; ``--ci`` picks the interval (BCa by default). Recalibration is
per group: groups that lack what the calibrator needs (class probabilities for temperature, enough
records for the folds) are skipped and named. Under each table, note lines
(``calibench.metrics.notes``) say why a metric is missing or undefined, which intervals are marked †,
and when n is small for the bin count.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from calibench.errors import CalibenchError
from calibench.limits import check_summary_options

if TYPE_CHECKING:
    import pandas as pd

IMAGE_SUFFIXES = (".png", ".svg", ".pdf")
GROUP_KEYS = ("model", "task", "method")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("metrics")(metrics)


def metrics(
    records: list[Path] = typer.Argument(..., help="Records files (.jsonl, .csv or .parquet); several are concatenated."),
    n_bins: int = typer.Option(10, "--n-bins", help="Number of bins for ECE/ACE/MCE/RMSCE/DCE/SCE and the diagram."),
    binning: str = typer.Option("width", "--binning", help="Bins of ECE/MCE/RMSCE/DCE and the diagram: width or mass "
                                 "(ACE is always equal-mass, SCE equal-width)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the CIs; 0 disables CIs."),
    level: float = typer.Option(0.95, "--level", help="Confidence level of the intervals."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and the cross-fitting folds."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout instead of tables."),
    diagram: Path | None = typer.Option(None, "--diagram", help="Write a reliability diagram (.png/.svg/.pdf)."),
    smooth_diagram: Path | None = typer.Option(None, "--smooth-diagram",
                                               help="Write a smooth reliability diagram with a bootstrap band."),
    recalibrate: str | None = typer.Option(None, "--recalibrate",
                                           help="Also report metrics after cross-fitted recalibration: "
                                                "temperature, platt, histogram or isotonic."),
    folds: int = typer.Option(5, "--folds", help="Folds for cross-fitted recalibration."),
    task: list[str] | None = typer.Option(None, "--task", help="Only this task (repeatable)."),
    method: list[str] | None = typer.Option(None, "--method", help="Only this method (repeatable)."),
    ci: str = typer.Option("bca", "--ci", help="Interval: bca (bias-corrected and accelerated; widened and "
                           "marked if it would exclude the estimate) or percentile."),
) -> None:
    """Compute every calibration metric per task x method, with bootstrap CIs, tables or JSON, and diagrams."""
    _validate_options(n_bins=n_bins, binning=binning, bootstrap=bootstrap, level=level, recalibrate=recalibrate,
                      folds=folds, images=[p for p in (diagram, smooth_diagram) if p is not None], ci=ci)
    from rich.console import Console

    from calibench.metrics import summarize
    from calibench.records import read_records

    err = Console(stderr=True)
    df = filter_records(_concat([read_records(p) for p in records]), tasks=task, methods=method)
    groups = list(_groups(df))
    models = {key[0] for key, _ in groups}
    with _progress(err, total=len(groups) * (2 if recalibrate else 1), enabled=not as_json) as advance:
        raw = _summarize_groups(groups, summarize, n_bins=n_bins, binning=binning, n_resamples=bootstrap,
                                seed=seed, level=level, ci=ci, advance=advance)
        recal_groups: list[tuple[tuple[str, str, str], pd.DataFrame]] = []
        recal_params: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        skipped: dict[tuple[str, str, str], str] = {}
        recal = None
        if recalibrate:
            for key, g in groups:
                reason = _cannot_recalibrate(g, recalibrate, folds=folds)
                if reason is not None:
                    skipped[key] = reason
                    continue
                recal_df, recal_params[key] = _recalibrated(g, recalibrate, folds=folds, seed=seed)
                recal_groups.append((key, recal_df))
            if not recal_groups:
                key, reason = next(iter(skipped.items()))
                raise CalibenchError(f"--recalibrate {recalibrate}: no group can be recalibrated; group "
                                     f"'{_label(key, models)}' {reason}")
            recal = _summarize_groups(recal_groups, summarize, n_bins=n_bins, binning=binning,
                                      n_resamples=bootstrap, seed=seed, level=level, ci=ci, advance=advance)

    result = _result(records, groups, raw, recal, recal_params, models=models, n_bins=n_bins, binning=binning, bootstrap=bootstrap,
                     level=level, seed=seed, recalibrate=recalibrate, folds=folds, ci=ci, skipped=skipped,
                     tasks=task, methods=method)
    if diagram is not None or smooth_diagram is not None:
        written = _draw(groups, recal_groups, models=models, recalibrate=recalibrate, n_bins=n_bins, binning=binning,
                        seed=seed, level=level, diagram=diagram, smooth_diagram=smooth_diagram)
        result["diagrams"] = [str(p) for p in written]
        for p in written:
            err.print(f"wrote {p}")
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, allow_nan=False) + "\n")
        sys.stdout.flush()
    else:
        _print_tables(result)


# ---------------------------------------------------------------------------------------------- options


def _validate_options(*, n_bins: int, binning: str, bootstrap: int, level: float, recalibrate: str | None,
                      folds: int, images: list[Path], ci: str = "bca") -> None:
    """Reject bad options before reading anything, each with a message naming the option.

    The choices come from their registries (``metrics.binning.BINNINGS``, ``recalibrate.CALIBRATORS``).
    """
    from calibench.metrics.binning import BINNINGS
    from calibench.metrics.intervals import CI_METHODS
    from calibench.recalibrate import CALIBRATORS

    check_summary_options(n_bins, bootstrap)
    if binning not in BINNINGS:
        raise CalibenchError(f"--binning must be one of {', '.join(BINNINGS)}, got {binning!r}")
    if bootstrap < 0:
        raise CalibenchError(f"--bootstrap must be >= 0 (0 disables CIs), got {bootstrap}")
    if not 0.0 < level < 1.0:
        raise CalibenchError(f"--level must be in (0, 1), got {level}")
    if recalibrate is not None and recalibrate not in CALIBRATORS:
        raise CalibenchError(f"--recalibrate must be one of {', '.join(CALIBRATORS)}, got {recalibrate!r}")
    if folds < 2:
        raise CalibenchError(f"--folds must be >= 2, got {folds}")
    if ci not in CI_METHODS:
        raise CalibenchError(f"--ci must be one of {', '.join(CI_METHODS)}, got {ci!r}")
    for path in images:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise CalibenchError(f"{path}: unknown image format '{path.suffix}' (use .png, .svg or .pdf)")


# ---------------------------------------------------------------------------------------------- computing


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd

    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def filter_records(df: pd.DataFrame, *, tasks: list[str] | None, methods: list[str] | None) -> pd.DataFrame:
    """Only the records of the chosen tasks and methods; a name no record has is an error listing the choices."""
    for column, chosen, option in (("task", tasks, "--task"), ("method", methods, "--method")):
        if not chosen:
            continue
        present = list(dict.fromkeys(df[column].astype(str)))
        unknown = [c for c in chosen if c not in present]
        if unknown:
            raise CalibenchError(f"{option} {unknown[0]!r} matches no records; {column}s: {', '.join(present)}")
        df = df[df[column].astype(str).isin(chosen)]
    return df.reset_index(drop=True)


def _groups(df: pd.DataFrame) -> Iterator[tuple[tuple[str, str, str], pd.DataFrame]]:
    """(model, task, method) groups in order of first appearance (files from two models never mix).

    A file of one group is yielded as it is: a groupby would copy the whole frame (over 1 GB at 1e7
    records)."""
    keys = list(GROUP_KEYS)
    if len(df) and all(df[k].nunique(dropna=False) == 1 for k in keys):
        import pandas as pd

        whole = df if df.index.equals(pd.RangeIndex(len(df))) else df.reset_index(drop=True)
        yield (str(df[keys[0]].iloc[0]), str(df[keys[1]].iloc[0]), str(df[keys[2]].iloc[0])), whole
        return
    for key, g in df.groupby(keys, sort=False):
        yield (str(key[0]), str(key[1]), str(key[2])), g.reset_index(drop=True)


def _label(key: tuple[str, str, str], models: set[str]) -> str:
    model, task, method = key
    base = f"{task} / {method}"
    return f"{model} · {base}" if len(models) > 1 and model else base


def _summarize_groups(groups: list[tuple[tuple[str, str, str], pd.DataFrame]], summarize: Callable[..., Any], *,
                      n_bins: int, binning: str, n_resamples: int, seed: int, level: float, ci: str,
                      advance: Callable[[], None]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Summarise each group on its own, so model stays part of the key even though summarize ignores it.

    Each row gets ``widened``: its BCa interval was stretched to reach the estimate."""
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for key, g in groups:
        table = summarize(g, n_bins=n_bins, binning=binning, n_resamples=n_resamples, seed=seed, level=level, ci=ci)
        widened = {m for _, _, m in table.attrs.get("widened", [])}
        out[key] = [{**r, "widened": r["metric"] in widened} for r in table.to_dict("records")]
        advance()
    return out


def _cannot_recalibrate(g: pd.DataFrame, name: str, *, folds: int) -> str | None:
    """Why the group cannot be recalibrated with ``name`` (None if it can)."""
    from calibench.metrics.registry import padded_probs

    if name == "temperature" and padded_probs(g) is None:
        return "lacks class probabilities (temperature needs probs and label in every record)"
    if len(g) < folds:
        return f"has {len(g)} records; --folds {folds} needs at least {folds} records per group"
    return None


def _recalibrated(g: pd.DataFrame, name: str, *, folds: int,
                  seed: int) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Records of one group with out-of-fold recalibrated confidences (and probs for temperature),
    and the parameters fitted on each fold (e.g. the temperatures).

    Top-label calibrators (platt, histogram, isotonic) change only the confidence, so the class
    probabilities no longer match it; they are dropped and class-wise metrics (SCE, Brier, NLL) are
    not reported after such a recalibration rather than reported from stale numbers. Items with fewer
    options than others are zero-padded (``registry.padded_probs``) and their absent options are
    zeroed again after temperature scaling (which would give them a sliver of mass).
    """
    import numpy as np
    import pandas as pd

    from calibench.metrics.registry import padded_probs
    from calibench.recalibrate import cross_fit

    pm = padded_probs(g)
    fitted = cross_fit(name, confidence=g["confidence"].to_numpy(dtype=float), correct=g["correct"].to_numpy(dtype=bool),
                       probs=pm[0] if pm is not None else None, labels=pm[1] if pm is not None else None,
                       n_folds=folds, seed=seed)
    out = g.copy()
    out["confidence"] = np.clip(np.asarray(fitted["confidence"], dtype=float), 0.0, 1.0)
    probs = fitted.get("probs")
    if probs is not None:
        probs = np.asarray(probs, dtype=float)
        sizes = np.array([len(p) for p in g["probs"]])
        if pm is not None and int(sizes.min()) < probs.shape[1]:
            probs = np.where(np.arange(probs.shape[1]) < sizes[:, None], probs, 0.0)
            probs = probs / probs.sum(axis=1, keepdims=True)
            out["confidence"] = probs.max(axis=1)
        out["probs"] = [row[:k].tolist() for row, k in zip(probs, sizes, strict=True)]
    else:
        out["probs"] = [None] * len(out)
        out["label"] = pd.array([None] * len(out), dtype="Int64")
    return out, [dict(p) for p in fitted.get("params", [])]


# ---------------------------------------------------------------------------------------------- output


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _metric_dict(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        m: dict[str, Any] = {"estimate": _num(r["estimate"]), "low": _num(r["low"]), "high": _num(r["high"])}
        if r.get("widened"):
            m["widened"] = True
        out[str(r["metric"])] = m
    return out


def _result(records: list[Path], groups: list[tuple[tuple[str, str, str], pd.DataFrame]],
            raw: dict[tuple[str, str, str], list[dict[str, Any]]],
            recal: dict[tuple[str, str, str], list[dict[str, Any]]] | None,
            recal_params: dict[tuple[str, str, str], list[dict[str, Any]]], *, models: set[str], n_bins: int,
            binning: str, bootstrap: int, level: float, seed: int, recalibrate: str | None,
            folds: int, ci: str = "bca", skipped: dict[tuple[str, str, str], str] | None = None,
            tasks: list[str] | None = None, methods: list[str] | None = None) -> dict[str, Any]:
    """The JSON document (also what the tables show); ``notes`` say why a metric is missing or flagged."""
    from calibench.metrics.notes import metric_notes

    skipped = skipped or {}
    shown_ci = ci if bootstrap > 0 else None
    out_groups = []
    for key, g in groups:
        metrics = _metric_dict(raw[key])
        entry: dict[str, Any] = {"model": key[0], "task": key[1], "method": key[2], "label": _label(key, models),
                                 "n": len(g), "metrics": metrics,
                                 "notes": metric_notes(g, metrics, n_bins=n_bins, ci=shown_ci)}
        if recal is not None and key in recal:
            after = _metric_dict(recal[key])
            entry["recalibrated"] = after
            entry["recalibration_params"] = _jsonable(recal_params.get(key, []))
            top_only = recalibrate != "temperature"
            entry["notes"] += [f"after {recalibrate}: {n}" for n in
                               metric_notes(g, after, n_bins=n_bins, ci=shown_ci, after=recalibrate if top_only else None)
                               if not n.startswith("small n") and "options:" not in n]
        elif recal is not None:
            entry["recalibration_skipped"] = skipped.get(key, "")
            entry["notes"].append(f"not recalibrated with {recalibrate}: the group {skipped.get(key, '')}")
        out_groups.append(entry)
    return {
        "records": [str(p) for p in records],
        "options": {"n_bins": n_bins, "binning": binning, "bootstrap": bootstrap, "level": level, "seed": seed,
                    "recalibrate": recalibrate, "folds": folds if recalibrate else None},
        "ci": ci,
        "filters": {"task": list(tasks) if tasks else None, "method": list(methods) if methods else None},
        "groups": out_groups,
        "recalibration_skipped": [_label(k, models) for k in skipped],
    }


def _jsonable(obj: Any) -> Any:
    """Fitted parameters as plain JSON (numpy scalars/arrays to Python, NaN to null)."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _num(obj)
    return obj if obj is None or isinstance(obj, str) else str(obj)


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def _ci(m: dict[str, Any] | None) -> str:
    if not m or m["low"] is None or m["high"] is None:
        return ""
    est = m["estimate"]
    flag = m.get("widened") or (est is not None and not m["low"] <= est <= m["high"])
    return f"{m['low']:.4f}–{m['high']:.4f}{' †' if flag else ''}"


def _print_tables(result: dict[str, Any]) -> None:
    """One rich table per group: metric, estimate, CI (and the same after recalibration)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    opts = result["options"]
    with_ci = opts["bootstrap"] > 0
    level = f"{opts['level']:.0%} CI ({result.get('ci', 'bca')})"
    recal = opts["recalibrate"]
    for grp in result["groups"]:
        console.print(f"[bold]{escape(grp['label'])}[/bold]  n={grp['n']:,}, {opts['n_bins']} {opts['binning']} bins")
        table = Table(header_style="bold")
        table.add_column("metric", no_wrap=True)
        table.add_column("estimate", justify="right", no_wrap=True)
        if with_ci:
            table.add_column(level, justify="right", no_wrap=True)
        if recal:
            table.add_column(f"{recal}*", justify="right", no_wrap=True)
            if with_ci:
                table.add_column(level, justify="right", no_wrap=True)
        after = grp.get("recalibrated", {})
        for name, m in grp["metrics"].items():
            cells = [name, _fmt(m["estimate"])]
            if with_ci:
                cells.append(_ci(m))
            if recal:
                a = after.get(name)
                cells.append(_fmt(a["estimate"]) if a else "–")
                if with_ci:
                    cells.append(_ci(a))
            table.add_row(*cells)
        console.print(table)
        for note in grp.get("notes", []):
            console.print(f"  note: {escape(note)}", soft_wrap=True)
    if result.get("recalibration_skipped"):
        console.print(f"not recalibrated ({len(result['recalibration_skipped'])} groups): "
                      f"{escape(', '.join(result['recalibration_skipped']))}", soft_wrap=True)
    if recal:
        console.print(f"* after {recal} recalibration, cross-fitted over {opts['folds']} folds "
                      "(each item recalibrated by a map fitted on the other folds)")


# ---------------------------------------------------------------------------------------------- pictures


def _draw(groups: list[tuple[tuple[str, str, str], pd.DataFrame]],
          recal_groups: list[tuple[tuple[str, str, str], pd.DataFrame]], *, models: set[str],
          recalibrate: str | None, n_bins: int, binning: str, seed: int, level: float, diagram: Path | None,
          smooth_diagram: Path | None) -> list[Path]:
    """One diagram per group (with its recalibrated twin beside it); a grid when there are several."""
    from calibench.report import (
        plot_reliability_grid,
        reliability_diagram,
        save_figure,
        smooth_reliability_diagram,
    )
    from calibench.report.plots import plot_reliability, plot_smooth

    runs: list[tuple[str, pd.DataFrame]] = []
    recal_by_key = dict(recal_groups)
    for key, g in groups:
        runs.append((_label(key, models), g))
        if key in recal_by_key:
            runs.append((f"{_label(key, models)} · after {recalibrate}", recal_by_key[key]))
    written: list[Path] = []
    for path, make, plot_one in (
        (diagram, lambda g: reliability_diagram(g["confidence"], g["correct"], n_bins=n_bins, binning=binning),
         plot_reliability),
        (smooth_diagram, lambda g: smooth_reliability_diagram(g["confidence"], g["correct"], seed=seed, level=level),
         plot_smooth),
    ):
        if path is None:
            continue
        diagrams = {label: make(g) for label, g in runs}
        if len(diagrams) == 1:
            ((label, d),) = diagrams.items()
            save_figure(plot_one(d, title=label), path)
        else:
            plot_reliability_grid(diagrams, path, ncols=min(len(diagrams), 2 if recalibrate else 4))
        written.append(Path(path))
    return written


class _progress:
    """A transient progress bar on stderr for the per-group work (silent when stderr is not a terminal)."""

    def __init__(self, console: Any, *, total: int, enabled: bool) -> None:
        from rich.progress import Progress

        self._bar = Progress(console=console, transient=True, disable=not (enabled and console.is_terminal))
        self._total = total

    def __enter__(self) -> Callable[[], None]:
        self._bar.__enter__()
        task = self._bar.add_task("metrics", total=self._total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)  # type: ignore[arg-type]
