"""CLI: ``calibench from-lm-eval`` turns lm-eval ``--log_samples`` files into a records table.

Users of lm-evaluation-harness get calibration numbers (ECE, SCE, Brier, ...) from runs they already
have, without re-scoring: the logged option log-likelihoods are the continuation-sum method.
"""

from __future__ import annotations

import math
from pathlib import Path

import typer

_COLUMNS = (("acc", "accuracy"), ("ECE", "ece"), ("SCE", "sce"), ("Brier", "brier"), ("AUROC", "auroc"))


def _fmt(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:.3f}"


def from_lm_eval(
    samples: list[Path] = typer.Argument(..., help="lm-eval samples_<task>_<date>.jsonl files or folders of them."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write records.parquet into."),
    model: str | None = typer.Option(None, help="Model name (default: from results_<date>.json or the folder)."),
    revision: str | None = typer.Option(None, help="Model revision (default: from results_<date>.json)."),
    task: str | None = typer.Option(None, help="Task name (default: from the file name)."),
    n_bins: int = typer.Option(10, "--n-bins", help="Equal-width bins for ECE/SCE."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples for the CIs (0 = none)."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
) -> None:
    """Convert lm-eval --log_samples output of multiple-choice tasks into calibench records."""
    from rich.console import Console
    from rich.table import Table

    from calibench.errors import CalibenchError
    from calibench.limits import check_summary_options
    from calibench.lm_eval_import import convert
    from calibench.metrics import summarize
    from calibench.records import write_records

    # options first: nothing is written when one is wrong
    check_summary_options(n_bins, bootstrap)
    if out.exists() and not out.is_dir():
        raise CalibenchError(f"{out}: exists and is not a folder")
    records = convert([str(s) for s in samples], model=model, revision=revision, task=task)
    target = out / "records.parquet"
    write_records(records, target)
    # summarize groups by (task, method); summarise each model on its own so two models never mix.
    per_model = [(name, summarize(group, n_bins=n_bins, n_resamples=bootstrap, seed=seed))
                 for name, group in records.groupby("model", sort=False)]

    several = len(per_model) > 1
    title = f"{len(records)} records -> {target}"
    table = Table(title=title if several else f"{per_model[0][0]}: {title}")
    if several:
        table.add_column("model", min_width=8, overflow="fold")
    table.add_column("task", min_width=8, overflow="fold")
    table.add_column("n", justify="right")
    for header, _ in _COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("ECE 95% CI", justify="right", no_wrap=True)
    for model_name, summary in per_model:
        for (task_name, _method), group in summary.groupby(["task", "method"], sort=False):
            by = group.set_index("metric")
            cells = [_fmt(by.loc[m, "estimate"]) if m in by.index else "–" for _, m in _COLUMNS]
            ci = "–"
            if "ece" in by.index and math.isfinite(by.loc["ece", "low"]):
                ci = f"[{_fmt(by.loc['ece', 'low'])}, {_fmt(by.loc['ece', 'high'])}]"
            lead = [str(model_name)] if several else []
            table.add_row(*lead, str(task_name), str(int(group["n"].iloc[0])), *cells, ci)
    console = Console()
    console.print(table)
    from calibench.metrics.notes import metric_notes

    for model_name, summary in per_model:
        source = records[records["model"] == model_name]
        for (task_name, method), group in summary.groupby(["task", "method"], sort=False):
            rows = {str(r["metric"]): r for r in group.to_dict("records")}
            g = source[(source["task"] == task_name) & (source["method"] == method)]
            label = f"{model_name} · {task_name}" if several else str(task_name)
            for note in metric_notes(g, rows, n_bins=n_bins, ci="bca" if bootstrap > 0 else None):
                console.print(f"note ({label}): {note}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``from-lm-eval`` to ``app``."""
    app.command("from-lm-eval")(from_lm_eval)
