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


def check_summary_options(n_bins: int, bootstrap: int) -> None:
    """``--n-bins`` in [1, MAX_BINS] and ``--bootstrap`` in [0, MAX_RESAMPLES]: what every command that
    summarises records checks before it reads or writes anything."""
    if n_bins < 1:
        raise CalibenchError(f"--n-bins must be >= 1, got {n_bins}")
    if bootstrap < 0:
        raise CalibenchError(f"--bootstrap must be >= 0, got {bootstrap}")
    check_cap("--n-bins", n_bins, MAX_BINS)
    check_cap("--bootstrap", bootstrap, MAX_RESAMPLES)
