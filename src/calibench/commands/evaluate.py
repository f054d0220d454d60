"""CLI: ``calibench eval`` (score a model, write a run folder) and ``calibench compare`` (paired deltas)."""

from __future__ import annotations

import json
import math
import shlex
import sys
from pathlib import Path

import typer

from calibench.errors import CalibenchError

# Columns of the end-of-run summary: (header, metric name in calibench.metrics.METRICS), and the
# top-label stand-in shown (starred) where a group lacks the class probabilities a metric needs.
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (("acc", "accuracy"), ("ECE [95% CI]", "ece"), ("SCE", "sce"),
                                               ("Brier", "brier"), ("AUROC", "auroc"))
TOP_LABEL_STAND_IN: dict[str, str] = {"brier": "brier_top"}


def _console():
    """A rich console; when output is not a terminal (a file, a pipe) tables get room instead of wrapping."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _split(text: str, what: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise CalibenchError(f"no {what} given")
    return parts


def summary_table(metrics, title: str = "calibration"):
    """A rich table with one row per task x method (metrics from ``summarize``)."""
    from rich.table import Table

    table = Table(title=title, caption="Brier: multi-class where the method gives class probabilities, "
                  "else top-label (*)")
    for col in ("task", "method", "n"):
        table.add_column(col, justify="right" if col == "n" else "left", no_wrap=col != "task")
    for header, _ in SUMMARY_COLUMNS:
        table.add_column(header, justify="right")
    for (task, method), g in metrics.groupby(["task", "method"], sort=False):
        by = {r["metric"]: r for r in g.to_dict("records")}
        cells = []
        for _, name in SUMMARY_COLUMNS:
            r = by.get(name)
            stand_in = TOP_LABEL_STAND_IN.get(name)
            if r is None and stand_in in by:
                cells.append(_fmt(by[stand_in]["estimate"]) + "*")
            elif r is None:
                cells.append("–")
            elif name == "ece":
                cells.append(f"{_fmt(r['estimate'])} [{_fmt(r['low'])}, {_fmt(r['high'])}]")
            else:
                cells.append(_fmt(r["estimate"]))
        table.add_row(str(task), str(method), str(int(g["n"].iloc[0])), *cells)
    return table


def eval_command(
    model: str = typer.Option("hf", "--model", help="Model backend (only 'hf': transformers causal LMs)."),
    model_args: str = typer.Option(..., "--model-args",
                                   help="pretrained=ID_OR_PATH[,revision=R][,peft=PATH][,dtype=D][,gguf_file=F]"),
    tasks: str = typer.Option(..., "--tasks", help="Comma-separated task names or files (world-mc,world-facts,...)."),
    methods: str = typer.Option("all", "--methods", help="'all' or a comma-separated list of methods."),
    out: Path = typer.Option(..., "--out", help="Run folder to write (records.parquet, metrics.json, ...)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Score only the first N items per task."),
    num_fewshot: int = typer.Option(0, "--num-fewshot", min=0),
    chat_template: bool = typer.Option(False, "--chat-template", help="Wrap prompts in the chat template."),
    seed: int = typer.Option(0, "--seed"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples for the CIs (0: none)."),
    n_bins: int = typer.Option(10, "--n-bins", min=1),
    max_new_tokens: int = typer.Option(8, "--max-new-tokens", min=1, help="Greedy answer length (sequence, p-true)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow non-safetensors (pickle) weights."),
    no_figures: bool = typer.Option(False, "--no-figures", help="Skip the reliability diagram PNGs."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
    threads: int | None = typer.Option(None, "--threads", min=1,
                                       help="torch intra-op threads (default: 1 for small models or a busy CPU, "
                                       "else torch's; see calibench.threads)."),
    n_samples: int = typer.Option(10, "--n-samples", min=1,
                                  help="Samples per item (consistency, semantic, p-true-fewshot)."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature of those samples (> 0)."),
    probe_layer: int | None = typer.Option(None, "--probe-layer", help="Hidden layer the probe reads (default: middle)."),
    probe_folds: int = typer.Option(5, "--probe-folds", min=2, help="Cross-fitting folds of the probe."),
    verbal_scale: str = typer.Option("numeric", "--verbal-scale", help="verbalized: numeric (0-100) or linguistic."),
) -> None:
    """Score a model on tasks with confidence methods; write records, metrics, diagrams and config."""
    from calibench.evaluate import CONFIG_FILE, METRICS_FILE, run_eval
    from calibench.models.size import estimate_parameters
    from calibench.records import RECORDS_FILE
    from calibench.threads import resolve_threads, torch_threads

    if model != "hf":
        raise CalibenchError(f"--model '{model}' is not supported (use --model hf)")
    from calibench.models.devices import device_problem

    if (problem := device_problem(device)) is not None:
        raise CalibenchError(f"--device {problem}")
    if quiet:
        from calibench.quiet import quiet_libraries

        quiet_libraries(warnings_too=True)
    with torch_threads(resolve_threads(threads, estimate_parameters(model_args))):
        result = run_eval(
            model_args, _split(tasks, "tasks"), methods, out,
            batch_size=batch_size, device=device, seed=seed, limit=limit, num_fewshot=num_fewshot,
            chat_template=chat_template, n_bins=n_bins, bootstrap=bootstrap, trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle, progress=not quiet, max_new_tokens=max_new_tokens,
            command=shlex.join(["calibench", *sys.argv[1:]]), figures=not no_figures,
            method_options={"n_samples": n_samples, "temperature": temperature, "probe_layer": probe_layer,
                            "probe_folds": probe_folds, "verbal_scale": verbal_scale},
        )
    console = _console()
    console.print(summary_table(result.metrics, title=f"calibration · {out}"))
    from rich.markup import escape

    from calibench.validity import validity_table, warnings

    lines = [f"not measured: {task} · {method}: {why}" for (task, method), why in result.not_measured.items()]
    for line in lines + warnings(validity_table(result.records)):
        console.print(f"[yellow]{escape(line)}[/yellow]", highlight=False)
    console.print(f"wrote {out}/{RECORDS_FILE} ({len(result.records)} records), {METRICS_FILE}, {CONFIG_FILE}")


def compare_command(
    run_a: Path = typer.Argument(..., help="Run folder A (e.g. the base model)."),
    run_b: Path = typer.Argument(..., help="Run folder B (e.g. the aligned model); deltas are B minus A."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: beside B, compare-A-vs-B)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=1, help="Paired bootstrap resamples."),
    seed: int = typer.Option(0, "--seed"),
    n_bins: int | None = typer.Option(None, "--n-bins", min=1, help="Bins (default: run A's)."),
    metrics: str | None = typer.Option(None, "--metrics",
                                       help="Metrics to print, e.g. accuracy,ece,sce (default: all; the JSON has all)."),
    as_json: bool = typer.Option(False, "--json", help="Print compare.json to stdout instead of a table."),
    task: list[str] | None = typer.Option(None, "--task", help="Only this task (repeatable)."),
    method: list[str] | None = typer.Option(None, "--method", help="Only this method (repeatable)."),
    ci: str = typer.Option("bca", "--ci", help="Interval: bca (default) or percentile; p-values come from the "
                           "same resamples either way."),
) -> None:
    """Paired deltas (B - A) of every metric per task x method, with CIs, p-values and diagrams."""
    from rich.table import Table

    from calibench.compare import compare_runs, default_out_dir, write_comparison
    from calibench.limits import MAX_BINS, MAX_RESAMPLES, check_cap
    from calibench.metrics import METRICS

    check_cap("--n-bins", n_bins, MAX_BINS)
    check_cap("--bootstrap", bootstrap, MAX_RESAMPLES)
    shown = _split(metrics, "metrics") if metrics is not None else list(METRICS)
    unknown = [m for m in shown if m not in METRICS]
    if unknown:
        raise CalibenchError(f"unknown metric '{unknown[0]}'; choose from {', '.join(METRICS)}")
    comparison = compare_runs(run_a, run_b, n_resamples=bootstrap, seed=seed, n_bins=n_bins, ci=ci, tasks=task,
                              methods=method)
    out_dir = out if out is not None else default_out_dir(run_a, run_b)
    written = write_comparison(comparison, out_dir)
    if as_json:
        typer.echo(json.dumps(comparison.to_dict(), indent=2, sort_keys=True))
        return
    table = Table(title=f"B - A  (A = {run_a}, B = {run_b}; {int(comparison.level * 100)}% paired bootstrap, {ci})")
    for col, justify in (("task", "left"), ("method", "left"), ("metric", "left"), ("n", "right"),
                         ("A", "right"), ("B", "right"), ("Δ", "right"), ("CI", "right"), ("p", "right")):
        table.add_column(col, justify=justify, no_wrap=col in ("method", "metric"))
    rows = comparison.table[comparison.table["metric"].isin(shown)]
    for r in rows.to_dict("records"):
        sig = math.isfinite(r["p_value"]) and r["p_value"] < 0.05
        p = f"[bold]{_fmt(r['p_value'])}[/bold]" if sig else _fmt(r["p_value"])
        table.add_row(r["task"], r["method"], r["metric"], str(r["n"]), _fmt(r["a"]), _fmt(r["b"]),
                      f"{r['delta']:+.3f}" if math.isfinite(r["delta"]) else "–",
                      f"[{_fmt(r['low'])}, {_fmt(r['high'])}]", p)
    console = _console()
    console.print(table)
    for label, units in (("only in A", comparison.only_a), ("only in B", comparison.only_b)):
        if units:
            console.print(f"skipped ({label}): " + ", ".join(f"{t} · {m}" for t, m in units))
    for note in comparison.notes:
        console.print(f"note: {note}", soft_wrap=True)
    console.print("wrote " + ", ".join(str(p) for p in written))


def register(app: typer.Typer) -> None:
    """Add ``eval`` and ``compare`` to ``app``."""
    app.command("eval")(eval_command)
    app.command("compare")(compare_command)
