"""Bootstrap resampling: the item draws, and per-(resample, group) sums over them.

Every vectorised replicate in :mod:`calibench.metrics` is built from two pieces that live only here:

- ``resample_indices(n, n_resamples, seed)`` draws the item indices of all resamples from one
  ``numpy.random.default_rng(seed)`` in row chunks of about ``CHUNK_ITEMS`` indices (bounded memory).
  The chunk size depends only on ``n``, so the same ``(n, n_resamples, seed)`` always gives the same
  resamples, whichever metric consumes them.
- ``RowKeys``: a chunk's group keys offset by ``row * n_groups``, so that one ``np.bincount`` gives
  the sum (or count) per (resample row, group) for every row at once. A metric whose resamples reduce
  to per-group sums (bins, distinct confidence values, kernel-grid points) needs nothing else.

``fill_rows`` runs a per-chunk kernel over all chunks and collects one value per resample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from calibench.errors import CalibenchError

CHUNK_ITEMS = 1 << 20  # indices drawn per chunk: 4 MB of int32 (+ gathered values) stays near cache


def check_n_resamples(n_resamples: Any) -> int:
    """A positive integer resample count (bools and floats are rejected)."""
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise CalibenchError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    return int(n_resamples)


def chunk_rows(n: int) -> int:
    """Resamples per chunk for ``n`` items (about ``CHUNK_ITEMS`` indices, at least one resample)."""
    return max(1, CHUNK_ITEMS // n)


def resample_indices(n: int, n_resamples: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Yield (rows, n) arrays of item indices drawn with replacement, ``n_resamples`` rows in all."""
    if n < 1:
        raise CalibenchError("cannot bootstrap empty input")
    n_resamples = check_n_resamples(n_resamples)
    rng = np.random.default_rng(seed)
    dtype = np.int32 if n < 2**31 else np.int64
    rows = chunk_rows(n)
    for start in range(0, n_resamples, rows):
        yield rng.integers(0, n, size=(min(rows, n_resamples - start), n), dtype=dtype)


class RowKeys:
    """Group keys of a (rows, m) chunk, offset per row so one ``bincount`` sums every row at once."""

    def __init__(self, keys: np.ndarray, n_groups: int) -> None:
        self.rows = keys.shape[0]
        self.n_groups = n_groups
        offsets = (np.arange(self.rows, dtype=np.int64) * n_groups)[:, None]
        self.flat = (keys + offsets).ravel()

    def sums(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Per (row, group) sum of ``weights`` (shape (rows, m)); item counts (int64) if None."""
        w = None if weights is None else weights.ravel()
        size = self.rows * self.n_groups
        return np.bincount(self.flat, weights=w, minlength=size).reshape(self.rows, self.n_groups)


def fill_rows(
    n: int, n_resamples: int, seed: int, kernel: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """One value per resample: ``kernel(idx)`` maps each (rows, n) index chunk to its ``rows`` values."""
    out = np.empty(check_n_resamples(n_resamples))
    row = 0
    for idx in resample_indices(n, n_resamples, seed):
        out[row : row + idx.shape[0]] = kernel(idx)
        row += idx.shape[0]
    return out
