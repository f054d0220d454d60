"""Numbers a reader can trust: debiased errors vs an independent implementation, BCa coverage, p-values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from calibench.metrics import bootstrap_ci, paired_delta, summarize
from calibench.metrics.calibration import debiased_ce, ece, ece_sweep, sweep_bins
from calibench.metrics.intervals import bca, bias_correction, interval, p_value, percentile
from calibench.metrics.registry import padded_probs
from calibench.records import make_records


def test_debiased_ce_hand_checked() -> None:
    # one bin (0.8, 0.9]: acc .5, conf .9 -> .16 - .25 / 9 = .1322..., sqrt = .363624
    assert debiased_ce([0.9] * 10, [1] * 5 + [0] * 5) == pytest.approx(np.sqrt(0.16 - 0.25 / 9), abs=1e-12)
    # calibrated bin: the variance term exceeds the squared gap -> clipped at 0 (the plug-in rmsce is .1)
    assert debiased_ce([0.6] * 10, [1] * 5 + [0] * 5) == 0.0
    # a one-item bin contributes nothing
    assert debiased_ce([0.9] * 10 + [0.15], [1] * 5 + [0] * 5 + [1]) == pytest.approx(
        np.sqrt(10 / 11 * (0.16 - 0.25 / 9)), abs=1e-12)


def test_debiased_ce_agrees_with_uncertainty_calibration_to_1e9() -> None:
    utils = pytest.importorskip("calibration.utils")
    rng = np.random.default_rng(7)
    for n, shift, n_bins in [(60, 0.0, 10), (300, 0.05, 10), (2000, 0.1, 15), (5000, -0.03, 20)]:
        c = rng.uniform(0.25, 1.0, n)
        y = rng.random(n) < np.clip(c - shift, 0, 1)
        ours = debiased_ce(c, y, n_bins=n_bins)
        ref = utils.lower_bound_scaling_ce(c, y.astype(int), p=2, debias=True, num_bins=n_bins,
                                           binning_scheme=utils.get_equal_prob_bins, mode="top-label")
        assert abs(ours - ref) < 1e-9, (n, ours, ref)
        plug = utils.lower_bound_scaling_ce(c, y.astype(int), p=2, debias=False, num_bins=n_bins,
                                            binning_scheme=utils.get_equal_prob_bins, mode="top-label")
        from calibench.metrics import rmsce
        assert abs(rmsce(c, y, n_bins=n_bins) - plug) < 1e-9  # same bins, same plug-in


def test_ece_sweep_hand_checked() -> None:
    # 4 items, accuracies 0,0,1,1 stay monotone up to 4 bins: mean |c - y| = (.2 + .4 + .4 + .2) / 4
    assert sweep_bins([0.2, 0.4, 0.6, 0.8], [0, 0, 1, 1]) == 4
    assert ece_sweep([0.2, 0.4, 0.6, 0.8], [0, 0, 1, 1]) == pytest.approx(0.3)
    # accuracies 1,0 at 2 bins break monotonicity: one bin, |mean c - mean y| = |.5 - .5| = 0
    assert sweep_bins([0.2, 0.4, 0.6, 0.8], [1, 1, 0, 0]) == 1
    assert ece_sweep([0.2, 0.4, 0.6, 0.8], [1, 1, 0, 0]) == pytest.approx(0.0)
    # input order does not matter
    assert ece_sweep([0.8, 0.2, 0.6, 0.4], [1, 0, 1, 0]) == pytest.approx(0.3)


def test_debiased_estimators_are_less_biased_on_a_calibrated_model() -> None:
    rng = np.random.default_rng(3)
    plug, deb, sweep = [], [], []
    for _ in range(60):
        c = rng.uniform(0.3, 1.0, 200)
        y = rng.random(200) < c  # calibrated: true error 0
        plug.append(ece(c, y))
        deb.append(debiased_ce(c, y))
        sweep.append(ece_sweep(c, y))
    assert np.mean(sweep) < np.mean(plug) and np.mean(deb) < np.mean(plug)


def test_bca_hand_checked_and_widening() -> None:
    reps = np.arange(1.0, 101.0)  # 1..100
    assert percentile(reps, 0.9) == pytest.approx((5.95, 95.05))
    # estimate 50.5 splits the replicates in half: z0 = 0, a = 0 -> the percentile interval
    assert bias_correction(reps, 50.5) == pytest.approx(0.0)
    assert bca(reps, 50.5, 0.9) == pytest.approx((5.95, 95.05))
    # every replicate above the estimate: the BCa interval sits at the bottom and is widened to reach 0.5
    out = interval(reps, 0.5, 0.95)
    assert out.widened and out.low == 0.5 and out.high < 3.0
    assert not interval(reps, 0.5, 0.95, "percentile").widened


def test_p_value_counts_ties_half() -> None:
    # 60% below 0, 35% at 0, 5% above: L = .6 + .175 = .775, p = 2 * .225 = .45 (the old rule gave .8)
    d = np.array([-0.05] * 60 + [0.0] * 35 + [0.05] * 5)
    assert p_value(d) == pytest.approx(0.45)
    assert p_value(np.array([-1.0, -2.0])) == 0.0 and np.isnan(p_value(np.array([np.nan])))


def _simulated(rng: np.random.Generator, n: int, gap: float) -> tuple[np.ndarray, np.ndarray]:
    c = rng.uniform(0.5, 1.0, n)
    return c, rng.random(n) < c - gap  # constant gap: the true binned (and top-label) ECE is `gap`


def test_default_interval_covers_the_true_error_at_its_nominal_rate() -> None:
    rng = np.random.default_rng(2026)
    sims, covered, inside = 300, 0, 0
    for s in range(sims):
        c, y = _simulated(rng, 400, 0.1)
        ci = bootstrap_ci("ece", c, y, n_resamples=400, seed=s)
        covered += ci.low <= 0.1 <= ci.high
        inside += ci.low <= ci.estimate <= ci.high
    assert inside == sims
    # observed: 272 / 300 = 0.907 (the percentile interval covers 0.955 here, but excludes estimates
    # near calibration); binomial sd at 300 simulations is 0.013
    assert 0.88 <= covered / sims <= 0.99, covered / sims


@pytest.mark.parametrize("draws", ["positions", "local"])
def test_summary_interval_drawn_as_positions_covers_at_the_same_rate(draws: str, monkeypatch) -> None:
    """summarize_inputs draws sorted positions (resample.resample_positions), block by block above
    LOCAL_DRAWS_ABOVE: the same simulation as above must cover as the item draws do."""
    import calibench.metrics.resample as resample
    from calibench.metrics import METRICS
    from calibench.metrics.summary import summarize_inputs

    if draws == "local":  # 400 positions in blocks of 64, the last one short
        monkeypatch.setattr(resample, "LOCAL_DRAWS_ABOVE", 100)
        monkeypatch.setattr(resample, "LOCAL_BLOCK", 64)
    others = set(METRICS) - {"ece"}
    rng = np.random.default_rng(2026)
    sims, covered, inside = 300, 0, 0
    for s in range(sims):
        c, y = _simulated(rng, 400, 0.1)
        rows = summarize_inputs({"top": (c, y), "correct": (y,)}, n_resamples=400, seed=s, no_bootstrap=others)
        row = next(r for r in rows if r["metric"] == "ece")
        covered += row["low"] <= 0.1 <= row["high"]
        inside += row["low"] <= row["estimate"] <= row["high"]
    print(f"{draws}: coverage {covered / sims:.3f}")
    assert inside == sims
    assert 0.88 <= covered / sims <= 0.99, covered / sims


def test_no_default_summary_row_excludes_its_estimate() -> None:
    rng = np.random.default_rng(5)
    rows = []
    for task, gap, n in [("good", 0.0, 80), ("bad", 0.15, 300), ("tiny", 0.0, 25)]:
        c, y = _simulated(rng, n, gap)
        for i in range(n):
            p = [c[i], 1 - c[i]] if y[i] else [1 - c[i], c[i]]
            rows.append({"task": task, "method": "m", "item_id": f"{task}{i}", "probs": p, "label": 0,
                         "pred": 0 if y[i] else 1, "confidence": c[i], "correct": bool(y[i])})
    out = summarize(make_records(rows), n_resamples=300)
    finite = out.dropna(subset=["low", "high"])
    assert len(finite) > 30
    assert ((finite["low"] <= finite["estimate"]) & (finite["estimate"] <= finite["high"])).all()


def test_percentile_excludes_estimates_of_calibrated_models_and_the_default_never_does() -> None:
    rng = np.random.default_rng(8)
    pct_out = default_out = 0
    for s in range(40):
        c = rng.uniform(0.0, 1.0, 150)
        y = rng.random(150) < c  # calibrated: every resample's ECE tends to exceed the estimate
        p = bootstrap_ci("ece", c, y, n_resamples=300, seed=s, ci="percentile")
        d = bootstrap_ci("ece", c, y, n_resamples=300, seed=s)
        pct_out += not p.low <= p.estimate <= p.high
        default_out += not d.low <= d.estimate <= d.high
    assert pct_out > 0 and default_out == 0


def test_paired_p_value_agrees_with_the_percentile_interval_on_accuracy() -> None:
    rng = np.random.default_rng(11)
    for trial in range(40):
        n = 30
        a_correct = rng.random(n) < 0.6
        flip = rng.random(n) < rng.uniform(0.0, 0.3)
        b_correct = np.where(flip, ~a_correct, a_correct) if trial % 2 else a_correct & ~flip
        ids = [f"q{i}" for i in range(n)]
        a = pd.DataFrame({"item_id": ids, "correct": a_correct})
        b = pd.DataFrame({"item_id": ids, "correct": b_correct})
        d = paired_delta("accuracy", a, b, n_resamples=500, seed=trial, ci="percentile")
        if d.p_value >= 0.05:
            assert d.low <= 0.0 <= d.high
        else:  # p < .05: 0 lies outside the interval, or (ties at 0 only) at its end
            assert d.high <= 0.0 or d.low >= 0.0
        bca_d = paired_delta("accuracy", a, b, n_resamples=500, seed=trial)
        assert bca_d.p_value == d.p_value and bca_d.low <= bca_d.delta <= bca_d.high


def test_padded_probs_keep_brier_and_nll_per_item() -> None:
    rows = [{"task": "arc", "method": "choice", "item_id": "a", "probs": [0.5, 0.3, 0.2], "label": 0,
             "pred": 0, "confidence": 0.5, "correct": True},
            {"task": "arc", "method": "choice", "item_id": "b", "probs": [0.1, 0.6, 0.2, 0.1], "label": 2,
             "pred": 1, "confidence": 0.6, "correct": False}]
    recs = make_records(rows)
    p, labels = padded_probs(recs)
    assert p.shape == (2, 4) and p[0, 3] == 0.0 and labels.tolist() == [0, 2]
    out = summarize(recs, n_resamples=0).set_index("metric")["estimate"]
    brier_a = 0.25 + 0.09 + 0.04
    brier_b = 0.01 + 0.36 + 0.64 + 0.01
    assert out["brier"] == pytest.approx((brier_a + brier_b) / 2)
    assert out["nll"] == pytest.approx((-np.log(0.5) - np.log(0.2)) / 2)
    assert np.isfinite(out["sce"])


@pytest.mark.parametrize("name", ["dce", "ece_sweep"])
@pytest.mark.parametrize(("n", "decimals"), [(400, 2), (57, 1), (1500, 6)])
def test_vectorised_replicates_equal_the_loop(name: str, n: int, decimals: int) -> None:
    from calibench.metrics.bootstrap import bootstrap_replicates, resample_indices

    func = {"dce": debiased_ce, "ece_sweep": ece_sweep}[name]
    rng = np.random.default_rng(n)
    c = np.round(rng.uniform(0.0, 1.0, n), decimals)  # ties, and exact 0 / 1 at one decimal
    y = rng.random(n) < c - 0.05
    got = bootstrap_replicates(name, c, y, n_resamples=60, seed=3)
    idx = np.concatenate(list(resample_indices(n, 60, 3)))
    np.testing.assert_allclose(got, [func(c[i], y[i]) for i in idx], rtol=0, atol=1e-12)
