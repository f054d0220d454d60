"""Recalibration: known temperature recovered, ECE reduced out of fold, no item scored by its own fit."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from calibench.errors import CalibenchError
from calibench.metrics.calibration import ece
from calibench.recalibrate import (
    CALIBRATORS,
    HistogramBinning,
    IsotonicCalibration,
    PlattScaling,
    TemperatureScaling,
    cross_fit,
    fold_ids,
    get_calibrator,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _overconfident_probs(n: int, k: int, true_t: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); the model reports softmax(true_t * z), i.e. over-confident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 1.5
    truth = _softmax(z)
    labels = (rng.random(n)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1)
    return _softmax(true_t * z), labels


def _top(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return probs.max(axis=1), probs.argmax(axis=1) == labels


def test_temperature_recovers_known_temperature() -> None:
    probs, labels = _overconfident_probs(8000, 5, true_t=2.0, seed=0)
    t = TemperatureScaling().fit(probs, labels).temperature
    assert t == pytest.approx(2.0, rel=0.1)
    under, labels2 = _overconfident_probs(8000, 5, true_t=0.5, seed=1)
    assert TemperatureScaling().fit(under, labels2).temperature == pytest.approx(0.5, rel=0.1)


def test_temperature_keeps_predictions_and_rows_normalised() -> None:
    probs, labels = _overconfident_probs(500, 4, true_t=3.0, seed=2)
    probs[0] = [1.0, 0.0, 0.0, 0.0]  # zeros are clipped before the log, not -inf
    out = TemperatureScaling().fit(probs, labels).transform(probs)
    np.testing.assert_array_equal(out.argmax(axis=1), probs.argmax(axis=1))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(out.max(axis=1) <= probs.max(axis=1) + 1e-12)  # T > 1 softens


def test_fit_on_one_split_transform_another() -> None:
    probs, labels = _overconfident_probs(6000, 4, true_t=2.5, seed=3)
    c, y = _top(probs, labels)
    fit, test = slice(0, 3000), slice(3000, None)
    before = ece(c[test], y[test])
    assert before > 0.1
    for name in ("platt", "histogram", "isotonic"):
        calibrator = get_calibrator(name).fit(c[fit], y[fit])
        assert ece(calibrator.transform(c[test]), y[test]) < before / 3, name
    temp = get_calibrator("temperature").fit(probs[fit], labels[fit])
    new_c, new_y = _top(temp.transform(probs[test]), labels[test])
    np.testing.assert_array_equal(new_y, y[test])
    assert ece(new_c, new_y) < before / 3


@pytest.mark.parametrize("name", list(CALIBRATORS))
def test_cross_fit_reduces_ece_out_of_fold(name: str) -> None:
    probs, labels = _overconfident_probs(4000, 4, true_t=2.0, seed=4)
    c, y = _top(probs, labels)
    result = cross_fit(name, confidence=c, correct=y, probs=probs, labels=labels, n_folds=5, seed=0)
    assert ece(result["confidence"], result["correct"]) < ece(c, y) / 3
    assert np.all((result["confidence"] >= 0) & (result["confidence"] <= 1))
    np.testing.assert_array_equal(result["correct"], y)
    assert len(result["params"]) == 5
    if name == "temperature":
        np.testing.assert_allclose(result["confidence"], result["probs"].max(axis=1))
        assert all(p["temperature"] == pytest.approx(2.0, rel=0.15) for p in result["params"])


class Memoriser:
    """Answers 1.0 for any confidence it was fitted on, 0.0 otherwise: a leak shows up as a 1."""

    inputs: ClassVar[str] = "confidence"

    def fit(self, confidence: np.ndarray, correct: np.ndarray) -> Memoriser:
        self.seen = set(np.asarray(confidence).tolist())
        return self

    def transform(self, confidence: np.ndarray) -> np.ndarray:
        return np.array([1.0 if v in self.seen else 0.0 for v in np.asarray(confidence).tolist()])


def test_cross_fit_never_scores_an_item_with_a_model_fitted_on_it() -> None:
    rng = np.random.default_rng(5)
    c = rng.permutation(np.linspace(0.01, 0.99, 503))  # distinct values identify the items
    y = rng.random(503) < c
    result = cross_fit(Memoriser, confidence=c, correct=y, n_folds=7, seed=3)
    np.testing.assert_array_equal(result["confidence"], 0.0)
    # and every fold's model did see the other folds: scoring the fitting items would give all ones
    folds = result["fold"]
    assert np.bincount(folds).tolist() == [72] * 6 + [71]
    assert Memoriser().fit(c[folds != 0], y[folds != 0]).transform(c[folds != 0]).all()


def test_folds_are_balanced_and_seeded() -> None:
    folds = fold_ids(103, 5, seed=1)
    assert np.ptp(np.bincount(folds)) <= 1
    np.testing.assert_array_equal(folds, fold_ids(103, 5, seed=1))
    assert not np.array_equal(folds, fold_ids(103, 5, seed=2))


def test_isotonic_is_monotone_and_histogram_is_piecewise_constant() -> None:
    probs, labels = _overconfident_probs(3000, 3, true_t=2.0, seed=6)
    c, y = _top(probs, labels)
    grid = np.linspace(0, 1, 501)
    iso = IsotonicCalibration().fit(c, y).transform(grid)
    assert np.all(np.diff(iso) >= 0)
    hist = HistogramBinning(n_bins=8).fit(c, y)
    assert len(np.unique(hist.transform(grid))) <= 8
    # each bin maps to the accuracy of its fitting items
    edges = hist.edges
    first_bin = c <= edges[0]
    assert hist.transform(c[first_bin])[0] == pytest.approx(y[first_bin].mean())


def test_platt_recovers_a_logistic_miscalibration() -> None:
    rng = np.random.default_rng(7)
    c = rng.uniform(0.05, 0.95, 20000)
    logit = np.log(c / (1 - c))
    y = rng.random(c.size) < 1 / (1 + np.exp(-(0.5 * logit - 0.3)))
    platt = PlattScaling().fit(c, y)
    a, b = platt.coef
    assert a == pytest.approx(0.5, abs=0.05)
    assert b == pytest.approx(-0.3, abs=0.05)


def test_errors() -> None:
    for name in CALIBRATORS:
        with pytest.raises(CalibenchError, match="not fitted"):
            get_calibrator(name).transform(np.array([[0.5, 0.5]]) if name == "temperature" else [0.5])
    with pytest.raises(CalibenchError, match="unknown calibrator"):
        get_calibrator("magic")
    with pytest.raises(CalibenchError, match="unknown calibrator"):
        cross_fit("magic", confidence=[0.5, 0.6], correct=[1, 0])
    with pytest.raises(CalibenchError, match="both correct and incorrect"):
        PlattScaling().fit([0.5, 0.6, 0.7], [1, 1, 1])
    with pytest.raises(CalibenchError, match="needs probs and labels"):
        cross_fit("temperature", confidence=[0.5, 0.6], correct=[1, 0])
    with pytest.raises(CalibenchError, match="n_folds"):
        cross_fit("platt", confidence=[0.5, 0.6, 0.7], correct=[1, 0, 1], n_folds=1)
    with pytest.raises(CalibenchError, match="at least n_folds"):
        cross_fit("platt", confidence=[0.5, 0.6, 0.7], correct=[1, 0, 1], n_folds=5)
    with pytest.raises(CalibenchError):
        IsotonicCalibration().fit([0.5, np.nan], [1, 0])
    with pytest.raises(CalibenchError, match="sums to"):
        TemperatureScaling().fit([[0.5, 0.6]], [0])
    with pytest.raises(CalibenchError, match="n_bins"):
        HistogramBinning(n_bins=0)
