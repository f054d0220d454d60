"""Bad input is an error naming the problem, never a silent number."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from calibench.errors import CalibenchError
from calibench.metrics import (
    accuracy,
    accuracy_at_coverage,
    ace,
    assign_bins,
    aurc,
    auroc,
    brier,
    brier_top,
    ece,
    mce,
    nll,
    reliability_table,
    rmsce,
    sce,
)

TOP_LABEL = [ece, ace, mce, rmsce, brier_top, auroc, aurc, reliability_table]
CLASS_WISE = [sce, brier, nll]
GOOD_P = [[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]]


@pytest.mark.parametrize("fn", TOP_LABEL)
@pytest.mark.parametrize(
    "confidence, correct, message",
    [
        ([0.1, 0.2, 0.3, float("nan")], [1, 0, 1, 1], "confidence[3] is nan"),
        ([0.1, float("inf"), 0.3], [1, 0, 1], "confidence[1] is inf"),
        ([0.1, 0.2, -0.01], [1, 0, 1], "confidence[2] = -0.01 is outside [0, 1]"),
        ([1.2, 0.2], [1, 0], "confidence[0] = 1.2 is outside [0, 1]"),
        ([0.1, 0.2], [1, 0, 1], "confidence has 2 items but correct has 3"),
        ([], [], "confidence is empty"),
        ([0.1, 0.2], [1, 2], "correct[1] = 2 is not 0/1"),
        ([0.1, 0.2], [1.0, 0.5], "correct[1] = 0.5 is not 0/1"),
        ([0.1, 0.2], [1.0, float("nan")], "correct[1] is nan"),
        ([[0.1, 0.2]], [1], "confidence must be 1-D, got shape (1, 2)"),
        (["a", "b"], [1, 0], "confidence must be numeric"),
        ([0.1, 0.2], ["yes", "no"], "correct must be numeric, got text such as 'yes'"),
        ([0.1, 0.2], [True, None], "correct[1] is nan"),
    ],
)
def test_top_label_bad_input(fn, confidence, correct, message: str) -> None:
    with pytest.raises(CalibenchError, match=re.escape(message)):
        fn(confidence, correct)


@pytest.mark.parametrize("fn", CLASS_WISE)
@pytest.mark.parametrize(
    "probs, labels, message",
    [
        ([[0.7, 0.3], [0.2, 0.77]], [0, 1], "probs row 1 sums to 0.97"),
        ([[0.7, 0.3], [float("nan"), 0.5]], [0, 1], "probs[1, 0] is nan"),
        ([[1.1, -0.1], [0.5, 0.5]], [0, 1], "probs[0, 0] = 1.1 is outside [0, 1]"),
        (GOOD_P, [0, 2, 1], "labels[1] = 2 is out of range for 2 classes"),
        (GOOD_P, [0, -1, 1], "labels[1] = -1 is out of range for 2 classes"),
        (GOOD_P, [0, 1.5, 1], "labels[1] = 1.5 is not an integer"),
        (GOOD_P, [0, 1], "probs has 3 items but labels has 2"),
        ([0.7, 0.3], [0], "probs must be a 2-D (items x classes) matrix"),
        (np.zeros((0, 3)), [], "probs is empty"),
        (GOOD_P, [0, None, 1], "labels[1] is nan"),
    ],
)
def test_class_wise_bad_input(fn, probs, labels, message: str) -> None:
    with pytest.raises(CalibenchError, match=re.escape(message)):
        fn(probs, labels)


def test_row_sum_tolerance_is_1e_4() -> None:
    labels = [0, 1]
    assert brier([[0.70004, 0.3], [0.2, 0.8]], labels) > 0  # off by 4e-5: accepted
    with pytest.raises(CalibenchError, match="probs row 0 sums to 1.0002"):
        brier([[0.7002, 0.3], [0.2, 0.8]], labels)


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True, "10", None])
def test_bad_n_bins(n_bins) -> None:
    with pytest.raises(CalibenchError, match="n_bins must be a positive integer"):
        ece([0.5], [1], n_bins=n_bins)
    with pytest.raises(CalibenchError, match="n_bins must be a positive integer"):
        sce(GOOD_P, [0, 1, 0], n_bins=n_bins)


def test_bad_binning_and_norm() -> None:
    with pytest.raises(CalibenchError, match="binning must be 'width' or 'mass', got 'quantile'"):
        ece([0.5], [1], binning="quantile")
    with pytest.raises(CalibenchError, match="binning must be 'width' or 'mass'"):
        assign_bins([0.5], binning="uniform")
    with pytest.raises(CalibenchError, match="norm must be 'l1', 'l2' or 'max', got 'l3'"):
        ece([0.5], [1], norm="l3")


@pytest.mark.parametrize("coverage", [0, -0.1, 1.01, float("nan"), "half"])
def test_bad_coverage(coverage) -> None:
    with pytest.raises(CalibenchError, match="coverage must be"):
        accuracy_at_coverage([0.5, 0.6], [1, 0], coverage)


def test_accuracy_bad_input() -> None:
    with pytest.raises(CalibenchError, match="correct is empty"):
        accuracy([])
    with pytest.raises(CalibenchError, match=re.escape("correct[0] = 3 is not 0/1")):
        accuracy([3, 1])


def test_pandas_missing_values_are_rejected() -> None:
    with pytest.raises(CalibenchError, match=re.escape("confidence[1] is nan")):
        ece(pd.Series([0.2, None, 0.4]), pd.Series([1, 0, 1]))
    with pytest.raises(CalibenchError, match="correct"):
        ece([0.2, 0.3], pd.Series([True, pd.NA], dtype="boolean"))


def test_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        ece([0.5, 2.0], [1, 1])


def test_inputs_are_not_modified() -> None:
    c = np.array([0.3, 0.9, 0.1, 0.5])
    y = np.array([1, 1, 0, 0])
    before = (c.copy(), y.copy())
    ece(c, y, binning="mass")
    ece(c, y)
    aurc(c, y)
    assert np.array_equal(c, before[0]) and np.array_equal(y, before[1])
