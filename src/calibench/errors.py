"""User-facing errors.

Everything a user can get wrong (a bad file, a bad value, a missing model) raises ``CalibenchError``.
It subclasses ``ValueError`` so library callers can catch the usual type, and the CLI turns it into
one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations


class CalibenchError(ValueError):
    """A problem with the user's input, named precisely enough to fix it."""


class NotMeasurable(CalibenchError):
    """A confidence method yields nothing to measure on this model (e.g. no answer states a confidence).

    That is a finding about the model, not a failed run: ``calibench.scoring.score`` reports the
    (task, method) as not measured, with this message, and goes on with the other methods.
    """


def located(message: str, *, path: object | None = None, line: int | None = None, field: str | None = None) -> CalibenchError:
    """Build an error whose message starts with ``file:line: field:`` where known."""
    where = ""
    if path is not None:
        where = str(path)
        if line is not None:
            where += f":{line}"
        where += ": "
    if field is not None:
        where += f"field '{field}': "
    return CalibenchError(where + message)


QUOTE_LIMIT = 80


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters: every message that quotes user input goes through
    here, so a hostile value (a megabyte string, a YAML alias bomb) cannot make an error message huge.

    The value is never rendered whole: containers are summarised from a bounded prefix.
    """
    text = _bounded_repr(value, limit + 1)
    if len(text) > limit:
        return text[: max(limit - 3, 1)] + "..."
    return text


def _bounded_repr(value: object, limit: int) -> str:
    """repr() that stops once ``limit`` characters are produced (nested containers included)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel = 3
    r.maxdict = r.maxlist = r.maxtuple = r.maxset = r.maxfrozenset = r.maxdeque = r.maxarray = 8
    r.maxstring = r.maxother = r.maxlong = max(limit, 8)
    try:
        import numpy as np

        if isinstance(value, np.generic):
            value = value.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, str):
        return repr(value[: limit + 1]) if len(value) > limit else repr(value)
    return r.repr(value)


def os_error_line(exc: OSError) -> str:
    """One line for an OS error (disk full, permission, missing or special file), naming the path."""
    import errno

    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    where = exc.filename if exc.filename is not None else None
    if where is not None:
        text = f"{where}: {reason}"
        if exc.filename2 is not None:
            text += f" (-> {exc.filename2})"
        return text
    return f"{reason}" + (f" ({exc})" if str(exc) and str(exc) != reason else "")
