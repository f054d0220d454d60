"""CLI: ``calibench lifecycle``: the built-in lifecycle study, run and reported in one command."""

from __future__ import annotations

from pathlib import Path

import typer


def lifecycle_cmd(
    out: Path = typer.Option(Path("runs/lifecycle"), "--out", help="Study folder (resumable)."),
    quick: bool = typer.Option(False, "--quick", help="The small preset (fewer people, sizes, steps)."),
    executor: str = typer.Option("auto", "--executor",
                                 help="local, ray, or auto (ray when installed and 2+ cores: two workers)."),
    address: str = typer.Option(None, "--address", help="Ray cluster address."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar, library logs or warnings."),
) -> None:
    """World -> pretraining (3 sizes, checkpoints) -> SFT full/LoRA x diverse/narrow -> reward, RL, DPO,
    every stage evaluated on lab CLM, facts and MC with every method, then the HTML report."""
    from calibench.errors import CalibenchError
    from calibench.study.lifecycle import write_lifecycle_study
    from calibench.study.report import build_report
    from calibench.study.runner import run

    if quiet:
        from calibench.quiet import quiet_libraries

        quiet_libraries(warnings_too=True)
    preset = "quick" if quick else "default"
    study = write_lifecycle_study(out, preset, device=device)
    result = run(study, out, executor=executor, address=address, progress=not quiet)
    if result.failed:
        for label, error in result.failed[:5]:
            typer.secho(f"failed {label}: {error.splitlines()[0]}", err=True, fg="red")
        raise CalibenchError(f"{len(result.failed)} unit(s) failed; re-run to resume (finished units are kept)")
    typer.echo(str(build_report(out).resolve()))


def register(app: typer.Typer) -> None:
    """Add ``lifecycle`` to ``app``."""
    app.command("lifecycle")(lifecycle_cmd)
