"""``compare_runs``: p-values that agree with the intervals on discrete deltas, filters, notes, padding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibench.cli import main
from calibench.compare import compare_runs
from calibench.errors import CalibenchError
from test_compare import make_run, mc_items


@pytest.fixture()
def close_runs(tmp_path):
    # 40 items; B loses 2 of A's correct items: accuracy delta -0.05 with many resampled deltas exactly 0
    a_ok = [i % 2 == 0 for i in range(40)]
    b_ok = [ok and i not in (0, 2) for i, ok in enumerate(a_ok)]
    a = make_run(tmp_path / "a", {("mc", "choice"): mc_items(a_ok, 0.9),
                                  ("mc", "other"): mc_items(a_ok, 0.7)})
    b = make_run(tmp_path / "b", {("mc", "choice"): mc_items(b_ok, 0.9),
                                  ("mc", "other"): mc_items(a_ok, 0.7)})
    return a, b


def test_accuracy_delta_p_value_counts_ties_half_and_agrees_with_the_interval(close_runs) -> None:
    a, b = close_runs
    for ci in ("percentile", "bca"):
        comp = compare_runs(a, b, n_resamples=2000, seed=0, ci=ci, methods=["choice"])
        acc = comp.table.set_index("metric").loc["accuracy"]
        assert acc["delta"] == pytest.approx(-0.05)
        # B never beats A on an item: d* <= 0 always. P(d* = 0) = P(neither lost item drawn in 40 draws)
        # = (38/40)^40 = 0.1285, so 1 - L = 0.1285 / 2 and p = 0.1285 (the old rule, counting the ties on
        # both sides, gave 2 * 0.1285 = 0.257)
        assert acc["p_value"] == pytest.approx((38 / 40) ** 40, abs=0.02)
        assert acc["p_value"] >= 0.05 and acc["high"] == 0.0  # p >= .05 and 0 inside (at the end of) the CI
        assert acc["low"] <= acc["delta"] <= acc["high"]


def test_filters_and_notes(close_runs) -> None:
    a, b = close_runs
    comp = compare_runs(a, b, n_resamples=50, methods=["other"])
    assert set(comp.table["method"]) == {"other"}
    assert comp.ci == "bca" and comp.to_dict()["ci"] == "bca"
    assert any(n.startswith("mc · other: small n: 40 items < 300") for n in comp.notes)
    with pytest.raises(CalibenchError, match="--task 'nope' is in no unit both runs share; tasks: mc"):
        compare_runs(a, b, n_resamples=10, tasks=["nope"])


def test_mixed_option_counts_are_padded(tmp_path) -> None:
    items_a = [(f"q{i}", 0.6, i % 3 != 0, [0.6, 0.3, 0.1] if i % 2 else [0.6, 0.2, 0.1, 0.1]) for i in range(30)]
    items_b = [(f"q{i}", 0.8, i % 4 != 0, [0.8, 0.1, 0.1] if i % 2 else [0.8, 0.1, 0.05, 0.05]) for i in range(30)]
    a = make_run(tmp_path / "a", {("arc", "choice"): items_a})
    b = make_run(tmp_path / "b", {("arc", "choice"): items_b})
    t = compare_runs(a, b, n_resamples=20).table.set_index("metric")
    assert {"sce", "brier", "nll"} <= set(t.index)
    assert all(math.isfinite(t.loc[m, "delta"]) for m in ("sce", "brier", "nll"))
    # nll per item: -log p_label with labels as make_run sets them (top if correct, else top + 1)
    def nll(items):
        return np.mean([-np.log(p[0] if ok else p[1]) for _, _, ok, p in items])
    assert t.loc["nll", "delta"] == pytest.approx(nll(items_b) - nll(items_a), abs=1e-12)


def test_cli_compare_filters_and_ci(close_runs, capsys) -> None:
    a, b = close_runs
    assert main(["compare", str(a), str(b), "--bootstrap", "50", "--method", "choice", "--ci", "percentile"]) == 0
    out = capsys.readouterr().out
    assert "percentile" in out and "note: mc · choice: small n" in out and "other" not in out.split("note:")[0]
