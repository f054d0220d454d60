"""Each metric convention of DESIGN.md on small cases whose answers were worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibench.metrics import (
    accuracy,
    accuracy_at_coverage,
    ace,
    assign_bins,
    aurc,
    auroc,
    brier,
    brier_top,
    classwise_ece,
    ece,
    mce,
    nll,
    reliability_table,
    rmsce,
    sce,
)

# --- equal-width bins -------------------------------------------------------------------------------


def test_width_bins_exact_values_land_in_right_closed_bins() -> None:
    idx, edges = assign_bins([0.0, 0.3, 1.0, 0.1, 0.05, 0.95], n_bins=10)
    # 0.0 -> first bin; 0.3 -> (0.2, 0.3]; 1.0 -> last bin; 0.1 -> (0.0, 0.1]
    assert idx.tolist() == [0, 2, 9, 0, 0, 9]
    assert idx.dtype == np.int64
    assert np.array_equal(edges, np.linspace(0, 1, 11))


@pytest.mark.parametrize("n_bins", [1, 2, 3, 7, 10, 15, 20, 100])
def test_width_bins_match_searchsorted_rule_at_every_edge(n_bins: int) -> None:
    """The fast arithmetic binning must equal the spec's searchsorted rule bit for bit, near edges too."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    near = np.concatenate([edges, np.nextafter(edges, 2.0), np.nextafter(edges, -1.0)])
    decimals = np.round(np.arange(0, 1001) / 1000, 3)  # 0.001 steps, many of them exactly on edges
    rng = np.random.default_rng(n_bins)
    c = np.clip(np.concatenate([near, decimals, rng.random(5000)]), 0.0, 1.0)
    expected = np.searchsorted(edges[1:-1], c, side="left")
    idx, _ = assign_bins(c, n_bins=n_bins)
    assert np.array_equal(idx, expected)


def _edge_neighbourhood(edges: np.ndarray, ulps: int = 4) -> np.ndarray:
    """Every edge and the ``ulps`` floating-point values on each side of it, clipped to [0, 1]."""
    out, up, down = [edges], edges.copy(), edges.copy()
    for _ in range(ulps):
        up, down = np.nextafter(up, 2.0), np.nextafter(down, -1.0)
        out += [up, down]
    return np.clip(np.concatenate(out), 0.0, 1.0)


def test_width_bins_exact_for_every_bin_count_up_to_300() -> None:
    """The fast kernel's guarantee holds at every edge and its neighbours, for any bin count."""
    for n_bins in range(1, 301):
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        c = _edge_neighbourhood(edges)
        idx, _ = assign_bins(c, n_bins=n_bins)
        assert np.array_equal(idx, np.searchsorted(edges[1:-1], c, side="left")), n_bins


def test_width_bins_exact_when_every_value_is_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's fallback (no shortcut: compare every value with its upper edge) is exact too."""
    from calibench.metrics import binning

    monkeypatch.setattr(binning, "_NEAR", 1.0)  # the shortcut's check fails, so every value is compared
    binning._width_kernel.cache_clear()
    try:
        assert binning._width_kernel(10).near == -1.0
        for n_bins in (3, 10, 15):
            edges = np.linspace(0.0, 1.0, n_bins + 1)
            c = np.concatenate([_edge_neighbourhood(edges), np.random.default_rng(0).random(1000)])
            assert np.array_equal(
                assign_bins(c, n_bins=n_bins)[0], np.searchsorted(edges[1:-1], c, side="left")
            )
    finally:
        binning._width_kernel.cache_clear()


def test_large_inputs_split_across_threads_give_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    from calibench.metrics import binning

    rng = np.random.default_rng(3)
    c = np.round(rng.random(50_001), 2)
    y = rng.random(c.size) < c
    serial = (ece(c, y), ece(c, y, norm="l2"), reliability_table(c, y)["count"].tolist())
    monkeypatch.setattr(binning, "_PARALLEL_MIN", 1000)
    parallel = (ece(c, y), ece(c, y, norm="l2"), reliability_table(c, y)["count"].tolist())
    assert parallel[0] == pytest.approx(serial[0], abs=1e-14)
    assert parallel[1] == pytest.approx(serial[1], abs=1e-14)
    assert parallel[2] == serial[2]


def test_ece_hand_computed_with_exact_zero_and_one() -> None:
    c = [0.0, 0.3, 1.0, 1.0]
    y = [0, 1, 1, 0]
    # bins: {0.0}: conf 0 acc 0; {0.3}: conf .3 acc 1 (gap .7); {1.0, 1.0}: conf 1 acc .5 (gap .5)
    assert ece(c, y) == pytest.approx(0.25 * 0.0 + 0.25 * 0.7 + 0.5 * 0.5)
    assert mce(c, y) == pytest.approx(0.7)
    assert rmsce(c, y) == pytest.approx(math.sqrt(0.25 * 0.49 + 0.5 * 0.25))
    assert ece(c, y, norm="l2") == rmsce(c, y)
    assert ece(c, y, norm="max") == mce(c, y)


def test_ece_uses_mean_confidence_not_bin_midpoint() -> None:
    # both in (0.8, 0.9]: mean confidence .82, accuracy 1 -> .18 (the midpoint .85 would give .15)
    assert ece([0.81, 0.83], [True, True]) == pytest.approx(0.18)


def test_empty_bins_are_skipped_and_listed_in_table() -> None:
    c = [0.05, 0.95]
    y = [0, 1]
    assert ece(c, y) == pytest.approx(0.05)
    assert mce(c, y) == pytest.approx(0.05)
    table = reliability_table(c, y, n_bins=10)
    assert list(table.columns) == ["bin", "lower", "upper", "count", "confidence", "accuracy", "gap"]
    assert len(table) == 10
    assert table["count"].tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert table.loc[1:8, ["confidence", "accuracy", "gap"]].isna().all().all()
    assert table.loc[0, "gap"] == pytest.approx(-0.05)  # accuracy - confidence: overconfident is negative
    assert table.loc[9, "gap"] == pytest.approx(0.05)
    assert table["lower"].iloc[3] == pytest.approx(0.3) and table["upper"].iloc[3] == pytest.approx(0.4)


def test_reliability_table_reproduces_ece() -> None:
    rng = np.random.default_rng(1)
    c = rng.random(500)
    y = rng.random(500) < c**2
    for binning in ("width", "mass"):
        t = reliability_table(c, y, n_bins=12, binning=binning)
        full = t["count"] > 0
        derived = float((t["count"][full] / 500 * t["gap"][full].abs()).sum())
        assert derived == pytest.approx(ece(c, y, n_bins=12, binning=binning))
        assert t["count"].sum() == 500


def test_single_class_input() -> None:
    c = [0.6, 0.7, 0.95]
    # all correct: gaps .4, .3, .05 in three different bins
    assert ece(c, [1, 1, 1]) == pytest.approx((0.4 + 0.3 + 0.05) / 3)
    # all wrong: every gap is the confidence itself
    assert ece(c, [0, 0, 0]) == pytest.approx(np.mean(c))
    assert math.isnan(auroc(c, [1, 1, 1]))
    assert math.isnan(auroc(c, [0, 0, 0]))
    assert accuracy([1, 1, 1]) == 1.0
    assert aurc(c, [1, 1, 1]) == 0.0


def test_n_bins_one_is_overall_gap() -> None:
    c = [0.2, 0.9, 0.7]
    y = [1, 1, 0]
    assert ece(c, y, n_bins=1) == pytest.approx(abs(2 / 3 - 0.6))


# --- equal-mass bins --------------------------------------------------------------------------------


def test_mass_bins_equal_sizes_without_ties() -> None:
    c = np.linspace(0.05, 0.95, 11)[::-1]  # distinct, reversed input order
    idx, _ = assign_bins(c, n_bins=5, binning="mass")
    sizes = np.bincount(idx, minlength=5)
    assert sizes.sum() == 11 and sizes.max() - sizes.min() <= 1
    # bins are contiguous in confidence: a higher confidence never sits in a lower bin
    order = np.argsort(c)
    assert np.all(np.diff(idx[order]) >= 0)


def test_ace_hand_computed() -> None:
    c = [0.4, 0.1, 0.3, 0.2]
    y = [1, 0, 1, 0]
    # bins {.1, .2}: conf .15 acc 0; {.3, .4}: conf .35 acc 1
    assert ace(c, y, n_bins=2) == pytest.approx(0.5 * 0.15 + 0.5 * 0.65)
    assert ace(c, y, n_bins=2) == ece(c, y, n_bins=2, binning="mass")


def test_mass_ties_share_a_bin() -> None:
    c = [0.5, 0.5, 0.5, 0.5, 0.1, 0.9]
    idx, _ = assign_bins(c, n_bins=3, binning="mass")
    assert len(set(idx[:4].tolist())) == 1
    assert idx[4] < idx[0] <= idx[5]


def test_mass_ties_are_independent_of_input_order() -> None:
    rng = np.random.default_rng(2)
    c = rng.choice([0.1, 0.25, 0.5, 0.5001, 0.8, 1.0], size=203)
    y = rng.random(203) < c
    base_ace = ace(c, y, n_bins=7)
    base_idx, base_edges = assign_bins(c, n_bins=7, binning="mass")
    for _ in range(5):
        perm = rng.permutation(203)
        idx, edges = assign_bins(c[perm], n_bins=7, binning="mass")
        assert np.array_equal(idx, base_idx[perm])
        assert np.array_equal(edges, base_edges)
        assert ace(c[perm], y[perm], n_bins=7) == pytest.approx(base_ace, abs=1e-15)
        assert np.array_equal(
            reliability_table(c[perm], y[perm], n_bins=7, binning="mass")["count"],
            reliability_table(c, y, n_bins=7, binning="mass")["count"],
        )


def _mass_reference(c: np.ndarray, n_bins: int) -> np.ndarray:
    """The documented tie rule, written as a plain loop over tie groups."""
    n = len(c)
    values = sorted(set(c.tolist()))
    s = sorted(c.tolist())
    out = np.empty(n, dtype=int)
    for j, v in enumerate(values):
        first = s.index(v)
        last = n - 1 - s[::-1].index(v)
        b = 0 if j == 0 else ((first + last) // 2 * n_bins) // n
        out[c == v] = b
    return out


@pytest.mark.parametrize("n, n_bins", [(50, 10), (37, 4), (9, 9), (200, 15)])
def test_mass_bins_follow_documented_rule_and_edges_reproduce_them(n: int, n_bins: int) -> None:
    rng = np.random.default_rng(n)
    c = np.round(rng.random(n), 1)  # many ties, some exactly 0.0 and 1.0
    idx, edges = assign_bins(c, n_bins=n_bins, binning="mass")
    assert np.array_equal(idx, _mass_reference(c, n_bins))
    assert edges[0] == 0.0 and edges[-1] == 1.0 and np.all(np.diff(edges) >= 0)
    # bin b holds exactly the confidences in (edges[b], edges[b + 1]] (0.0 in the first bin)
    assert np.array_equal(np.searchsorted(edges[1:-1], c, side="left"), idx)


def test_mass_bins_with_fewer_items_than_bins() -> None:
    c = [0.7, 0.1, 0.4]
    idx, edges = assign_bins(c, n_bins=10, binning="mass")
    assert len(set(idx.tolist())) == 3  # every item alone in its bin
    assert np.all((idx >= 0) & (idx < 10))
    assert len(edges) == 11
    # each item is its own bin, so ACE is the mean |y - c|
    assert ace(c, [1, 0, 0], n_bins=10) == pytest.approx((0.3 + 0.1 + 0.4) / 3)
    table = reliability_table(c, [1, 0, 0], n_bins=10, binning="mass")
    assert (table["count"] == 0).sum() == 7


def test_all_equal_confidence_is_one_bin() -> None:
    idx, _ = assign_bins([0.0] * 5, n_bins=3, binning="mass")
    assert idx.tolist() == [0] * 5
    assert ace([0.6] * 4, [1, 0, 1, 1], n_bins=3) == pytest.approx(0.15)


# --- class-wise -------------------------------------------------------------------------------------


def test_sce_hand_computed() -> None:
    p = [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]
    labels = [0, 2]
    # class 0: .6 hit (gap .4), .2 miss (gap .2) -> .3; class 1: .3, .2 misses -> .25; class 2: .1 miss, .6 hit -> .25
    assert sce(p, labels) == pytest.approx((0.3 + 0.25 + 0.25) / 3)
    assert classwise_ece is sce


def test_sce_sees_miscalibration_that_top_label_ece_misses() -> None:
    # top label (class 0, conf .6) is right 60% of the time: top-label ECE is 0. But class 1 gets .4
    # and never occurs, class 2 gets 0 and occurs 40% of the time: per-class gaps 0, .4, .4.
    p = np.array([[0.6, 0.4, 0.0]] * 10)
    labels = np.array([0] * 6 + [2] * 4)
    assert ece(p.max(axis=1), labels == 0) == pytest.approx(0.0, abs=1e-12)
    assert sce(p, labels) == pytest.approx((0.0 + 0.4 + 0.4) / 3)


# --- proper scores ----------------------------------------------------------------------------------


def test_brier_hand_computed_and_range() -> None:
    p = [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]
    assert brier(p, [0, 2]) == pytest.approx((0.16 + 0.09 + 0.01 + 0.04 + 0.04 + 0.16) / 2)
    assert brier([[1.0, 0.0]], [1]) == pytest.approx(2.0)  # worst case
    assert brier([[0.0, 1.0, 0.0]], [1]) == 0.0


def test_brier_top_hand_computed() -> None:
    assert brier_top([0.9, 0.2], [1, 1]) == pytest.approx((0.01 + 0.64) / 2)


def test_nll_hand_computed_and_clipped() -> None:
    assert nll([[0.6, 0.4], [0.25, 0.75]], [0, 1]) == pytest.approx(-(math.log(0.6) + math.log(0.75)) / 2)
    assert nll([[1.0, 0.0]], [1]) == pytest.approx(-math.log(1e-12))


# --- discrimination and selective prediction --------------------------------------------------------


def test_auroc_ties_count_half() -> None:
    # pairs (correct, wrong): (.9,.8)=1 (.9,.3)=1 (.8,.8)=.5 (.8,.3)=1 -> 3.5 / 4
    assert auroc([0.9, 0.8, 0.8, 0.3], [1, 1, 0, 0]) == pytest.approx(0.875)
    assert auroc([0.5] * 4, [1, 0, 1, 0]) == pytest.approx(0.5)
    assert auroc([0.1, 0.9], [1, 0]) == 0.0


def test_aurc_hand_computed() -> None:
    # risks of the top-k sets: 0, 1/2, 1/3, 1/2
    assert aurc([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx((0 + 0.5 + 1 / 3 + 0.5) / 4)


def test_aurc_ties_are_accepted_together() -> None:
    # {.9, .9} enter together with risk 1/2 for both places; then risk 1/3
    expected = (0.5 + 0.5 + 1 / 3) / 3
    assert aurc([0.9, 0.9, 0.5], [1, 0, 1]) == pytest.approx(expected)
    assert aurc([0.9, 0.9, 0.5], [0, 1, 1]) == pytest.approx(expected)


def test_accuracy_at_coverage() -> None:
    c = [0.9, 0.8, 0.7, 0.6]
    y = [1, 0, 1, 0]
    assert accuracy_at_coverage(c, y, 0.25) == 1.0
    assert accuracy_at_coverage(c, y, 0.5) == 0.5
    assert accuracy_at_coverage(c, y, 0.75) == pytest.approx(2 / 3)
    assert accuracy_at_coverage(c, y, 1.0) == 0.5
    # 0.3 * 10 is 3 items (not 4 from floating-point round-up): the three most confident are wrong
    assert accuracy_at_coverage(np.linspace(0.1, 1.0, 10), [1] * 3 + [0] * 7, 0.3) == 0.0
    assert accuracy_at_coverage(np.linspace(0.1, 1.0, 10), [1] * 3 + [0] * 7, 0.31) == 0.0


def test_accuracy_at_coverage_splits_tie_group_by_its_mean() -> None:
    # k = 2: .9 (correct) plus one place from the tie group {.5 x3} with accuracy 1/3
    c = [0.9, 0.5, 0.5, 0.5]
    assert accuracy_at_coverage(c, [1, 1, 0, 0], 0.5) == pytest.approx((1 + 1 / 3) / 2)
    assert accuracy_at_coverage(c, [1, 0, 0, 1], 0.5) == pytest.approx((1 + 1 / 3) / 2)


def test_inputs_accept_lists_numpy_and_pandas() -> None:
    import pandas as pd

    c = [0.2, 0.4, 0.9, 0.75]
    y = [False, True, True, False]
    expected = ece(c, y)
    assert ece(np.array(c), np.array(y)) == expected
    assert ece(pd.Series(c), pd.Series(y)) == expected
    assert ece(np.array(c), np.array(y, dtype=float)) == expected
    assert ece(np.array(c), np.array(y, dtype=np.int8)) == expected
    assert ece(np.array(c, dtype=np.float32), y) == pytest.approx(expected, abs=1e-7)


def test_tie_rules_make_ranking_metrics_independent_of_input_order() -> None:
    rng = np.random.default_rng(4)
    c = rng.choice([0.2, 0.5, 0.5, 0.7, 0.9, 1.0], size=301)
    y = rng.random(301) < c
    base = (auroc(c, y), aurc(c, y), accuracy_at_coverage(c, y, 0.37), ace(c, y, n_bins=6))
    for _ in range(5):
        p = rng.permutation(301)
        assert (auroc(c[p], y[p]), aurc(c[p], y[p]), accuracy_at_coverage(c[p], y[p], 0.37)) == base[:3]
        assert ace(c[p], y[p], n_bins=6) == pytest.approx(base[3], abs=1e-15)
