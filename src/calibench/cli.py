"""The ``calibench`` command line.

Each sub-command lives in ``calibench.commands.<name>`` and registers itself on ``app``; heavy
imports (torch, transformers) happen inside the command bodies so ``calibench --help`` stays fast.
User errors (``CalibenchError``, bad options) print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import sys
import warnings

import click
import typer

from calibench import __version__
from calibench.commands import REGISTRARS
from calibench.errors import CalibenchError, os_error_line

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


def _show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
    """calibench's own warnings (an unverified run folder, mixed class counts) as one line on stderr."""
    if (category.__module__ or "").startswith("calibench"):
        typer.secho(f"warning: {' '.join(str(message).split())}", err=True, fg="yellow")
        return
    _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    warnings.showwarning = _show_warning
    try:
        result = app(args=argv, standalone_mode=False)
    except CalibenchError as exc:
        _error_line(str(exc))
        return 2
    except OSError as exc:  # disk full, permission denied, a special file as --out or --diagram, ...
        _error_line(os_error_line(exc))
        return 2
    except MemoryError:
        _error_line("out of memory (an input or an option is too large for this machine)")
        return 2
    except _EXIT as exc:
        return exc.exit_code
    except _USAGE as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help is the answer
            exc.show()
            return 2
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _error_line(exc.format_message() + hint)  # a bad option is one line too, like every other error
        return 2
    except _ABORT:
        typer.echo("aborted", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as exc:
        if (line := library_error_line(exc)) is None:
            raise
        _error_line(line)
        return 2
    return result if isinstance(result, int) else 0


def _error_line(message: str) -> None:
    """Print ``error: message`` as exactly one line on stderr (newlines in a message are folded)."""
    text = " ".join(message.split())
    if len(text) > 2000:
        text = text[:1997] + "..."
    typer.secho(f"error: {text}", err=True, fg="red")


def library_error_line(exc: BaseException) -> str | None:
    """One line for the errors libraries raise on hostile weight files (a truncated safetensors file, a
    header that claims a huge tensor, a pickle that torch's weights-only unpickler refuses); None for
    anything else, which is a bug and keeps its traceback."""
    import pickle

    name = type(exc).__name__
    module = type(exc).__module__ or ""
    if name == "SafetensorError" or module.startswith("safetensors"):
        return f"unreadable safetensors file: {_first(exc)}"
    if isinstance(exc, pickle.UnpicklingError):
        return f"refused to unpickle weights: {_first(exc)}"
    return None


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
