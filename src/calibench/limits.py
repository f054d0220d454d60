"""Caps on sizes a user can ask for: memory and time must stay proportional to the input.

Why: ``--n-bins 10000000`` with a bootstrap on 200 records allocated gigabytes (bins x resamples);
no calibration analysis needs more bins than this, nor more resamples.
"""

from __future__ import annotations

from calibench.errors import CalibenchError

MAX_BINS = 10_000
MAX_RESAMPLES = 1_000_000


def check_cap(option: str, value: int | None, cap: int) -> None:
    """Raise a one-line error when ``value`` exceeds ``cap`` (``option`` names the flag, e.g. ``--n-bins``)."""
    if value is not None and value > cap:
        raise CalibenchError(f"{option} must be <= {cap}, got {value}")
