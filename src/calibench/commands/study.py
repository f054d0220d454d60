"""CLI: ``calibench study list|plan|run`` and ``calibench report``.

A study argument is a YAML file or the name of a shipped study (``calibench study list``), so the
README's commands work from any folder. ``--limit`` and ``--threads`` override the file's settings
without editing it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

study_app = typer.Typer(help="Declarative calibration studies: a crash-safe grid of train and eval units.",
                        no_args_is_help=True)

STUDY = typer.Argument(..., help="Study YAML file, or a shipped study's name (see `calibench study list`).")
PLAN_COLUMNS = ("#", "kind", "status", "key", "unit", "methods")
LIMIT = typer.Option(None, "--limit", min=1, help="Score at most N items per task (overrides settings.limit).")


def _overrides(**values: Any) -> dict[str, Any]:
    """CLI options that override a study's settings (the ones given)."""
    return {k: v for k, v in values.items() if v is not None}


@study_app.command("list")
def list_cmd() -> None:
    """The studies that ship with calibench (usable by name from any folder)."""
    import yaml

    from calibench.study.shipped import shipped_studies

    for name, path in shipped_studies().items():
        description = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("description", "")
        typer.echo(f"{name:<16} {description}")


def plan_lines(rows: list[tuple[str, ...]]) -> list[str]:
    """One compact line per unit (for pipes, files and narrow terminals, where a table would wrap into
    hundreds of lines)."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:  # aligned columns; the long unit label is padded, the methods list ends the line
        cells = [r[0].rjust(widths[0]), *(c.ljust(w) for c, w in zip(r[1:-1], widths[1:-1], strict=True)), r[-1]]
        out.append("  ".join(cells).rstrip())
    return out


def table_width(rows: list[tuple[str, ...]], headers: tuple[str, ...] = PLAN_COLUMNS) -> int:
    """Characters a one-line-per-row rich table of ``rows`` needs (cells, padding and borders)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)] if rows else [0]
    return sum(widths) + 3 * len(widths) + 1


@study_app.command("plan")
def plan_cmd(
    study_file: str = STUDY,
    out: Path = typer.Option(None, "--out", help="Study folder: also show which units are already finished."),
    limit: int = LIMIT,
) -> None:
    """Validate a study and print its units, in run order, without running anything."""
    from rich.console import Console
    from rich.table import Table

    from calibench.study.runner import plan
    from calibench.study.shipped import find_study
    from calibench.study.store import DB_NAME, Store

    study, units = plan(find_study(study_file), settings=_overrides(limit=limit))
    finished: set[str] = set()
    if out is not None and (out / DB_NAME).exists():
        with Store.open(out, read_only=True) as store:
            finished = store.finished_keys()
    rows = []
    for i, u in enumerate(units, start=1):
        methods = ",".join(u.spec.get("methods", [])) if u.kind == "eval" else u.spec["recipe"]
        key = u.key[:12] if u.key != "?" else "?"
        rows.append((str(i), u.kind, "finished" if u.key in finished else "to run", key, u.label, methods))
    title = f"study {study.name}: {len(units)} units"
    console = Console()
    if not sys.stdout.isatty() or table_width(rows) > console.width:
        typer.echo(title + ("  (key ?: task resolved at run)" if any(r[3] == "?" for r in rows) else ""))
        for line in plan_lines(rows):
            typer.echo(line)
        return
    table = Table(title=title, caption="key ?: task resolved at run" if any(r[3] == "?" for r in rows) else None)
    for col in PLAN_COLUMNS:
        table.add_column(col, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console.print(table)


@study_app.command("run")
def run_cmd(
    study_file: str = STUDY,
    out: Path = typer.Option(None, "--out", help="Study folder (default runs/<study name>)."),
    executor: str = typer.Option("local", "--executor", help="local or ray."),
    address: str = typer.Option(None, "--address", help="Ray cluster address (default: $RAY_ADDRESS or local)."),
    limit: int = LIMIT,
    threads: int = typer.Option(None, "--threads", min=1,
                                help="torch threads per unit (overrides settings.threads; default: automatic)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar, library logs or warnings."),
) -> None:
    """Run every unit not yet finished; safe to kill and re-run at any moment."""
    from rich.console import Console
    from rich.table import Table

    from calibench.errors import CalibenchError
    from calibench.study.runner import run
    from calibench.study.shipped import find_study

    if quiet:
        from calibench.quiet import quiet_libraries

        quiet_libraries(warnings_too=True)
    result = run(find_study(study_file), out, executor=executor, address=address,
                 progress=not (no_progress or quiet), settings=_overrides(limit=limit, threads=threads))
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
    """Add ``study`` (list, plan, run) and ``report`` to ``app``."""
    app.add_typer(study_app, name="study")
    app.command("report")(report_cmd)
