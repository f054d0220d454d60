"""Smoke run of bench/bench_scale.py at a tiny size (no timing assertions)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_scale  # noqa: E402


def test_bench_scale_smoke_agrees_with_the_previous_code(tmp_path: Path) -> None:
    base = Path(bench_scale.DEFAULT_BASE_SRC)
    out = tmp_path / "scale.json"
    result = bench_scale.main(["--sizes", "1500", "--resamples", "20", "--peer-resamples", "2", "--cores", "1",
                               "--base-src", str(base) if base.is_dir() else "", "--out", str(out)])
    assert result is not None and out.exists()
    (entry,) = result["results"]
    ours = entry["calibench"]
    assert "error" not in ours, ours
    from calibench.metrics import METRICS

    assert len(ours["values"]) == len(METRICS) and ours["seconds"] > 0 and ours["peak_rss_mb"] > 0
    assert entry["peer"]["seconds_extrapolated"] == entry["peer"]["seconds"] * 10
    assert entry["ratios"]["peer_over_calibench_seconds"] > 0
    if base.is_dir():  # the previous code drew items, summarize now draws positions: the same estimates
        assert entry["max_abs_diff_estimates_vs_base"] < 1e-12
        assert entry["max_abs_diff_vs_base"] >= 0  # CIs: other draws (equal on the same draws: test_metrics_resample)
        assert entry["ratios"]["base_over_calibench_seconds"] > 0
