"""User-facing errors.

Everything a user can get wrong (a bad file, a bad value, a missing model) raises ``CalibenchError``.
It subclasses ``ValueError`` so library callers can catch the usual type, and the CLI turns it into
one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations


class CalibenchError(ValueError):
    """A problem with the user's input, named precisely enough to fix it."""


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
