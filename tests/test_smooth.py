"""Smooth ECE and the smooth reliability curve agree with the reference package relplot."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from calibench.errors import CalibenchError
from calibench.metrics.smooth import (
    smooth_calibration_curve,
    smooth_curve_band,
    smooth_density,
    smooth_ece,
    smooth_ece_replicates,
    smooth_ece_sigma,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import relplot


def _data(kind: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "calibrated":
        c = rng.random(n)
        return c, rng.random(n) < c
    if kind == "overconfident":
        c = rng.beta(5, 1, n)
        return c, rng.random(n) < c**3
    if kind == "ties":  # few distinct values, including exactly 0 and 1
        c = rng.choice([0.0, 0.3, 0.5, 0.9, 1.0], n)
        return c, rng.random(n) < 0.6
    if kind == "all_correct":
        return rng.random(n), np.ones(n, dtype=bool)
    raise AssertionError(kind)


CASES = [(k, n) for k in ("calibrated", "overconfident", "ties") for n in (7, 200, 5000, 40000)]
CASES += [("all_correct", 100)]


@pytest.mark.parametrize(("kind", "n"), CASES)
def test_smooth_ece_matches_relplot(kind: str, n: int) -> None:
    c, y = _data(kind, n, seed=n)
    ref, ref_width = relplot.smECE(c, y.astype(float), return_width=True)
    ours, width = smooth_ece(c, y, return_bandwidth=True)
    assert width == ref_width
    assert ours == pytest.approx(ref, abs=1e-6)


def test_small_bandwidth_uses_finer_grid_and_still_matches() -> None:
    # a large calibrated sample has smECE < 0.01, so the bandwidth search leaves the 1001-point grid
    c, y = _data("calibrated", 300_000, seed=1)
    ref, ref_width = relplot.smECE(c, y.astype(float), return_width=True)
    ours, width = smooth_ece(c, y, return_bandwidth=True)
    assert width < 0.01
    assert width == ref_width
    assert ours == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("sigma", [0.3, 0.05, 0.004])
def test_fixed_bandwidth_matches_relplot(sigma: float) -> None:
    c, y = _data("overconfident", 3000, seed=5)
    assert smooth_ece_sigma(c, y, sigma) == pytest.approx(
        relplot.smECE_sigma(c, y.astype(float), sigma), abs=1e-9
    )


@pytest.mark.parametrize("kind", ["calibrated", "overconfident", "ties"])
def test_curve_and_density_match_relplot_diagram(kind: str) -> None:
    c, y = _data(kind, 2000, seed=3)
    ref = relplot.prepare_rel_diagram(c, y.astype(float), plot_confidence_band=False, report_CE_std=False)
    grid, curve, bandwidth = smooth_calibration_curve(c, y)
    np.testing.assert_allclose(grid, ref["mesh"], atol=0)
    assert bandwidth == ref["sigma"]
    np.testing.assert_allclose(curve, ref["mu"], atol=1e-6)
    np.testing.assert_allclose(smooth_density(c, bandwidth=bandwidth), ref["density"], atol=1e-6)


def test_curve_at_custom_points_equals_the_default_grid_there() -> None:
    c, y = _data("overconfident", 1000, seed=4)
    grid, curve, bandwidth = smooth_calibration_curve(c, y)
    pick = [0, 37, 150, 199]
    g2, c2, b2 = smooth_calibration_curve(c, y, grid=grid[pick])
    assert b2 == bandwidth
    np.testing.assert_allclose(c2, curve[pick], atol=1e-12)


def test_overconfident_model_scores_worse_than_calibrated_one() -> None:
    c, y = _data("calibrated", 20000, seed=2)
    c2, y2 = _data("overconfident", 20000, seed=2)
    assert smooth_ece(c, y) < 0.02
    assert smooth_ece(c2, y2) > 0.1
    # the smooth curve of the calibrated model follows the diagonal in the bulk of the data
    grid, curve, _ = smooth_calibration_curve(c, y)
    inner = (grid > 0.1) & (grid < 0.9)
    assert np.max(np.abs(curve[inner] - grid[inner])) < 0.05


def test_band_brackets_curve_and_narrows_with_more_data() -> None:
    widths = []
    for n in (500, 8000):
        c, y = _data("overconfident", n, seed=6)
        grid, curve, bandwidth = smooth_calibration_curve(c, y)
        low, high = smooth_curve_band(c, y, bandwidth=0.05, n_resamples=100, seed=0)
        _, curve_fixed, _ = smooth_calibration_curve(c, y, bandwidth=0.05)
        dense = smooth_density(c, bandwidth=0.05) > 0.5
        assert np.mean((low[dense] <= curve_fixed[dense]) & (curve_fixed[dense] <= high[dense])) > 0.95
        widths.append(np.mean((high - low)[dense]))
        again = smooth_curve_band(c, y, bandwidth=0.05, n_resamples=100, seed=0)
        np.testing.assert_array_equal(again[0], low)
    assert widths[1] < widths[0] / 2


@pytest.mark.parametrize(
    ("conf", "corr", "match"),
    [
        ([0.2, np.nan], [1, 0], "nan"),
        ([0.2, 1.5], [1, 0], "outside"),
        ([0.2, 0.4], [1, 0, 1], "items"),
        ([], [], "empty"),
        ([0.2, 0.4], [1, 2], "0/1"),
    ],
)
def test_bad_input_raises(conf: list, corr: list, match: str) -> None:
    with pytest.raises(CalibenchError, match=match):
        smooth_ece(conf, corr)


def test_bad_bandwidth_and_grid_raise() -> None:
    with pytest.raises(CalibenchError, match="bandwidth"):
        smooth_calibration_curve([0.5, 0.6], [1, 0], bandwidth=0.0)
    with pytest.raises(CalibenchError, match="grid"):
        smooth_calibration_curve([0.5, 0.6], [1, 0], grid=[0.5, 1.2])
    with pytest.raises(CalibenchError, match="sigma"):
        smooth_ece_sigma([0.5, 0.6], [1, 0], 2.0)


@pytest.mark.parametrize(
    ("conf", "corr"),
    [([0.7], [1]), ([1.0, 1.0, 1.0], [1, 0, 1]), ([0.0, 0.0], [0, 0]), ([0.5] * 10, [1] * 5 + [0] * 5)],
)
def test_edge_cases_match_relplot(conf: list, corr: list) -> None:
    ref, ref_width = relplot.smECE(np.array(conf, float), np.array(corr, float), return_width=True)
    ours, width = smooth_ece(conf, corr, return_bandwidth=True)
    assert (ours, width) == (pytest.approx(ref, abs=1e-12), ref_width)


def test_perfectly_calibrated_ties_score_zero() -> None:
    assert smooth_ece([0.5] * 10, [1] * 5 + [0] * 5) == 0.0
    assert smooth_ece([0.0, 1.0], [0, 1]) == 0.0


def test_bootstrap_helpers_reject_bad_options() -> None:
    with pytest.raises(CalibenchError, match="n_resamples"):
        smooth_curve_band([0.5, 0.6], [1, 0], bandwidth=0.1, n_resamples=0)
    with pytest.raises(CalibenchError, match="level"):
        smooth_curve_band([0.5, 0.6], [1, 0], bandwidth=0.1, level=1.5)
    with pytest.raises(CalibenchError, match="n_resamples"):
        smooth_ece_replicates([0.5, 0.6], [1, 0], n_resamples=2.5)
