"""Proper scores, discrimination and selective prediction.

Conventions (DESIGN.md):

- ``brier``: multiclass Brier = mean over items of sum_k (P_ik - 1[label == k])^2, range [0, 2].
- ``brier_top``: mean (c - y)^2 over top-label confidences.
- ``nll``: -mean log P[i, label_i], probabilities clipped at 1e-12 (a confident miss costs ~27.6, not inf).
- ``auroc``: probability that a correct item has a higher confidence than an incorrect one, ties
  counting 1/2 (the Mann-Whitney statistic from average ranks). Undefined when every item is correct
  or every item is wrong: returns NaN then (documented, not an error, so a bootstrap resample or a
  perfect model still gives a table row).
- ``aurc``: area under the risk-coverage curve. Items are accepted in order of decreasing confidence;
  items with equal confidence are accepted together (a threshold cannot split them), so each item is
  charged the risk (error rate) of the accepted set at the end of its tie group. Without ties this is
  the usual (1/N) * sum_k risk(top k). Independent of input order.
- ``accuracy_at_coverage``: accuracy on the ceil(coverage * N) most confident items; when the cut
  falls inside a tie group, that group contributes its mean accuracy for the places it fills (the
  expected value under random tie-breaking, so again independent of input order).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from calibench.errors import CalibenchError
from calibench.metrics._validate import as_correct, class_wise, top_label
from calibench.metrics.binning import tie_spans

NLL_CLIP = 1e-12


def accuracy(correct: Any) -> float:
    """Fraction of correct items."""
    return float(np.mean(as_correct(correct)))


def accuracy_losses(correct: np.ndarray) -> np.ndarray:
    """Per-item values whose mean is ``accuracy`` (validated bools as 0.0/1.0)."""
    return correct.astype(np.float64)


def brier_losses(p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-item multiclass Brier terms of validated inputs: sum_k (p_k - onehot_k)^2."""
    rows = np.arange(p.shape[0])
    # sum_k (p_k - onehot_k)^2 = sum_k p_k^2 - 2 p_label + 1
    return np.einsum("ij,ij->i", p, p) - 2.0 * p[rows, labels] + 1.0


def brier(probs: Any, labels: Any) -> float:
    """Multiclass Brier score in [0, 2] (sum over classes, mean over items)."""
    return float(np.mean(brier_losses(*class_wise(probs, labels))))


def brier_top_losses(c: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-item top-label Brier terms (c - y)^2 of validated inputs."""
    return (c - y) ** 2


def brier_top(confidence: Any, correct: Any) -> float:
    """Top-label Brier score: mean (confidence - correct)^2, range [0, 1]."""
    return float(np.mean(brier_top_losses(*top_label(confidence, correct))))


def nll_losses(p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-item -log P[i, label_i] of validated inputs, probabilities clipped at ``NLL_CLIP``."""
    gold = p[np.arange(p.shape[0]), labels]
    return 0.0 - np.log(np.maximum(gold, NLL_CLIP))  # 0.0 - x: no "-0.0" when perfect


def nll(probs: Any, labels: Any) -> float:
    """Negative log-likelihood of the gold class, probabilities clipped at 1e-12."""
    return float(np.mean(nll_losses(*class_wise(probs, labels))))


def auroc(confidence: Any, correct: Any) -> float:
    """P(conf of a correct item > conf of a wrong one), ties 1/2; NaN if only one outcome occurs."""
    c, y = top_label(confidence, correct)
    n_pos = int(np.count_nonzero(y))
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    u = _average_ranks(c)[y].sum() - n_pos * (n_pos + 1) / 2.0  # Mann-Whitney U of the correct items
    return float(u / (n_pos * n_neg))


def _average_ranks(c: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank, so a correct/wrong tie counts 1/2 in the U.

    (Written with numpy instead of ``scipy.stats.rankdata`` to keep ``import calibench.metrics`` light.)
    """
    order = np.argsort(c)
    first, last = tie_spans(c[order])
    ranks = np.empty(c.shape[0], dtype=np.float64)
    ranks[order] = (first + last) / 2.0 + 1.0
    return ranks


def _desc_with_groups(c: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort by decreasing confidence; return correctness in that order and each position's tie-group end."""
    order = np.argsort(-c)
    _, last = tie_spans(c[order])  # last sorted position with the same confidence
    return y[order], last


def aurc(confidence: Any, correct: Any) -> float:
    """Area under the risk-coverage curve (lower is better; ties accepted together)."""
    c, y = top_label(confidence, correct)
    ys, ends = _desc_with_groups(c, y)
    errors = np.cumsum(~ys)
    risk_at_end = errors / np.arange(1, ys.shape[0] + 1)
    return float(np.mean(risk_at_end[ends]))


def accuracy_at_coverage(confidence: Any, correct: Any, coverage: float) -> float:
    """Accuracy on the most confident ``coverage`` fraction of items (0 < coverage <= 1)."""
    try:
        cov = float(coverage)
    except (TypeError, ValueError) as exc:
        raise CalibenchError(f"coverage must be a number in (0, 1], got {coverage!r}") from exc
    if not 0.0 < cov <= 1.0:
        raise CalibenchError(f"coverage must be in (0, 1], got {coverage!r}")
    c, y = top_label(confidence, correct)
    n = c.shape[0]
    k = min(n, max(1, math.ceil(cov * n - 1e-9)))  # tolerance: 0.3 * 10 must mean 3 items, not 4
    threshold = np.partition(c, n - k)[n - k]  # k-th largest confidence
    above = c > threshold
    tied = c == threshold
    n_above = int(np.count_nonzero(above))
    hits_tied = float(np.count_nonzero(y & tied))
    need = k - n_above  # places filled from the tie group, 1 <= need <= group size
    total = float(np.count_nonzero(y & above)) + need * hits_tied / np.count_nonzero(tied)
    return total / k
