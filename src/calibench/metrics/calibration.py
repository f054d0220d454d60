"""Binned calibration errors: ECE, ACE, MCE, RMSCE, SCE / class-wise ECE, and the reliability table.

Conventions (DESIGN.md): ECE = sum over non-empty bins of (n_b / N) * |acc_b - conf_b| with conf_b the
mean confidence in the bin (not the bin midpoint). ACE is ECE over equal-mass bins, MCE the largest
per-bin gap, RMSCE the l2 version sqrt(sum n_b / N * gap_b^2). SCE (Nixon et al. 2019) = class-wise ECE
(Kull et al. 2019) = mean over classes k of the equal-width ECE of P[:, k] against 1[label == k].
Bin rules live in :mod:`calibench.metrics.binning`.

Binned plug-in errors are biased upward in finite samples (a bin's |acc_b - conf_b| is positive even
when the model is calibrated), by roughly sqrt(n_b) noise per bin. Two estimators that correct for it:

- ``debiased_ce``: the debiased l2 calibration error of Kumar et al. 2019 ("Verified Uncertainty
  Calibration"): sqrt(max(0, sum_b n_b / N * [(acc_b - conf_b)^2 - acc_b (1 - acc_b) / (n_b - 1)])),
  bins with fewer than two items contributing 0 -- the ``p=2, debias=True`` estimator of the
  ``uncertainty-calibration`` package (equal-width bins there are its ``get_equal_prob_bins``).
- ``ece_sweep``: the monotonic-sweep ECE of Roelofs et al. 2022 ("Mitigating bias in calibration error
  estimation"): equal-mass ECE with the largest bin count b such that the bin accuracies are
  non-decreasing for every count up to b.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from calibench.errors import CalibenchError
from calibench.metrics._validate import as_n_bins, class_wise, top_label
from calibench.metrics.binning import bin_sums, check_binning, width_sums

NORMS: tuple[str, ...] = ("l1", "l2", "max")


def _from_sums(resid: np.ndarray, counts: np.ndarray | None, n: int, norm: str) -> float:
    """Calibration error from per-bin residual sums resid_b = n_b * (acc_b - conf_b) and counts."""
    if norm == "l1":
        return float(np.abs(resid).sum() / n)
    if counts is None:
        raise TypeError("per-bin counts are needed for the l2 and max norms")
    full = counts > 0
    gap = np.abs(resid[full]) / counts[full]
    if norm == "l2":
        return float(np.sqrt(np.sum(counts[full] * gap**2) / n))
    return float(gap.max())


def ece(
    confidence: Any, correct: Any, *, n_bins: int = 10, binning: str = "width", norm: str = "l1"
) -> float:
    """Expected calibration error of top-label confidences.

    ``binning`` is "width" (equal-width, right-closed) or "mass" (equal-mass); ``norm`` is "l1" (ECE),
    "l2" (RMS calibration error) or "max" (MCE).

    >>> round(ece([0.9, 0.9, 0.6, 0.6], [1, 0, 1, 1]), 6)  # bins (0.8, 0.9]: gap .4, (0.5, 0.6]: gap .4
    0.4
    """
    if norm not in NORMS:
        raise CalibenchError(f"norm must be 'l1', 'l2' or 'max', got {norm!r}")
    binning = check_binning(binning)
    n_bins = as_n_bins(n_bins)
    c, y = top_label(confidence, correct)
    if binning == "width":  # hot path: the l1 norm needs only the residual sums
        resid, counts, _, _ = width_sums(c, y, n_bins, detail=norm != "l1")
    else:
        counts, sum_conf, sum_correct, _ = bin_sums(c, y, n_bins=n_bins, binning=binning)
        resid = sum_correct - sum_conf
    return _from_sums(resid, counts, c.shape[0], norm)


def ace(confidence: Any, correct: Any, *, n_bins: int = 10, norm: str = "l1") -> float:
    """Adaptive calibration error: ECE over equal-mass bins (ties share a bin)."""
    return ece(confidence, correct, n_bins=n_bins, binning="mass", norm=norm)


def mce(confidence: Any, correct: Any, *, n_bins: int = 10, binning: str = "width") -> float:
    """Maximum calibration error: the largest |acc_b - conf_b| over non-empty bins."""
    return ece(confidence, correct, n_bins=n_bins, binning=binning, norm="max")


def rmsce(confidence: Any, correct: Any, *, n_bins: int = 10, binning: str = "width") -> float:
    """Root-mean-square calibration error: sqrt(sum n_b / N * (acc_b - conf_b)^2)."""
    return ece(confidence, correct, n_bins=n_bins, binning=binning, norm="l2")


def sce(probs: Any, labels: Any, *, n_bins: int = 10) -> float:
    """Static calibration error = class-wise ECE: mean over classes of the per-class equal-width ECE.

    Every class column is scored against ``labels == k`` with the same N denominator, so a class that
    is never predicted with high probability still counts (the point of SCE over top-label ECE).
    """
    n_bins = as_n_bins(n_bins)
    p, labels = class_wise(probs, labels)
    total = 0.0
    for k in range(p.shape[1]):
        resid = width_sums(np.ascontiguousarray(p[:, k]), labels == k, n_bins, detail=False).resid
        total += _from_sums(resid, None, p.shape[0], "l1")
    return total / p.shape[1]


classwise_ece = sce


def debiased_from_sums(counts: np.ndarray, sum_correct: np.ndarray, sum_conf: np.ndarray, n: int) -> np.ndarray:
    """Kumar's debiased l2 error from per-bin counts, correct counts and confidence sums (last axis:
    bins; leading axes, e.g. resamples, are kept)."""
    nb = np.asarray(counts, dtype=np.float64)
    used = nb >= 2
    safe = np.where(used, nb, 2.0)
    acc, conf = sum_correct / safe, sum_conf / safe
    term = np.where(used, nb / n * ((acc - conf) ** 2 - acc * (1.0 - acc) / (safe - 1.0)), 0.0)
    return np.sqrt(np.maximum(term.sum(axis=-1), 0.0))


def debiased_ce(confidence: Any, correct: Any, *, n_bins: int = 10, binning: str = "width") -> float:
    """Debiased l2 calibration error (Kumar et al. 2019): the squared plug-in error per bin minus its
    sampling variance acc_b (1 - acc_b) / (n_b - 1), summed with weights n_b / N, clipped at 0, rooted.

    Comparable to ``rmsce`` (same norm), not to ``ece``. Bins with one item carry no variance estimate
    and contribute 0, as in the reference implementation.

    >>> round(debiased_ce([0.9] * 10, [1] * 5 + [0] * 5), 6)  # gap .4, variance .25 / 9
    0.363624
    """
    binning = check_binning(binning)
    n_bins = as_n_bins(n_bins)
    c, y = top_label(confidence, correct)
    counts, sum_conf, sum_correct, _ = bin_sums(c, y, n_bins=n_bins, binning=binning)
    return float(debiased_from_sums(counts, sum_correct, sum_conf, c.shape[0]))


def mass_starts(n: int, b: int) -> np.ndarray:
    """Start positions of ``numpy.array_split(range(n), b)`` and n at the end."""
    q, r = divmod(n, b)
    steps = np.arange(b + 1)
    return steps * q + np.minimum(steps, r)


SWEEP_BATCH = 32  # bin counts tested per batch first; the batch doubles while the accuracies stay monotone


def sweep_count(correct_at: Callable[[np.ndarray], np.ndarray], n: int, batch: int | None = None) -> int:
    """The monotonic sweep's bin count from ``correct_at(p)``, the correct count of the first p sorted items.

    Bin counts are tested in batches (``batch``, then doubling): one ``correct_at`` call gives the edges
    of every count of a batch, so a sweep ending at b costs O(log b) calls instead of b. Each count's
    accuracies are the same float operations as testing it alone (``np.diff`` within its edges)."""
    wrong = n - int(correct_at(np.array([n]))[0])
    if int(correct_at(np.array([wrong]))[0]) == 0:
        return n  # every wrong item precedes every correct one: every count is monotone
    batch = SWEEP_BATCH if batch is None else batch
    lo = 2
    while lo <= n:
        counts = np.arange(lo, min(n, lo + batch - 1) + 1)
        q, r = np.divmod(n, counts)
        sizes = counts + 1
        seg = np.repeat(np.arange(counts.size), sizes)  # which count each edge belongs to
        steps = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        starts = steps * q[seg] + np.minimum(steps, r[seg])  # mass_starts of each count, end to end
        within = seg[1:] == seg[:-1]  # consecutive edges of one count (not the seam between two counts)
        owner = seg[1:][within]  # the count of each bin accuracy
        acc = np.diff(correct_at(starts))[within] / np.diff(starts)[within]
        falls = (np.diff(acc) < 0) & (owner[1:] == owner[:-1])
        if falls.any():  # the smallest count whose accuracies fall ends the sweep one below it
            return int(counts[owner[1:][np.argmax(falls)]]) - 1
        lo = int(counts[-1]) + 1
        batch *= 2
    return n


def sweep_from(correct_at: Callable[[np.ndarray], np.ndarray], conf_at: Callable[[np.ndarray], np.ndarray],
               n: int) -> tuple[float, int]:
    """Monotonic-sweep ECE and its bin count from cumulative sums over the sorted items:
    ``correct_at(p)``/``conf_at(p)`` are the correct count and confidence sum of the first p items.

    The largest b such that every b' <= b equal-mass bins have non-decreasing accuracies
    (``sweep_count``); when every wrong item precedes every correct one (e.g. all correct) every count
    is monotone and the sweep ends at n at once."""
    best = sweep_count(correct_at, n)
    starts = mass_starts(n, best)
    resid = np.diff(correct_at(starts)) - np.diff(conf_at(starts))
    return float(np.abs(resid).sum() / n), best


def sweep_sorted(c: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Monotonic-sweep ECE and its bin count for items already sorted by (confidence, correct)."""
    cum_y = np.concatenate([[0.0], np.cumsum(y, dtype=np.float64)])
    cum_c = np.concatenate([[0.0], np.cumsum(c, dtype=np.float64)])
    return sweep_from(cum_y.__getitem__, cum_c.__getitem__, c.shape[0])


def sweep_bins(confidence: Any, correct: Any) -> int:
    """The bin count of the monotonic sweep: the largest b such that, for every b' <= b, the accuracies
    of b' equal-mass bins (``numpy.array_split`` of the items sorted by confidence, then correctness,
    so the result does not depend on input order) are non-decreasing."""
    c, y = top_label(confidence, correct)
    order = np.lexsort((y, c))
    return sweep_sorted(c[order], y[order])[1]


def ece_sweep(confidence: Any, correct: Any) -> float:
    """Monotonic-sweep ECE (Roelofs et al. 2022): the l1 ECE over ``sweep_bins`` equal-mass bins.

    A calibrated model's bin accuracies rise with confidence; the sweep uses as many bins as keep them
    rising, so noise is not binned into spurious gaps.

    >>> round(ece_sweep([0.2, 0.4, 0.6, 0.8], [0, 0, 1, 1]), 6)  # 4 bins stay monotone: mean |c - y|
    0.3
    """
    c, y = top_label(confidence, correct)
    order = np.lexsort((y, c))
    return sweep_sorted(c[order], y[order])[0]


def reliability_table(
    confidence: Any, correct: Any, *, n_bins: int = 10, binning: str = "width"
) -> pd.DataFrame:
    """One row per bin (empty bins included) for reliability diagrams and reports.

    Columns: ``bin``, ``lower``, ``upper`` (the bin is (lower, upper]; for equal-mass bins these are the
    edges from :func:`~calibench.metrics.binning.assign_bins`), ``count``, ``confidence`` (mean
    confidence), ``accuracy``, ``gap`` = accuracy - confidence (negative means overconfident). Means are
    NaN in empty bins. ``ece`` equals sum(count / N * |gap|) over the table.
    """
    binning = check_binning(binning)
    n_bins = as_n_bins(n_bins)
    c, y = top_label(confidence, correct)
    counts, sum_conf, sum_correct, edges = bin_sums(c, y, n_bins=n_bins, binning=binning)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, sum_conf / counts, np.nan)
        acc = np.where(counts > 0, sum_correct / counts, np.nan)
    return pd.DataFrame(
        {
            "bin": np.arange(n_bins, dtype=np.int64),
            "lower": edges[:-1],
            "upper": edges[1:],
            "count": counts.astype(np.int64),
            "confidence": mean_conf,
            "accuracy": acc,
            "gap": acc - mean_conf,
        }
    )
