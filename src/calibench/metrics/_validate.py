"""Input validation shared by every metric.

Bad input must be an error, never a silent number (DESIGN.md): NaN, values outside [0, 1], probability
rows that do not sum to 1, labels out of range, length mismatches and empty input all raise
``CalibenchError`` with a message naming the argument and the first offending element.

The checks are written to be cheap on large arrays: the happy path costs one ``min`` and one ``max`` pass
(both propagate NaN, and +-inf fails the range test, so finiteness comes for free); the slower search for
the offending index only runs once we already know something is wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calibench.errors import CalibenchError

PROB_TOL = 1e-4  # DESIGN.md: rows of a probability matrix must sum to 1 within this tolerance


def _numeric(x: Any, name: str) -> np.ndarray:
    """``np.asarray`` that rejects non-numeric data (strings, dicts) with a clear message."""
    arr = np.asarray(x)
    if arr.dtype.kind in "biuf":
        return arr
    if arr.ndim == 0:
        raise CalibenchError(f"{name} must be an array of numbers, got {type(x).__name__} {x!r:.60}")
    if arr.dtype.kind == "O":
        try:
            return arr.astype(np.float64)  # None / pd.NA become nan and are reported as such below
        except (TypeError, ValueError) as exc:
            raise CalibenchError(f"{name} must be numeric, {_first_non_numeric(arr, name)}") from exc
    if arr.dtype.kind in "US" and arr.size:
        raise CalibenchError(f"{name} must be numeric, got text such as {str(arr.flat[0])!r}")
    raise CalibenchError(f"{name} must be numeric, got dtype {arr.dtype}")


def _first_non_numeric(arr: np.ndarray, name: str) -> str:
    """Describe the first element of an object array that is not a number (error path only)."""
    for index in np.ndindex(arr.shape):
        value = arr[index]
        try:
            float(value)
        except (TypeError, ValueError):
            where = ", ".join(str(i) for i in index)
            return f"but {name}[{where}] is {value!r}"
    return "got non-numeric values"


def _check_1d(arr: np.ndarray, name: str) -> None:
    if arr.ndim != 1:
        raise CalibenchError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise CalibenchError(f"{name} is empty")


def _describe(value: float) -> str:
    if np.isnan(value):
        return "is nan"
    if np.isinf(value):
        return f"is {'-' if value < 0 else ''}inf"
    return f"= {value:.6g} is outside [0, 1]"


def as_confidence(x: Any, name: str = "confidence") -> np.ndarray:
    """A 1-D float64 array of finite values in [0, 1] (no copy when ``x`` already is one)."""
    arr = _numeric(x, name)
    _check_1d(arr, name)
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = arr.min(), arr.max()
    if not (lo >= 0.0 and hi <= 1.0):  # False for nan and +-inf as well
        bad = ~np.isfinite(arr) | (arr < 0.0) | (arr > 1.0)
        i = int(np.argmax(bad))
        raise CalibenchError(f"{name}[{i}] {_describe(float(arr[i]))}")
    return arr


def as_correct(x: Any, name: str = "correct") -> np.ndarray:
    """A 1-D bool array from booleans or 0/1 numbers; anything else (0.5, nan, 2) is an error."""
    arr = _numeric(x, name)
    _check_1d(arr, name)
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype.kind in "iu":
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi > 1:
            i = int(np.argmax((arr < 0) | (arr > 1)))
            raise CalibenchError(f"{name}[{i}] = {arr[i]} is not 0/1 or a boolean")
        return arr.astype(bool)
    ok = (arr == 0.0) | (arr == 1.0)
    if not ok.all():
        i = int(np.argmax(~ok))
        what = "is nan" if np.isnan(arr[i]) else f"= {arr[i]:.6g} is not 0/1 or a boolean"
        raise CalibenchError(f"{name}[{i}] {what}")
    return arr == 1.0


def as_probs(x: Any, name: str = "probs") -> np.ndarray:
    """An N x K float64 matrix of finite values in [0, 1] whose rows sum to 1 within ``PROB_TOL``."""
    arr = _numeric(x, name)
    if arr.ndim != 2:
        raise CalibenchError(f"{name} must be a 2-D (items x classes) matrix, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise CalibenchError(f"{name} is empty (shape {arr.shape})")
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = arr.min(), arr.max()
    if not (lo >= 0.0 and hi <= 1.0):
        bad = ~np.isfinite(arr) | (arr < 0.0) | (arr > 1.0)
        i, k = (int(v) for v in np.unravel_index(int(np.argmax(bad)), arr.shape))
        raise CalibenchError(f"{name}[{i}, {k}] {_describe(float(arr[i, k]))}")
    sums = arr.sum(axis=1)
    off = np.abs(sums - 1.0) > PROB_TOL
    if off.any():
        i = int(np.argmax(off))
        raise CalibenchError(f"{name} row {i} sums to {sums[i]:.6g}, not 1 (tolerance {PROB_TOL})")
    return arr


def as_labels(x: Any, n_classes: int, name: str = "labels") -> np.ndarray:
    """A 1-D intp array of class indices in ``[0, n_classes)``; floats must be whole numbers."""
    arr = _numeric(x, name)
    _check_1d(arr, name)
    if arr.dtype.kind == "f":
        whole = np.isfinite(arr) & (arr == np.round(arr))
        if not whole.all():
            i = int(np.argmax(~whole))
            what = "is nan" if np.isnan(arr[i]) else f"= {arr[i]:.6g} is not an integer"
            raise CalibenchError(f"{name}[{i}] {what}")
    arr = arr.astype(np.intp)
    out = (arr < 0) | (arr >= n_classes)
    if out.any():
        i = int(np.argmax(out))
        raise CalibenchError(f"{name}[{i}] = {arr[i]} is out of range for {n_classes} classes")
    return arr


def same_length(**arrays: np.ndarray) -> None:
    """Raise if the named arrays do not all have the same number of items."""
    items = list(arrays.items())
    name0, first = items[0]
    for name, arr in items[1:]:
        if len(arr) != len(first):
            raise CalibenchError(f"{name0} has {len(first)} items but {name} has {len(arr)}")


def top_label(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (confidence, correct) pair of equal length."""
    c = as_confidence(confidence)
    y = as_correct(correct)
    same_length(confidence=c, correct=y)
    return c, y


def class_wise(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (probs, labels) pair: N x K probabilities and N labels in [0, K)."""
    p = as_probs(probs)
    lab = as_labels(labels, p.shape[1])
    same_length(probs=p, labels=lab)
    return p, lab


def as_n_bins(n_bins: Any) -> int:
    """A positive integer bin count (bools and floats like 10.5 are rejected)."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise CalibenchError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)
