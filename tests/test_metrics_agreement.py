"""Agreement with independent implementations (scikit-learn, plain loops) on random data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from calibench.metrics import aurc, auroc, brier, brier_top, ece, mce, nll, reliability_table, rmsce, sce


def _data(seed: int, n: int = 2000, *, round_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.beta(4, 2, size=n)
    if round_to is not None:  # many values exactly on bin edges, plus 0.0 and 1.0
        c = np.round(c, round_to)
    c[:3] = [0.0, 1.0, 0.3]
    y = rng.random(n) < c**1.5  # overconfident model
    return c, y


def _sklearn_bins(c: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per non-empty bin (accuracy, mean confidence, count) from sklearn's calibration_curve.

    sklearn returns only accuracies and mean confidences; the counts come from the same spec rule
    (searchsorted on the interior edges), computed here independently of calibench's binning code.
    """
    prob_true, prob_pred = calibration_curve(y, c, n_bins=n_bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], c, side="left"), minlength=n_bins)
    counts = counts[counts > 0]
    assert len(counts) == len(prob_true)
    return prob_true, prob_pred, counts


@pytest.mark.parametrize(
    "seed, n_bins, round_to", [(0, 10, None), (1, 15, None), (2, 10, 1), (3, 20, 2), (4, 7, 2)]
)
def test_ece_mce_rmsce_agree_with_sklearn_calibration_curve(
    seed: int, n_bins: int, round_to: int | None
) -> None:
    c, y = _data(seed, round_to=round_to)
    acc, conf, counts = _sklearn_bins(c, y, n_bins)
    w = counts / counts.sum()
    gap = np.abs(acc - conf)
    assert ece(c, y, n_bins=n_bins) == pytest.approx(float(np.sum(w * gap)), abs=1e-12)
    assert mce(c, y, n_bins=n_bins) == pytest.approx(float(gap.max()), abs=1e-12)
    assert rmsce(c, y, n_bins=n_bins) == pytest.approx(float(np.sqrt(np.sum(w * gap**2))), abs=1e-12)
    table = reliability_table(c, y, n_bins=n_bins)
    full = table[table["count"] > 0]
    np.testing.assert_allclose(full["accuracy"], acc, atol=1e-12)
    np.testing.assert_allclose(full["confidence"], conf, atol=1e-12)


def test_ece_agrees_with_plain_loop_on_large_input() -> None:
    """Chunked fast path (several chunks) against a direct per-bin loop."""
    rng = np.random.default_rng(5)
    c = np.round(rng.random(100_003), 3)
    y = rng.random(c.size) < c
    edges = np.linspace(0, 1, 16)
    bins = np.searchsorted(edges[1:-1], c, side="left")
    expected = sum(
        np.sum(bins == b) / c.size * abs(y[bins == b].mean() - c[bins == b].mean())
        for b in range(15)
        if np.any(bins == b)
    )
    assert ece(c, y, n_bins=15) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed, round_to", [(0, None), (1, 1), (2, 2)])
def test_auroc_agrees_with_sklearn_including_ties(seed: int, round_to: int | None) -> None:
    c, y = _data(seed, n=1500, round_to=round_to)
    assert auroc(c, y) == pytest.approx(roc_auc_score(y, c), abs=1e-12)


def test_nll_and_brier_agree_with_sklearn_multiclass() -> None:
    rng = np.random.default_rng(6)
    p = rng.dirichlet([0.5, 1.0, 2.0, 1.0], size=800)
    labels = rng.integers(0, 4, size=800)
    assert nll(p, labels) == pytest.approx(log_loss(labels, p, labels=[0, 1, 2, 3]), rel=1e-10)
    onehot = np.eye(4)[labels]
    assert brier(p, labels) == pytest.approx(float(np.mean(np.sum((p - onehot) ** 2, axis=1))), abs=1e-12)


def test_binary_brier_is_twice_sklearn_brier_score_loss() -> None:
    rng = np.random.default_rng(7)
    p1 = rng.random(500)
    labels = (rng.random(500) < p1).astype(int)
    p = np.column_stack([1 - p1, p1])
    # sklearn's binary Brier scores one column; the multiclass sum counts the error twice
    assert brier(p, labels) == pytest.approx(2 * brier_score_loss(labels, p1), abs=1e-12)
    assert brier_top(p1, labels) == pytest.approx(brier_score_loss(labels, p1), abs=1e-12)


def test_sce_agrees_with_per_class_sklearn_ece() -> None:
    rng = np.random.default_rng(8)
    p = rng.dirichlet([1.0, 1.0, 1.0], size=1000)
    labels = np.array([rng.choice(3, p=row) for row in p**2 / (p**2).sum(axis=1, keepdims=True)])
    per_class = []
    for k in range(3):
        acc, conf, counts = _sklearn_bins(p[:, k], labels == k, 10)
        per_class.append(float(np.sum(counts / counts.sum() * np.abs(acc - conf))))
    assert sce(p, labels) == pytest.approx(np.mean(per_class), abs=1e-12)


def test_aurc_agrees_with_direct_sum_without_ties() -> None:
    rng = np.random.default_rng(9)
    c = rng.permutation(np.linspace(0.01, 0.99, 400))  # distinct
    y = rng.random(400) < c
    order = np.argsort(-c)
    errors = np.cumsum(~y[order])
    expected = np.mean(errors / np.arange(1, 401))
    assert aurc(c, y) == pytest.approx(expected, abs=1e-12)
