"""CLI: ``calibench study plan|run`` and ``calibench report``."""

from __future__ import annotations

from pathlib import Path

import typer

study_app = typer.Typer(help="Declarative calibration studies: a crash-safe grid of train and eval units.",
                        no_args_is_help=True)


@study_app.command("plan")
def plan_cmd(
    study_file: Path = typer.Argument(..., help="Study YAML file."),
    out: Path = typer.Option(None, "--out", help="Study folder: also show which units are already finished."),
) -> None:
    """Validate a study and print its units, in run order, without running anything."""
    from rich.console import Console
    from rich.table import Table

    from calibench.study.runner import plan
    from calibench.study.store import DB_NAME, Store

    study, units = plan(study_file)
    finished: set[str] = set()
    if out is not None and (out / DB_NAME).exists():
        with Store.open(out, read_only=True) as store:
            finished = store.finished_keys()
    table = Table(title=f"study {study.name}: {len(units)} units")
    for col in ("#", "kind", "unit", "methods", "key", "status"):
        table.add_column(col, overflow="fold")
    for i, u in enumerate(units, start=1):
        methods = ", ".join(u.spec.get("methods", [])) if u.kind == "eval" else u.spec["recipe"]
        key = u.key[:12] if u.key != "?" else "? (task resolved at run)"
        table.add_row(str(i), u.kind, u.label, methods, key, "finished" if u.key in finished else "to run")
    Console().print(table)


@study_app.command("run")
def run_cmd(
    study_file: Path = typer.Argument(..., help="Study YAML file."),
    out: Path = typer.Option(None, "--out", help="Study folder (default runs/<study name>)."),
    executor: str = typer.Option("local", "--executor", help="local or ray."),
    address: str = typer.Option(None, "--address", help="Ray cluster address (default: $RAY_ADDRESS or local)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Run every unit not yet finished; safe to kill and re-run at any moment."""
    from rich.console import Console
    from rich.table import Table

    from calibench.errors import CalibenchError
    from calibench.study.runner import run

    result = run(study_file, out, executor=executor, address=address, progress=not no_progress)
    table = Table(title=f"study folder {result.out_dir}")
    for col in ("units", "ran", "already finished", "failed"):
        table.add_column(col, justify="right")
    table.add_row(str(result.total), str(result.ran), str(result.skipped), str(len(result.failed)))
    console = Console()
    console.print(table)
    for label, error in result.failed[:10]:
        console.print(f"[red]failed[/] {label}: {error.splitlines()[0] if error else ''}", markup=True,
                      highlight=False)
    if result.failed:
        raise CalibenchError(f"{len(result.failed)} unit(s) failed; fix and re-run (finished units are kept)")


def report_cmd(
    study_dir: Path = typer.Argument(..., help="A study folder written by `calibench study run`."),
    out: Path = typer.Option(None, "--out", help="HTML file (default STUDY_DIR/report.html)."),
) -> None:
    """Write one self-contained HTML report of a study (figures embedded, readable offline)."""
    from calibench.study.report import build_report

    path = build_report(study_dir, out)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add ``study`` (plan, run) and ``report`` to ``app``."""
    app.add_typer(study_app, name="study")
    app.command("report")(report_cmd)
