"""Intervals and p-values from bootstrap replicates: BCa (the default) and percentile.

Why not plain percentiles: a binned calibration error is biased upward in finite samples, and its
bootstrap replicates are biased upward again, so the percentile interval of the plug-in estimate sits
to the right of it (``ECE 0.0216 [0.0231, 0.0602]``). The bias-corrected and accelerated interval
(BCa, Efron 1987) moves both endpoints by the share of replicates below the estimate.

BCa, with R finite replicates ``t*``, estimate ``t`` and level ``1 - 2 alpha``:

- ``z0 = Phi^-1((#{t* < t} + #{t* = t} / 2) / R)``, the share clipped to [1 / (2R), 1 - 1 / (2R)];
- acceleration ``a = sum d^3 / (6 (sum d^2)^1.5)``, ``d = mean(t_(j)) - t_(j)`` over a delete-block
  jackknife: items split into ``min(n, JACKKNIFE_BLOCKS)`` blocks by ``i mod blocks``, each left out
  once (block pseudo-values estimate the same ``a`` as delete-one ones, at a fixed cost). Above
  ``JACKKNIFE_MAX_ITEMS`` items ``a = 0`` (it shrinks like 1/sqrt(n); the interval is then the
  bias-corrected percentile interval);
- endpoints: the percentiles ``Phi(z0 + (z0 + z) / (1 - a (z0 + z)))`` for ``z = Phi^-1(alpha)`` and
  ``Phi^-1(1 - alpha)`` (numpy's linear interpolation, as for the percentile interval).

When fewer than ``alpha`` of the replicates fall on one side of the estimate (|z0| > 1.96 at 95%, e.g.
a calibrated model whose every resample has a larger ECE), BCa's interval can exclude the estimate. It
is then widened to reach the estimate and marked (``Interval.widened``), so no default interval ever
excludes its own estimate. The percentile interval is returned as computed (on request only).

Paired p-value (two-sided, H0: delta = 0), from the same replicates as the interval, ties at 0 counted
half: ``L = (#{d* < 0} + #{d* = 0} / 2) / R``, ``p = min(1, 2 min(L, 1 - L))``. For the percentile
interval, p < 1 - level exactly when fewer than a share (1 - level) / 2 of the replicates (ties half)
lie on one side of 0, i.e. when 0 is outside the interval or (only with ties at 0) at its endpoint;
``paired_delta`` p-values are tested against that on discrete (accuracy) deltas. Under BCa the
endpoints are percentiles at shifted levels, so the interval excludes 0 iff ``L`` is below the lower
adjusted level or above the upper one: p and the BCa interval agree when z0 and a are near 0 and can
disagree near the boundary otherwise (the p-value is the percentile-method test).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from calibench.errors import CalibenchError

CI_METHODS: tuple[str, ...] = ("bca", "percentile")
DEFAULT_CI = "bca"
JACKKNIFE_BLOCKS = 50
JACKKNIFE_MAX_ITEMS = 20_000


@dataclass(frozen=True)
class Interval:
    """Interval endpoints, and whether BCa's interval was widened to reach the estimate."""

    low: float
    high: float
    widened: bool = False


def check_ci(ci: Any) -> str:
    """Return ``ci`` if it is a known interval method, else raise naming the choices."""
    if ci not in CI_METHODS:
        raise CalibenchError(f"ci must be one of {', '.join(CI_METHODS)}, got {ci!r}")
    return str(ci)


def _finite(replicates: np.ndarray) -> np.ndarray:
    reps = np.asarray(replicates, dtype=np.float64)
    return reps[~np.isnan(reps)]


def percentile(replicates: np.ndarray, level: float) -> tuple[float, float]:
    """The percentile interval at ``level``, leaving out undefined (NaN) replicates."""
    finite = _finite(replicates)
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bias_correction(replicates: np.ndarray, estimate: float) -> float:
    """BCa's z0: the normal quantile of the share of replicates below the estimate (ties half)."""
    finite = _finite(replicates)
    r = finite.size
    share = (np.count_nonzero(finite < estimate) + 0.5 * np.count_nonzero(finite == estimate)) / r
    share = min(max(share, 0.5 / r), 1.0 - 0.5 / r)
    return float(ndtri(share))


def acceleration(values: np.ndarray) -> float:
    """BCa's acceleration from jackknife values (NaN ones left out; 0 when they do not vary)."""
    v = _finite(values)
    if v.size < 3:
        return 0.0
    d = v.mean() - v
    denom = 6.0 * float(np.sum(d**2)) ** 1.5
    return float(np.sum(d**3) / denom) if denom > 0 else 0.0


def jackknife_blocks(n: int, max_blocks: int = JACKKNIFE_BLOCKS) -> list[np.ndarray]:
    """Index arrays of the items kept by each delete-block jackknife fit (block j = {i : i mod g = j})."""
    g = min(n, max_blocks)
    block = np.arange(n) % g
    return [np.flatnonzero(block != j) for j in range(g)] if g >= 2 else []


def jackknife_acceleration(func: Callable[..., float], arrays: Sequence[Any],
                           max_blocks: int = JACKKNIFE_BLOCKS, max_items: int = JACKKNIFE_MAX_ITEMS) -> float:
    """BCa's acceleration of ``func(*arrays)`` from a delete-block jackknife (0 above ``max_items``)."""
    data = [np.asarray(a) for a in arrays]
    n = data[0].shape[0]
    if n > max_items:
        return 0.0
    values = np.array([func(*(a[keep] for a in data)) for keep in jackknife_blocks(n, max_blocks)],
                      dtype=np.float64)
    return acceleration(values)


def bca(replicates: np.ndarray, estimate: float, level: float, accel: float = 0.0) -> tuple[float, float]:
    """The BCa endpoints (NaN when no replicate or the estimate is undefined)."""
    finite = _finite(replicates)
    if finite.size == 0 or not np.isfinite(estimate):
        return float("nan"), float("nan")
    z0 = bias_correction(finite, estimate)
    alpha = (1.0 - level) / 2.0
    z = ndtri(np.array([alpha, 1.0 - alpha]))
    shifted = z0 + z
    levels = ndtr(z0 + shifted / (1.0 - accel * shifted))
    low, high = np.quantile(finite, np.clip(levels, 0.0, 1.0))
    return float(low), float(high)


def interval(replicates: np.ndarray, estimate: float, level: float, method: str = DEFAULT_CI,
             accel: float = 0.0) -> Interval:
    """The ``method`` interval of the replicates; BCa's is widened (and marked) to reach the estimate."""
    method = check_ci(method)
    if method == "percentile":
        return Interval(*percentile(replicates, level))
    low, high = bca(replicates, estimate, level, accel)
    if np.isfinite(estimate) and np.isfinite(low) and not low <= estimate <= high:
        return Interval(min(low, estimate), max(high, estimate), widened=True)
    return Interval(low, high)


def p_value(replicates: np.ndarray) -> float:
    """Two-sided p-value of H0: delta = 0 from replicated deltas, ties at 0 counted half (NaN if none)."""
    finite = _finite(replicates)
    if finite.size == 0:
        return float("nan")
    below = (np.count_nonzero(finite < 0) + 0.5 * np.count_nonzero(finite == 0)) / finite.size
    return float(min(1.0, 2.0 * min(below, 1.0 - below)))
