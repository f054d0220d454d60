"""The ``calibench`` command line.

Each sub-command lives in ``calibench.commands.<name>`` and registers itself on ``app``; heavy
imports (torch, transformers) happen inside the command bodies so ``calibench --help`` stays fast.
User errors (``CalibenchError``, bad options) print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import sys

import click
import typer

from calibench import __version__
from calibench.commands import REGISTRARS
from calibench.errors import CalibenchError

app = typer.Typer(
    name="calibench",
    help="Measure the confidence calibration of language models across pretraining and alignment.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"calibench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """calibench: calibration of language models, from pretraining to alignment."""


for _register in REGISTRARS:
    _register(app)


def _vendored_click_errors() -> tuple[type[Exception], ...]:
    """From typer 0.29 on, typer raises usage errors from its own copy of click (``typer._click``)."""
    try:
        from typer._click import ClickException  # type: ignore[import-not-found]
    except ImportError:
        return ()
    return (ClickException,)


_EXIT = (click.exceptions.Exit, typer.Exit)
_USAGE = (click.ClickException, *_vendored_click_errors())
_ABORT = (click.exceptions.Abort, typer.Abort)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    try:
        result = app(args=argv, standalone_mode=False)
    except CalibenchError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        return 2
    except _EXIT as exc:
        return exc.exit_code
    except _USAGE as exc:
        exc.show()
        return 2
    except _ABORT:
        typer.echo("aborted", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
