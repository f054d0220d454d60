"""Bootstrap CIs and paired deltas: coverage, equality with a naive loop, p-values, item matching."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from calibench.errors import CalibenchError
from calibench.metrics.bootstrap import (
    CI,
    bootstrap_ci,
    bootstrap_replicates,
    paired_delta,
    resample_indices,
)
from calibench.metrics.calibration import ace, ece, mce, rmsce, sce
from calibench.metrics.scores import accuracy, aurc, auroc, brier, brier_top, nll
from calibench.metrics.smooth import smooth_ece


def _overconfident(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Confidence ~ U(0, 1) and P(correct | c) = c^2: the gap c - c^2 never changes sign."""
    c = rng.random(n)
    return c, rng.random(n) < c**2


# With P(correct | c) = c^2 the gap has one sign in every bin, so the population ECE over any
# equal-width binning is the integral of c - c^2 over [0, 1] = 1/6.
TRUE_ECE = 1.0 / 6.0


def test_ci_covers_true_ece_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(2024)
    covered = 0
    sims = 200
    for sim in range(sims):
        c, y = _overconfident(1500, rng)
        ci = bootstrap_ci(ece, c, y, n_resamples=400, level=0.95, seed=sim)
        covered += ci.low <= TRUE_ECE <= ci.high
    print(f"coverage {covered / sims:.3f}")
    assert 0.88 <= covered / sims <= 0.99


def _probs(n: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    logits = rng.normal(size=(n, k)) * 2
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return p, rng.integers(0, k, n)


@pytest.mark.parametrize(
    ("metric", "kwargs"),
    [
        (ece, {}),
        (ece, {"n_bins": 15, "norm": "l2"}),
        (ece, {"norm": "max", "n_bins": 4}),
        (mce, {}),
        (rmsce, {"n_bins": 7}),
        (brier_top, {}),
        (ace, {"n_bins": 5}),
        (ace, {"norm": "l2"}),
        (ece, {"binning": "mass", "n_bins": 6}),
        (ece, {"binning": "mass", "norm": "max"}),
        (mce, {"binning": "mass", "n_bins": 20}),
        (auroc, {}),
        (aurc, {}),
    ],
)
def test_vectorised_replicates_equal_naive_loop(metric, kwargs) -> None:
    rng = np.random.default_rng(0)
    c, y = _overconfident(257, rng)
    c[:5] = [0.0, 1.0, 0.3, 0.3, 0.7]  # bin edges and ties
    fast = bootstrap_replicates(metric, c, y, n_resamples=60, seed=11, **kwargs)
    naive = [metric(c[i], y[i], **kwargs) for chunk in resample_indices(len(c), 60, 11) for i in chunk]
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("metric", "kwargs", "n"),
    [
        (auroc, {}, 400),
        (aurc, {}, 400),
        (ace, {}, 400),
        (ace, {"n_bins": 15}, 9),
        (rmsce, {"binning": "mass"}, 400),
    ],
)
def test_vectorised_rank_and_mass_metrics_with_heavy_ties_equal_naive_loop(metric, kwargs, n) -> None:
    rng = np.random.default_rng(16)
    c = np.round(rng.random(n), 1)  # at most 11 distinct values: ties everywhere
    y = rng.random(n) < c
    fast = bootstrap_replicates(metric, c, y, n_resamples=50, seed=6, **kwargs)
    naive = [metric(c[i], y[i], **kwargs) for chunk in resample_indices(n, 50, 6) for i in chunk]
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("metric", "kwargs"), [(brier, {}), (nll, {}), (sce, {}), (sce, {"n_bins": 7})])
def test_vectorised_class_wise_metrics_equal_naive_loop(metric, kwargs) -> None:
    p, labels = _probs(300, 4, np.random.default_rng(1))
    p[0] = [1.0, 0.0, 0.0, 0.0]
    labels[0] = 2  # a confident miss: nll clips at 1e-12
    fast = bootstrap_replicates(metric, p, labels, n_resamples=50, seed=2, **kwargs)
    naive = [metric(p[i], labels[i], **kwargs) for chunk in resample_indices(300, 50, 2) for i in chunk]
    np.testing.assert_allclose(fast, naive, rtol=1e-12, atol=1e-12)


def test_accuracy_replicates_equal_naive_loop() -> None:
    y = np.random.default_rng(3).random(1000) < 0.7
    fast = bootstrap_replicates(accuracy, y, n_resamples=30, seed=5)
    naive = [y[i].mean() for chunk in resample_indices(1000, 30, 5) for i in chunk]
    np.testing.assert_allclose(fast, naive, atol=1e-15)


def test_resamples_come_in_bounded_chunks_and_repeat_with_the_seed() -> None:
    from calibench.metrics.bootstrap import CHUNK_ITEMS

    n = CHUNK_ITEMS // 3 + 1  # two resamples per chunk
    chunks = list(resample_indices(n, 5, seed=4))
    assert [c.shape for c in chunks] == [(2, n), (2, n), (1, n)]
    assert all(c.min() >= 0 and c.max() < n for c in chunks)
    again = list(resample_indices(n, 5, seed=4))
    assert all(np.array_equal(a, b) for a, b in zip(chunks, again, strict=True))


def test_ci_is_deterministic_and_depends_on_seed() -> None:
    c, y = _overconfident(2000, np.random.default_rng(7))
    a = bootstrap_ci(ece, c, y, n_resamples=300, seed=1)
    assert a == bootstrap_ci(ece, c, y, n_resamples=300, seed=1)
    assert a != bootstrap_ci(ece, c, y, n_resamples=300, seed=2)
    assert isinstance(a, CI)
    assert a.low < a.estimate < a.high
    assert a.estimate == ece(c, y)


def test_names_partials_and_kwargs_agree() -> None:
    c, y = _overconfident(800, np.random.default_rng(8))
    by_name = bootstrap_ci("ece", c, y, n_resamples=200, n_bins=15)
    by_partial = bootstrap_ci(functools.partial(ece, n_bins=15), c, y, n_resamples=200)
    by_lambda = bootstrap_ci(lambda a, b: ece(a, b, n_bins=15), c, y, n_resamples=200)  # generic loop path
    assert by_name == by_partial
    assert by_lambda.estimate == by_name.estimate
    assert by_lambda.low == pytest.approx(by_name.low, abs=1e-12)
    assert by_lambda.high == pytest.approx(by_name.high, abs=1e-12)


def test_ci_narrows_like_one_over_sqrt_n() -> None:
    rng = np.random.default_rng(9)
    small = bootstrap_ci(brier_top, *_overconfident(1000, rng), n_resamples=500)
    large = bootstrap_ci(brier_top, *_overconfident(16000, rng), n_resamples=500)
    ratio = (small.high - small.low) / (large.high - large.low)
    assert 3.0 < ratio < 5.5  # sqrt(16) = 4


def test_generic_metric_with_undefined_resamples_is_ignored_not_fatal() -> None:
    c = np.array([0.9, 0.8, 0.7, 0.2])
    y = np.array([True, True, True, False])  # many resamples have no wrong item: auroc is NaN there
    ci = bootstrap_ci(auroc, c, y, n_resamples=200)
    assert ci.estimate == 1.0
    assert 0.0 <= ci.low <= ci.high <= 1.0


@pytest.mark.parametrize("n", [40, 700])
def test_vectorised_smooth_ece_replicates_equal_naive_loop(n: int) -> None:
    c, y = _overconfident(n, np.random.default_rng(10))
    fast = bootstrap_replicates(smooth_ece, c, y, n_resamples=40, seed=4)
    naive = [smooth_ece(c[i], y[i]) for chunk in resample_indices(n, 40, 4) for i in chunk]
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-10)
    ci = bootstrap_ci(smooth_ece, c, y, n_resamples=40, seed=4)
    assert ci.low < ci.high


def test_vectorised_smooth_ece_with_small_bandwidths_equals_naive_loop() -> None:
    # a large calibrated sample has bandwidths below 0.01, which use finer kernel grids
    rng = np.random.default_rng(15)
    c = rng.random(120_000)
    y = rng.random(c.size) < c
    fast = bootstrap_replicates(smooth_ece, c, y, n_resamples=3, seed=1)
    naive = [smooth_ece(c[i], y[i], return_bandwidth=True) for i in next(resample_indices(c.size, 3, 1))]
    assert max(width for _, width in naive) < 0.01
    np.testing.assert_allclose(fast, [value for value, _ in naive], rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"level": 1.0}, "level"), ({"n_resamples": 0}, "n_resamples"), ({"n_resamples": 2.5}, "n_resamples")],
)
def test_bad_options_raise(kwargs, match) -> None:
    with pytest.raises(CalibenchError, match=match):
        bootstrap_ci(ece, [0.5, 0.6], [1, 0], **kwargs)


def test_bad_arrays_raise() -> None:
    with pytest.raises(CalibenchError):
        bootstrap_ci(ece, [0.5, 0.6], [1, 0, 1])
    with pytest.raises(CalibenchError, match="unknown metric"):
        bootstrap_ci("nope", [0.5], [1])
    with pytest.raises(CalibenchError):
        bootstrap_ci(ece, [0.5, np.nan], [1, 0])


# ---------------------------------------------------------------- paired deltas


def _run(c: np.ndarray, y: np.ndarray, ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
    ids = np.array([f"q{i}" for i in range(len(c))]) if ids is None else ids
    return {"item_id": ids, "confidence": c, "correct": y}


def test_paired_delta_detects_a_real_difference_and_not_a_null_one() -> None:
    rng = np.random.default_rng(11)
    significant_real, significant_null = 0, 0
    sims = 40
    for sim in range(sims):
        n = 2000
        c = rng.uniform(0.3, 1.0, n)
        y = rng.random(n) < c  # run a: calibrated
        # null: run b is another draw of an equally calibrated model on the same items
        y_null = rng.random(n) < c
        # real: run b is over-confident by 0.15 on the same items
        c_over = np.clip(c + 0.15, 0, 1)
        a = _run(c, y)
        significant_null += paired_delta(ece, a, _run(c, y_null), n_resamples=300, seed=sim).p_value < 0.05
        real = paired_delta(ece, a, _run(c_over, y), n_resamples=300, seed=sim)
        significant_real += real.p_value < 0.05
    assert significant_real >= 0.9 * sims
    assert significant_null <= 0.15 * sims


def test_identical_runs_give_zero_delta_and_p_one() -> None:
    c, y = _overconfident(300, np.random.default_rng(12))
    result = paired_delta("ece", _run(c, y), _run(c, y), n_resamples=200)
    assert result.delta == 0.0
    assert (result.low, result.high, result.p_value, result.n) == (0.0, 0.0, 1.0, 300)


def test_paired_delta_matches_items_by_id_not_by_row_order() -> None:
    rng = np.random.default_rng(13)
    c, y = _overconfident(400, rng)
    c2 = np.clip(c * 1.1, 0, 1)
    ordered = paired_delta(ece, _run(c, y), _run(c2, y), n_resamples=200, seed=3)
    perm = rng.permutation(400)
    b = pd.DataFrame(_run(c2, y)).iloc[perm]
    shuffled = paired_delta(ece, _run(c, y), b, n_resamples=200, seed=3)
    assert shuffled == ordered
    assert ordered.delta == pytest.approx(ece(c2, y) - ece(c, y), abs=1e-15)
    fine = paired_delta("ece", _run(c, y), b, n_resamples=50, n_bins=15)
    assert fine.delta == pytest.approx(ece(c2, y, n_bins=15) - ece(c, y, n_bins=15), abs=1e-15)


def test_paired_delta_on_record_tables_with_class_wise_metric() -> None:
    from calibench.records import make_records

    rng = np.random.default_rng(14)
    p, labels = _probs(200, 3, rng)
    sharp = p**3 / (p**3).sum(axis=1, keepdims=True)

    def records(probs: np.ndarray) -> pd.DataFrame:
        return make_records(
            {
                "item_id": f"i{i}",
                "probs": list(row),
                "label": int(lab),
                "confidence": row.max(),
                "correct": bool(row.argmax() == lab),
            }
            for i, (row, lab) in enumerate(zip(probs, labels, strict=True))
        )

    result = paired_delta("brier", records(p), records(sharp), n_resamples=200)
    assert result.delta == pytest.approx(brier(sharp, labels) - brier(p, labels), abs=1e-12)
    assert 0.0 <= result.p_value <= 1.0
    assert result.n == 200


def test_paired_delta_mismatch_errors_name_the_counts() -> None:
    c, y = np.array([0.6, 0.7, 0.8]), np.array([1, 0, 1])
    a = _run(c, y)
    with pytest.raises(CalibenchError, match="1 item_id.* only in a, 1 only in b"):
        paired_delta(ece, a, _run(c, y, np.array(["q0", "q1", "zz"])))
    with pytest.raises(CalibenchError, match="run b has 1 duplicate item_id"):
        paired_delta(ece, a, _run(c, y, np.array(["q0", "q1", "q1"])))
    with pytest.raises(CalibenchError, match="item_id"):
        paired_delta(ece, {"confidence": c, "correct": y}, a)
    with pytest.raises(CalibenchError, match="no 'probs'"):
        paired_delta(brier, a, a)
