"""calibench.report: diagram data equals the metric functions' numbers, and the pictures show that data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from calibench.errors import CalibenchError
from calibench.metrics import ace, ece, reliability_table, smooth_calibration_curve, smooth_ece
from calibench.report import (
    ReliabilityDiagram,
    SmoothDiagram,
    plot_grid,
    plot_reliability,
    plot_reliability_grid,
    plot_smooth,
    reliability_diagram,
    save_figure,
    smooth_reliability_diagram,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _overconfident(n: int, seed: int = 0, power: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Items correct with probability p but reported with confidence p**power > p (over-confident)."""
    rng = np.random.default_rng(seed)
    p = rng.beta(4, 2, n)
    return p**power, rng.random(n) < p


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return _overconfident(600)


@pytest.fixture(scope="module")
def smooth(data: tuple[np.ndarray, np.ndarray]) -> SmoothDiagram:
    return smooth_reliability_diagram(*data, n_resamples=100, seed=3)


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_reliability_diagram_is_the_metric_numbers(data: tuple[np.ndarray, np.ndarray], binning: str) -> None:
    conf, corr = data
    d = reliability_diagram(conf, corr, n_bins=12, binning=binning)
    pd.testing.assert_frame_equal(d.table, reliability_table(conf, corr, n_bins=12, binning=binning))
    assert d.ece == pytest.approx(ece(conf, corr, n_bins=12), abs=1e-12)
    assert d.ace == pytest.approx(ace(conf, corr, n_bins=12), abs=1e-12)
    assert d.n == 600 and d.n_bins == 12 and d.binning == binning
    assert d.accuracy == pytest.approx(corr.mean())
    assert d.mean_confidence == pytest.approx(conf.mean())
    assert d.hist_counts.sum() == 600
    np.testing.assert_allclose(d.hist_edges, np.linspace(0, 1, 13))
    if binning == "width":
        assert d.hist_counts.tolist() == d.table["count"].tolist()


def test_histogram_bins_are_right_closed_like_the_metrics() -> None:
    # 0.0 -> first bin, 0.3 -> (0.2, 0.3] = bin 2, 1.0 -> last bin (docs/design.md).
    d = reliability_diagram([0.0, 0.3, 1.0, 0.31], [0, 1, 1, 0], n_bins=10)
    expected = np.zeros(10, dtype=int)
    expected[[0, 2, 9, 3]] = 1
    assert d.hist_counts.tolist() == expected.tolist()


def test_mass_bars_span_the_items_of_their_bin(data: tuple[np.ndarray, np.ndarray]) -> None:
    d = reliability_diagram([0.0, 1.0, 1.0, 0.0], [0, 1, 0, 1], n_bins=10, binning="mass")
    filled = (d.table["count"] > 0).to_numpy()
    assert d.bar_lower[filled].tolist() == [0.0, 1.0] and d.bar_upper[filled].tolist() == [0.0, 1.0]
    conf, corr = data
    d = reliability_diagram(conf, corr, n_bins=7, binning="mass")
    for k in range(7):
        in_bin = conf[(conf > d.table["lower"][k]) & (conf <= d.table["upper"][k])]
        assert d.bar_lower[k] == pytest.approx(in_bin.min()) and d.bar_upper[k] == pytest.approx(in_bin.max())
    w = reliability_diagram(conf, corr, n_bins=7)
    np.testing.assert_array_equal(w.bar_lower, w.table["lower"])


def test_reliability_to_dict_is_strict_json_with_null_for_empty_bins() -> None:
    d = reliability_diagram([0.95, 0.92, 0.85, 0.15], [1, 0, 1, 0], n_bins=10)
    out = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert out["kind"] == "reliability" and out["n"] == 4
    assert out["table"]["count"][5] == 0 and out["table"]["accuracy"][5] is None
    assert out["table"]["accuracy"][9] == pytest.approx(0.5)  # 0.95 and 0.92 share (0.9, 1.0]
    assert out["table"]["confidence"][9] == pytest.approx(0.935)
    assert out["ece"] == pytest.approx(ece([0.95, 0.92, 0.85, 0.15], [1, 0, 1, 0]))


def test_invalid_input_is_a_calibench_error() -> None:
    with pytest.raises(CalibenchError):
        reliability_diagram([0.5, float("nan")], [1, 0])
    with pytest.raises(CalibenchError):
        smooth_reliability_diagram([0.5, 1.5], [1, 0])
    with pytest.raises(CalibenchError):
        smooth_reliability_diagram([0.5, 0.6], [1, 0], n_resamples=-1)


def test_smooth_diagram_is_the_metric_numbers(data: tuple[np.ndarray, np.ndarray], smooth: SmoothDiagram) -> None:
    conf, corr = data
    assert smooth.smooth_ece == pytest.approx(smooth_ece(conf, corr), abs=1e-12)
    grid, curve, bandwidth = smooth_calibration_curve(conf, corr, grid=smooth.grid)
    assert smooth.bandwidth == pytest.approx(bandwidth)
    np.testing.assert_allclose(smooth.curve, curve, atol=1e-12)
    # Over-confident data: the smoothed accuracy lies below the diagonal where the data is.
    dense = smooth.density > np.quantile(smooth.density, 0.5)
    assert np.all(smooth.curve[dense] < smooth.grid[dense])


def test_smooth_band_brackets_the_curve_and_is_seeded(data: tuple[np.ndarray, np.ndarray],
                                                      smooth: SmoothDiagram) -> None:
    assert np.all(smooth.band_low <= smooth.band_high)
    inside = (smooth.band_low - 1e-9 <= smooth.curve) & (smooth.curve <= smooth.band_high + 1e-9)
    assert inside.mean() > 0.9
    again = smooth_reliability_diagram(*data, n_resamples=100, seed=3)
    np.testing.assert_array_equal(again.band_low, smooth.band_low)
    other = smooth_reliability_diagram(*data, n_resamples=100, seed=4)
    assert not np.array_equal(other.band_low, smooth.band_low)


def test_smooth_band_narrows_with_more_data() -> None:
    small = smooth_reliability_diagram(*_overconfident(200, seed=1), n_resamples=100)
    large = smooth_reliability_diagram(*_overconfident(5000, seed=1), n_resamples=100)
    mid = (small.grid > 0.6) & (small.grid < 0.9)  # where both have data
    assert np.mean(large.band_high - large.band_low) < np.mean(small.band_high - small.band_low)
    assert np.mean((large.band_high - large.band_low)[mid]) < 0.6 * np.mean((small.band_high - small.band_low)[mid])


def test_smooth_density_is_a_density(smooth: SmoothDiagram, data: tuple[np.ndarray, np.ndarray]) -> None:
    assert np.trapezoid(smooth.density, smooth.grid) == pytest.approx(1.0, abs=0.05)
    mean = np.trapezoid(smooth.grid * smooth.density, smooth.grid)
    assert mean == pytest.approx(data[0].mean(), abs=0.05)


def test_support_excludes_regions_without_data() -> None:
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.6, 0.9, 500)
    d = smooth_reliability_diagram(conf, rng.random(500) < conf, n_resamples=0)
    assert d.support[(d.grid > 0.65) & (d.grid < 0.85)].all()
    assert not d.support[d.grid < 0.3].any()


def test_smooth_without_band_and_to_dict() -> None:
    d = smooth_reliability_diagram(*_overconfident(100), n_resamples=0)
    assert np.isnan(d.band_low).all() and np.isnan(d.band_high).all()
    out = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert out["kind"] == "smooth" and out["band_low"][0] is None
    assert len(out["curve"]) == len(out["grid"]) == len(out["density"])


# ------------------------------------------------------------------------------------------------ drawing


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 5_000


def test_reliability_plot_shows_the_table(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    d = reliability_diagram(*data, n_bins=10)
    fig = plot_reliability(d, title="run A")
    main = fig.axes[0]
    filled = d.table[d.table["count"] > 0]
    heights = [p.get_height() for p in main.containers[0]]
    np.testing.assert_allclose(heights, filled["accuracy"])
    gap_tops = [p.get_y() + p.get_height() for p in main.containers[1]]
    np.testing.assert_allclose(gap_tops, filled["confidence"])
    title = main.get_title(loc="left")
    assert "run A" in title and f"ECE {d.ece:.3f}" in title and f"ACE {d.ace:.3f}" in title and "n=600" in title
    assert len(fig.axes) == 2  # diagram + histogram
    save_figure(fig, tmp_path / "r.png")
    assert _is_png(tmp_path / "r.png")
    assert [p.name for p in tmp_path.iterdir()] == ["r.png"]  # atomic: no temporary left behind


def test_svg_is_valid_and_reproducible(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    d = reliability_diagram(*data)
    save_figure(plot_reliability(d), tmp_path / "a.svg")
    save_figure(plot_reliability(d), tmp_path / "b.svg")
    text = (tmp_path / "a.svg").read_text()
    assert text.startswith("<?xml") and "<svg" in text and text.rstrip().endswith("</svg>")
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()


def test_smooth_plot(smooth: SmoothDiagram, tmp_path: Path) -> None:
    fig = plot_smooth(smooth, title="smooth")
    assert f"smECE {smooth.smooth_ece:.3f}" in fig.axes[0].get_title(loc="left")
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "smoothed accuracy"]
    np.testing.assert_allclose(line.get_ydata(), np.where(smooth.support, smooth.curve, np.nan))
    save_figure(fig, tmp_path / "s.png")
    assert _is_png(tmp_path / "s.png")


def test_plot_on_a_given_axis_adds_the_histogram_below(data: tuple[np.ndarray, np.ndarray]) -> None:
    fig = Figure()
    ax = fig.add_subplot()
    assert plot_reliability(reliability_diagram(*data), ax=ax) is fig
    assert len(fig.axes) == 2 and fig.axes[0] is ax


def test_grid_of_three_runs(tmp_path: Path) -> None:
    runs = {f"stage {k}": reliability_diagram(*_overconfident(300, seed=k, power=pw))
            for k, pw in enumerate([1.0, 0.6, 0.3])}
    fig = plot_reliability_grid(runs, tmp_path / "grid.png")
    assert _is_png(tmp_path / "grid.png")
    assert len(fig.axes) == 6
    titles = [ax.get_title(loc="left") for ax in fig.axes[::2]]
    assert [t.split("\n")[0] for t in titles] == list(runs)
    # The stages get more over-confident, and the titles say so.
    eces = [runs[k].ece for k in runs]
    assert eces == sorted(eces)
    plot_reliability_grid(runs, tmp_path / "grid.svg", ncols=1)
    assert "<svg" in (tmp_path / "grid.svg").read_text()


def test_grid_mixes_kinds_and_wraps_rows(smooth: SmoothDiagram, data: tuple[np.ndarray, np.ndarray]) -> None:
    fig = plot_grid({"binned": reliability_diagram(*data), "smooth": smooth, "again": smooth}, ncols=2)
    assert len(fig.axes) == 6
    with pytest.raises(CalibenchError):
        plot_grid({})


def test_bad_image_suffix(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    with pytest.raises(CalibenchError, match="unknown image format"):
        save_figure(plot_reliability(reliability_diagram(*data)), tmp_path / "x.jpg")
    assert not list(tmp_path.iterdir())


def test_drawing_leaves_pyplot_alone(data: tuple[np.ndarray, np.ndarray]) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_reliability(reliability_diagram(*data))
    assert plt.get_fignums() == before


def test_dataclasses_are_exported() -> None:
    assert ReliabilityDiagram.__name__ == "ReliabilityDiagram" and SmoothDiagram.__name__ == "SmoothDiagram"


def test_title_ece_uses_the_table_binning_and_bars_show_counts() -> None:
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.3, 1.0, 400)
    corr = rng.random(400) < conf - 0.1
    d = reliability_diagram(conf, corr, n_bins=10, binning="mass")
    assert d.table_ece == pytest.approx(ece(conf, corr, n_bins=10, binning="mass"), abs=1e-12)
    assert d.table_ece != pytest.approx(d.ece)
    fig = plot_reliability(d)
    title = fig.axes[0].get_title(loc="left")
    assert f"ECE (mass bins) {d.table_ece:.3f}" in title and f"{d.ece:.3f}" not in title
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == [str(k) for k in d.table["count"] if k > 0]
    assert d.small_n is None and "small n" not in title


def test_small_n_warning_on_diagrams() -> None:
    from calibench.metrics.binning import min_items, small_n_warning

    assert min_items(10) == 300 and min_items(15) == 450
    assert small_n_warning(299, 10) is not None and small_n_warning(300, 10) is None
    d = reliability_diagram([0.9, 0.8, 0.7] * 10, [1, 0, 1] * 10, n_bins=10)
    assert d.small_n is not None and d.to_dict()["small_n"] == d.small_n
    title = plot_reliability(d).axes[0].get_title(loc="left")
    assert "small n: < 300 items for 10 bins" in title
