"""Resampling as counts: layouts, atoms, chunk kernels shared by all metrics, threads, chunking."""

from __future__ import annotations

import numpy as np
import pytest

import calibench.metrics.resample as resample
from calibench.metrics import METRICS, bootstrap_ci, metric_function
from calibench.metrics.resample import (
    CountChunk,
    Layout,
    RowKeys,
    replicate_all,
    resample_indices,
    resample_positions,
    segment_sums,
)
from calibench.metrics.summary import summarize_inputs


def _group(n: int, seed: int, *, ties: bool) -> dict[str, tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3)) * 1.5
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if ties:  # few distinct rows: confidences tie within and across outcomes
        p = np.round(p, 1)
        p[:, 0] = 1.0 - p[:, 1:].sum(axis=1)
        p = np.clip(p, 0.0, 1.0)
        p /= p.sum(axis=1, keepdims=True)
    labels = (rng.random(n)[:, None] < np.cumsum(p, axis=1)).argmax(axis=1)
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == labels
    conf[:2] = [1.0, 0.0] if not ties else conf[:2]
    return {"correct": (correct,), "top": (conf, correct), "probs": (p, labels)}


def test_top_atoms_are_runs_of_equal_confidence_and_outcome() -> None:
    c = np.array([0.5, 0.2, 0.5, 0.9, 0.5, 0.2])
    y = np.array([True, False, False, True, True, False])
    layout = Layout.for_top(c, y)
    top = layout.top
    assert top is not None
    np.testing.assert_array_equal(top.c, [0.2, 0.5, 0.5, 0.9])
    np.testing.assert_array_equal(top.y, [False, False, True, True])
    np.testing.assert_array_equal(top.bounds, [0, 2, 3, 5, 6])  # positions of each atom
    np.testing.assert_array_equal(top.value_bounds, [0, 1, 3, 4])  # atoms of each distinct confidence
    np.testing.assert_array_equal(top.tied, [False, False, True, False])
    np.testing.assert_array_equal(c[layout.order], np.sort(c))
    np.testing.assert_array_equal(layout.order[layout.position], np.arange(6))


def test_chunk_counts_match_the_drawn_indices() -> None:
    c = np.round(np.random.default_rng(0).random(40), 1)
    y = np.random.default_rng(1).random(40) < c
    layout = Layout.for_top(c, y)
    idx = next(resample_indices(40, 3, seed=2))
    chunk = CountChunk(idx, layout)
    for r in range(3):
        np.testing.assert_array_equal(chunk.items[r], np.bincount(layout.position[idx[r]], minlength=40))
    direct = CountChunk(idx, layout).atoms  # straight from the atom keys (no item counts needed)
    np.testing.assert_array_equal(direct, segment_sums(chunk.items, layout.top.bounds))
    np.testing.assert_array_equal(chunk.prefix("total")[:, -1], [40, 40, 40])
    layout.items_used = True  # a class-wise kernel reads item counts: atoms are summed from them
    np.testing.assert_array_equal(CountChunk(idx, layout).atoms, direct)


def test_segment_sums_leave_empty_segments_zero() -> None:
    values = np.arange(12.0).reshape(2, 6)
    out = segment_sums(values, np.array([0, 2, 2, 5, 6]))
    np.testing.assert_array_equal(out, [[1.0, 0.0, 9.0, 5.0], [13.0, 0.0, 27.0, 11.0]])
    keys = RowKeys(np.array([[0, 2, 2]]), 3)
    np.testing.assert_array_equal(keys.sums(), [[1, 0, 2]])  # one row: no offsets


def _drawn_items(layout: Layout, n: int, n_resamples: int, seed: int, paired: bool) -> list[np.ndarray]:
    """The items of each resample ``replicate_all`` evaluates (positions map to items by the order)."""
    if paired:
        return [i for chunk in resample_indices(n, n_resamples, seed) for i in chunk]
    return [layout.order[p] for chunk in resample_positions(n, n_resamples, seed) for p in chunk]


@pytest.mark.parametrize("paired", [True, False, "local"])
@pytest.mark.parametrize(("ties", "binning"), [(False, "width"), (True, "width"), (False, "mass"), (True, "mass")])
def test_all_metrics_from_one_stream_equal_the_metric_on_each_resample(ties: bool, binning: str, paired, monkeypatch
                                                                      ) -> None:
    import calibench.metrics.calibration as calibration
    import calibench.metrics.debiased_replicates as debiased_replicates

    monkeypatch.setattr(resample, "CHUNK_ITEMS", 150)  # several chunks of 1-2 resamples each
    monkeypatch.setattr(resample, "CACHE_BLOCK", 16)  # blocked passes cut segments and prefix sums
    monkeypatch.setattr(calibration, "SWEEP_BATCH", 1)  # the sweep's batches double from 1: 1, 2, 4, ...
    monkeypatch.setattr(debiased_replicates, "DOT_BINS", 2 if ties else 10**6)  # both ways to sum a bin
    if paired == "local":  # positions drawn block by block, the last block short (90 = 5 * 16 + 10)
        monkeypatch.setattr(resample, "LOCAL_DRAWS_ABOVE", 50)
        monkeypatch.setattr(resample, "LOCAL_BLOCK", 16)
    inputs = _group(90, 3, ties=ties)
    layout = Layout.for_top(*inputs["top"])
    from calibench.metrics.bootstrap import metric_kernel

    names = list(METRICS)
    kernels = [metric_kernel(metric_function(name, n_bins=7, binning=binning), inputs[METRICS[name].kind], layout)
               for name in names]
    got = replicate_all(layout, 9, 4, kernels, paired=paired is True)
    drawn = _drawn_items(layout, 90, 9, 4, paired is True)
    for name, fast in zip(names, got, strict=True):
        fn = metric_function(name, n_bins=7, binning=binning)
        arrays = inputs[METRICS[name].kind]
        naive = [fn(*(a[i] for a in arrays)) for i in drawn]
        np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-10 if name == "smooth_ece" else 1e-12, err_msg=name)


def test_thread_count_does_not_change_any_number(monkeypatch) -> None:
    monkeypatch.setattr(resample, "CHUNK_ITEMS", 200)
    inputs = _group(120, 5, ties=False)
    monkeypatch.setattr(resample, "MAX_WORKERS", 1)
    one = summarize_inputs(inputs, n_resamples=30, seed=1)
    monkeypatch.setattr(resample, "MAX_WORKERS", 4)
    monkeypatch.setattr(resample, "_workers", lambda: 4)
    four = summarize_inputs(inputs, n_resamples=30, seed=1)
    assert one == four


@pytest.mark.parametrize("paired", [False, True])
def test_forked_workers_give_the_numbers_of_one_worker(paired: bool, monkeypatch) -> None:
    """Chunks evaluated in forked processes (large inputs) equal those evaluated here, for position
    draws (the workers draw) and item draws (drawn here, handed over)."""
    from calibench.metrics import forked
    from calibench.metrics.bootstrap import metric_kernel

    if not forked.wanted(forked.PROCESSES_ABOVE, 2):
        pytest.skip("no fork on this platform")
    monkeypatch.setattr(resample, "CHUNK_ITEMS", 250)  # 2 resamples per chunk: many chunks
    inputs = _group(120, 5, ties=True)
    layout = Layout.for_top(*inputs["top"])
    kernels = [metric_kernel(metric_function(name), inputs[spec.kind], layout) for name, spec in METRICS.items()]
    monkeypatch.setattr(resample, "_workers", lambda: 1)
    one = replicate_all(layout, 21, 3, kernels, paired=paired)
    monkeypatch.setattr(resample, "_workers", lambda: 2)
    monkeypatch.setattr(forked, "PROCESSES_ABOVE", 100)
    opened, real = [], forked.ForkedPool
    monkeypatch.setattr(forked, "ForkedPool", lambda *a: (opened.append(a[0]), real(*a))[1])
    two = replicate_all(layout, 21, 3, kernels, paired=paired)
    assert opened == [2]  # the chunks went to two forked workers
    for name, a, b in zip(METRICS, one, two, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
    monkeypatch.setenv(forked.WORKERS_ENV, "threads")
    assert not forked.wanted(10**6, 2)


def test_summarize_inputs_gives_each_metric_the_interval_of_its_resampled_items() -> None:
    from calibench.metrics import intervals

    inputs = _group(150, 7, ties=True)
    # percentile intervals: BCa counts replicates below the estimate, which rounding (1e-17) can flip
    rows = {r["metric"]: r for r in summarize_inputs(inputs, n_resamples=40, seed=3, n_bins=5, ci="percentile")}
    assert list(rows) == list(METRICS)
    layout = Layout.for_top(*inputs["top"])
    drawn = _drawn_items(layout, 150, 40, 3, paired=False)
    for name, spec in METRICS.items():
        fn, arrays = metric_function(name, n_bins=5), inputs[spec.kind]
        ci = bootstrap_ci(fn, *arrays, n_resamples=40, seed=3)  # item draws: the same estimate, other draws
        assert rows[name]["estimate"] == ci.estimate
        naive = np.array([fn(*(a[i] for a in arrays)) for i in drawn])
        expected = intervals.interval(naive, ci.estimate, 0.95, "percentile")
        assert rows[name]["low"] == pytest.approx(expected.low, abs=1e-12), name
        assert rows[name]["high"] == pytest.approx(expected.high, abs=1e-12), name
    none = summarize_inputs(inputs, n_resamples=0)
    assert all(np.isnan(r["low"]) for r in none)
    skipped = {r["metric"]: r for r in summarize_inputs(inputs, n_resamples=20, no_bootstrap={"smooth_ece"})}
    assert np.isnan(skipped["smooth_ece"]["low"]) and not np.isnan(skipped["ece"]["low"])


def test_bandwidth_search_needs_only_a_few_kernel_grids() -> None:
    from calibench.metrics.smooth import bisection_grid_sizes, kernel_grid_size

    sizes = bisection_grid_sizes()
    assert sizes[0] == kernel_grid_size(1.0) == kernel_grid_size(0.01) == 1001
    assert sizes[-1] == kernel_grid_size(2 / 1024) == 5121  # 1/1024 is below the 1e-3 floor: never smoothed
    assert len(sizes) == 10


def test_worker_threads_follow_the_cpu_share(monkeypatch) -> None:
    monkeypatch.setattr(resample.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert resample._workers() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert resample._workers() == resample.MAX_WORKERS == 4


def _sweep_count_one_at_a_time(correct_at, n: int) -> int:
    """The sweep's bin count as first written: test b = 2, 3, ... one at a time until accuracies fall."""
    from calibench.metrics.calibration import mass_starts

    wrong = n - int(correct_at(np.array([n]))[0])
    best = n if int(correct_at(np.array([wrong]))[0]) == 0 else 1
    for b in range(2, n + 1 if best == 1 else 2):
        starts = mass_starts(n, b)
        acc = np.diff(correct_at(starts)) / np.diff(starts)
        if np.any(np.diff(acc) < 0):
            break
        best = b
    return best


@pytest.mark.parametrize("smooth", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("batch", [1, 3, 32])
def test_sweep_count_in_batches_equals_testing_one_count_at_a_time(smooth: float, batch: int) -> None:
    from calibench.metrics.calibration import sweep_count

    n = 997
    c = np.sort(np.random.default_rng(int(10 * smooth)).random(n))
    # low-discrepancy outcomes keep equal-mass accuracies rising for many bins; noise ends the sweep early
    jitter = (np.arange(n) * 0.6180339887) % 1.0 if smooth else np.random.default_rng(1).random(n)
    y = ((1 - smooth) * np.random.default_rng(2).random(n) + smooth * jitter < c).astype(float)
    cum = np.concatenate([[0.0], np.cumsum(y)])
    expected = _sweep_count_one_at_a_time(cum.__getitem__, n)
    assert sweep_count(cum.__getitem__, n, batch=batch) == expected
    if smooth == 1.0 and batch < 8:
        assert expected > 3 * batch  # several (doubling) batches were needed
    everything = np.ones(n)  # every item correct: the sweep ends at n at once
    assert sweep_count(np.concatenate([[0.0], np.cumsum(everything)]).__getitem__, n) == n


def test_blas_runs_on_one_thread_inside_the_chunk_threads(monkeypatch) -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    monkeypatch.setattr(resample, "BLAS_THREADED_ABOVE", 0)  # as for any large group
    seen: list[list[int]] = []

    def kernel(chunk: CountChunk) -> np.ndarray:
        seen.append(blas_threads())
        return np.zeros(chunk.rows)

    layout = Layout.identity(50)
    with threadpool_limits(limits=2, user_api="blas"):
        outside = blas_threads()
        replicate_all(layout, 3, 0, [kernel])
        assert blas_threads() == outside  # restored afterwards
    assert seen and all(threads == [1] * len(threads) for threads in seen)


def test_local_position_draws_count_like_uniform_draws(monkeypatch) -> None:
    """Block-by-block draws (large inputs) give every position, the short last block's too, the counts
    of n uniform draws: n in all, mean 1 and variance 1 - 1/n per position."""
    monkeypatch.setattr(resample, "LOCAL_DRAWS_ABOVE", 100)
    monkeypatch.setattr(resample, "LOCAL_BLOCK", 64)
    n, rows = 1000, 4000  # 15 blocks of 64 and one of 40
    counts = np.stack([np.bincount(p, minlength=n) for chunk in resample_positions(n, rows, 5) for p in chunk])
    assert counts.shape == (rows, n) and (counts.sum(axis=1) == n).all()
    mean, var = counts.mean(axis=0), counts.var(axis=0)
    se = np.sqrt((1 - 1 / n) / rows)
    assert np.abs(mean - 1).max() < 5 * se  # 5 sd over 1000 positions: a false alarm is very unlikely
    for block in (slice(0, 960), slice(960, n)):  # full blocks, and the short last one
        assert abs(mean[block].mean() - 1) < 5 * se / np.sqrt(mean[block].size)
        assert abs(var[block].mean() - (1 - 1 / n)) < 0.02
    again = np.stack([np.bincount(p, minlength=n) for chunk in resample_positions(n, 20, 5) for p in chunk])
    np.testing.assert_array_equal(again, counts[:20])  # the seed fixes them; resamples are drawn in turn
