"""Bootstrap resampling: the item draws, resamples as counts, and per-(resample, group) sums.

Every vectorised replicate in :mod:`calibench.metrics` is built from pieces that live only here:

- ``resample_indices(n, n_resamples, seed)`` draws the item indices of all resamples from one
  ``numpy.random.default_rng(seed)`` in row chunks of about ``CHUNK_ITEMS`` indices (bounded memory).
  The chunk size depends only on ``n``, so the same ``(n, n_resamples, seed)`` always gives the same
  resamples, whichever metric consumes them. Paired callers (two runs, or a study's units, drawing
  the same items) use these.
- ``resample_positions(n, n_resamples, seed)`` draws sorted positions instead, each chunk from its
  own stream (so workers can draw), block by block for very large n: the same bootstrap, counted
  without a gather. ``summarize`` uses these (``replicate_all(..., paired=False)``).
- ``RowKeys``: a chunk's group keys offset by ``row * n_groups``, so that one ``np.bincount`` gives
  the sum (or count) per (resample row, group) for every row at once. A metric whose resamples reduce
  to per-group sums (bins, distinct confidence values, kernel-grid points) needs nothing else.
- ``Layout``: a group's items sorted once (by confidence, then correctness) and cut into "atoms",
  the runs of equal (confidence, correct). Every top-label metric depends on a resample only through
  how often it draws each atom, so
- ``CountChunk`` turns a chunk of drawn indices into counts per (resample, atom) -- one gather and one
  ``bincount`` per chunk, shared by every metric of the group -- and caches what several metrics use
  (float counts, prefix sums). A metric then costs a few sequential passes over the atoms per resample
  (prefix sums, segment sums, dot products) instead of gathering and re-binning the resampled items.
- ``replicate_all`` runs several metrics' chunk kernels over one stream of chunks, so the draws (and
  the counts) are made once per group, not once per metric; ``replicate_layouts`` does it for several
  layouts of the same items (``compare``'s two runs). The chunks are the parallel work (one thread per
  core, or forked processes for large inputs, :mod:`calibench.metrics.forked`); BLAS is held to one
  thread meanwhile, since its own threads inside the kernels' dot products would only wait for cores
  the chunk workers hold.
- ``cache_blocks``: long chains of elementwise steps (AURC's risks, the wrong-count prefix, smooth
  ECE's segment sums) run in blocks that stay in cache.

Replicates equal the metric evaluated on the drawn resamples (to rounding), whatever the chunking,
the blocking and the workers.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from calibench.errors import CalibenchError

CHUNK_ITEMS = 1 << 20  # indices drawn per chunk: 4 MB of int32 (+ gathered values) stays near cache


def check_n_resamples(n_resamples: Any) -> int:
    """A positive integer resample count (bools and floats are rejected)."""
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise CalibenchError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    return int(n_resamples)


def chunk_rows(n: int) -> int:
    """Resamples per chunk for ``n`` items (about ``CHUNK_ITEMS`` indices, at least one resample)."""
    return max(1, CHUNK_ITEMS // n)


def resample_indices(n: int, n_resamples: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Yield (rows, n) arrays of item indices drawn with replacement, ``n_resamples`` rows in all."""
    return _draws(n, n_resamples, seed, np.int32 if n < 2**31 else np.int64)


def resample_positions(n: int, n_resamples: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Yield (rows, n) int64 arrays of sorted positions, ``n_resamples`` rows in all (``position_chunks``).

    These index a layout's sorted positions, not items (``replicate_all(..., paired=False)``): a uniform
    draw of positions is a uniform draw of items relabelled by the layout's order, so it is the same
    bootstrap, and counting positions needs no gather through the order (nor a cast before ``bincount``).
    """
    for _, draw in position_chunks(n, n_resamples, seed):
        yield draw()


def position_chunks(n: int, n_resamples: int, seed: int = 0) -> list[tuple[int, Callable[[], np.ndarray]]]:
    """The chunks of ``resample_positions`` as (rows, function that draws them), so threads can draw too.

    Chunk j draws from its own stream (``SeedSequence(seed).spawn``), so the draws depend on
    ``(n, n_resamples, seed)`` only, not on which thread draws which chunk. Above ``LOCAL_DRAWS_ABOVE``
    positions a resample is drawn block by block (``_local_positions``).
    """
    if n < 1:
        raise CalibenchError("cannot bootstrap empty input")
    n_resamples = check_n_resamples(n_resamples)
    rows = chunk_rows(n)
    sizes = [min(rows, n_resamples - start) for start in range(0, n_resamples, rows)]
    streams = np.random.SeedSequence(seed).spawn(len(sizes))

    def chunk(size: int, stream: np.random.SeedSequence) -> Callable[[], np.ndarray]:
        def draw() -> np.ndarray:
            rng = np.random.default_rng(stream)
            if n > LOCAL_DRAWS_ABOVE:  # one resample per chunk at this size: a view, not a copy
                return np.stack([_local_positions(rng, n) for _ in range(size)]) if size > 1 else \
                    _local_positions(rng, n)[None, :]
            return rng.integers(0, n, size=(size, n), dtype=np.int64)

        return draw

    return [(size, chunk(size, stream)) for size, stream in zip(sizes, streams, strict=True)]


LOCAL_DRAWS_ABOVE = 1 << 22  # 32 MB of int64 counts: beyond this, bincount's scattered writes miss the cache
LOCAL_BLOCK = 1 << 16  # positions per block: its 512 KB of counts stay in a core's L2 while bincount runs


def _local_positions(rng: np.random.Generator, n: int) -> np.ndarray:
    """n uniform positions, drawn as how many fall in each block of ``LOCAL_BLOCK`` positions (one
    multinomial) and then uniform draws inside each block, block after block.

    The counts per position have the multinomial distribution of n uniform draws, as the plain draw's
    do; only their order differs, which counting ignores. Counting them writes one block's counts at a
    time (10^7 positions: draw and count 95 ms instead of 167 ms).
    """
    blocks = -(-n // LOCAL_BLOCK)
    last = n - LOCAL_BLOCK * (blocks - 1)
    sizes = np.full(blocks, LOCAL_BLOCK, dtype=np.int64)
    sizes[-1] = last
    per_block = rng.multinomial(n, sizes / n)
    out = rng.integers(0, LOCAL_BLOCK, size=n, dtype=np.int64)
    if last < LOCAL_BLOCK and per_block[-1]:  # the short last block draws inside its own size
        out[n - per_block[-1] :] = rng.integers(0, last, size=per_block[-1], dtype=np.int64)
    out += np.repeat(np.arange(0, n, LOCAL_BLOCK, dtype=np.int64), per_block)
    return out


CACHE_BLOCK = 1 << 15  # elements per block of a blocked pass: a few 256 KB temporaries stay in L2


def cache_blocks(size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive blocks of ``CACHE_BLOCK`` elements covering ``range(size)``.

    A chain of elementwise steps over 10^7 elements is bound by memory traffic (each temporary is
    written and read back from RAM); run block by block, the temporaries stay in cache and only the
    inputs are read from memory.
    """
    for start in range(0, size, CACHE_BLOCK):
        yield start, min(start + CACHE_BLOCK, size)


def _draws(n: int, n_resamples: int, seed: int, dtype: type[np.signedinteger]) -> Iterator[np.ndarray]:
    if n < 1:
        raise CalibenchError("cannot bootstrap empty input")
    n_resamples = check_n_resamples(n_resamples)
    rng = np.random.default_rng(seed)
    rows = chunk_rows(n)
    for start in range(0, n_resamples, rows):
        yield rng.integers(0, n, size=(min(rows, n_resamples - start), n), dtype=dtype)


class RowKeys:
    """Group keys of a (rows, m) chunk, offset per row so one ``bincount`` sums every row at once."""

    def __init__(self, keys: np.ndarray, n_groups: int) -> None:
        self.rows = keys.shape[0]
        self.n_groups = n_groups
        if self.rows == 1:  # one resample per chunk (large inputs): no offsets to add
            self.flat = keys.ravel()
        else:
            offsets = (np.arange(self.rows, dtype=np.intp) * n_groups)[:, None]
            self.flat = (keys + offsets).ravel()

    def sums(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Per (row, group) sum of ``weights`` (shape (rows, m)); item counts (int64) if None."""
        w = None if weights is None else weights.ravel()
        size = self.rows * self.n_groups
        return np.bincount(self.flat, weights=w, minlength=size).reshape(self.rows, self.n_groups)


def segment_sums(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Sums of ``values[:, bounds[j]:bounds[j + 1]]`` for each j (empty segments give 0).

    ``bounds`` is non-decreasing, starts at 0 and ends at ``values.shape[1]``. Sequential sums within a
    segment (``np.add.reduceat``), so the accuracy is that of a ``bincount`` over the same items.
    """
    starts = bounds[:-1]
    full = bounds[1:] > starts
    out = np.zeros((values.shape[0], starts.shape[0]), dtype=values.dtype)
    if full.any():
        out[:, full] = np.add.reduceat(values, starts[full], axis=1)
    return out


def _index_dtype(n: int) -> type[np.signedinteger]:
    """int32 tables where they fit: gathering from a table half the size is several times faster."""
    return np.int32 if n < 2**31 else np.int64


class TopAtoms:
    """The runs of equal (confidence, correct) of items sorted by confidence, then correctness.

    ``c``/``y``: each atom's confidence and correctness (ascending confidence; a wrong atom comes
    just before a correct one of the same confidence); ``bounds``: atom j holds sorted positions
    ``bounds[j]:bounds[j + 1]``; ``value_bounds``: the atoms of each distinct confidence;
    ``tied``: atom j is correct and atom j - 1 is wrong with the same confidence.
    """

    def __init__(self, cs: np.ndarray, ys: np.ndarray) -> None:
        n = cs.shape[0]
        new_value = np.empty(n, dtype=bool)
        new_value[0] = True
        np.not_equal(cs[1:], cs[:-1], out=new_value[1:])
        new_atom = new_value.copy()
        new_atom[1:] |= ys[1:] != ys[:-1]
        starts = np.flatnonzero(new_atom)
        self.n = n
        self.size = int(starts.shape[0])
        self.bounds = np.append(starts, n)
        self.c = cs[starts]
        self.y = ys[starts]
        atom_new_value = new_value[starts]
        self.value_bounds = np.append(np.flatnonzero(atom_new_value), self.size)
        self.tied = ~atom_new_value  # only a correct atom can follow a wrong one of its value
        self.wrong = ~self.y
        self.wrong_int = self.wrong.astype(np.int64)  # int64 x int64 is a plain loop; x bool casts per element
        self.resid = self.c - self.y
        self.index = (np.cumsum(new_atom, dtype=np.int64) - 1).astype(_index_dtype(self.size))  # position -> atom


class Layout:
    """A group's items in the order resamples are counted in (sorted once per group).

    ``order[p]`` is the item at position p and ``position[i]`` the position of item i (None: the
    identity). ``top`` is set when the order sorts by (confidence, correct), for top-label metrics.
    """

    def __init__(self, n: int, order: np.ndarray | None = None, top: TopAtoms | None = None) -> None:
        if n < 1:
            raise CalibenchError("cannot bootstrap empty input")
        self.n = n
        self.order = order
        self.top = top
        self.position: np.ndarray | None = None
        if order is not None:
            position = np.empty(n, dtype=_index_dtype(n))
            position[order] = np.arange(n, dtype=position.dtype)
            self.position = position
        self.items_used = False  # set by kernels that read item counts: atoms then come from those
        # item -> atom, where atoms are coarser than items (ties): one gather per chunk gives atom keys
        self.atom_of_item: np.ndarray | None = None
        if top is not None and top.size < n:
            self.atom_of_item = top.index if self.position is None else top.index[self.position]

    @classmethod
    def identity(cls, n: int) -> Layout:
        return cls(n)

    @classmethod
    def for_top(cls, confidence: np.ndarray, correct: np.ndarray) -> Layout:
        """Sorted by validated confidence, then correctness, with its atoms.

        One integer sort: the bits of a non-negative float sort like the float, so ``bits << 1 | y``
        orders by (confidence, correct) (c <= 1 leaves the top bit free). Items of one atom are
        interchangeable, so the sort need not be stable.
        """
        c = confidence + 0.0  # -0.0 -> 0.0, so its bits sort with the zeros
        key = c.view(np.int64) << 1
        key |= correct
        order = np.argsort(key)
        return cls(c.shape[0], order, TopAtoms(c[order], correct[order]))

    def sorted(self, values: np.ndarray) -> np.ndarray:
        """Per-item ``values`` (first axis) in layout order."""
        return values if self.order is None else values[self.order]

    def atom_values(self, sorted_values: np.ndarray) -> np.ndarray | None:
        """Per-atom values if per-item values (in layout order) are constant on every atom, else None."""
        top = self.top
        if top is None:
            return None
        at = sorted_values[top.bounds[:-1]]
        return at if np.array_equal(sorted_values, at[top.index]) else None


T = TypeVar("T")


class Scratch:
    """Work arrays reused by the chunks one thread evaluates, by name.

    A fresh array of 10^7 items costs about as much to fault in as a pass over it, so the per-resample
    temporaries of large inputs are written into these instead (``out=``). A thread evaluates one
    chunk at a time and kernels return fresh per-resample values, so reuse never aliases a result.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype`` kept under ``name``."""
        a = self._arrays.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self._arrays[name] = np.empty(shape, dtype=dtype)
        return a


class CountChunk:
    """A chunk of resamples as counts, with the derived arrays several metrics share (computed once).

    ``idx`` holds drawn item indices, or drawn sorted positions where ``positions`` (the draws of
    ``resample_positions``); ``items`` gives the drawn items either way.
    """

    def __init__(self, idx: np.ndarray, layout: Layout, scratch: Scratch | None = None, *,
                 positions: bool = False) -> None:
        self.idx = idx
        self.layout = layout
        self.positions = positions
        self.rows = idx.shape[0]
        self.scratch = Scratch() if scratch is None else scratch
        self._memo: dict[Hashable, Any] = {}
        # what turns a draw into a position and into an atom (None: it already is one)
        self._position_table = None if positions else layout.position
        self._atom_table = layout.top.index if positions and layout.top is not None else layout.atom_of_item

    @property
    def drawn_items(self) -> np.ndarray:
        """The items of each resample, (rows, n) (for metrics evaluated on their resampled items)."""
        if not self.positions or self.layout.order is None:
            return self.idx
        return self.memo("drawn_items", lambda: self.layout.order[self.idx])

    def memo(self, key: Hashable, make: Callable[[], T]) -> T:
        """``make()`` once per chunk under ``key`` (for values several metrics of a group use)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    @property
    def items(self) -> np.ndarray:
        """Draws of each item, in layout order: (rows, n) int64."""

        def make() -> np.ndarray:
            return RowKeys(self._keys(self._position_table), self.layout.n).sums()

        return self.memo("items", make)

    def _keys(self, table: np.ndarray | None) -> np.ndarray:
        """``table[idx]`` (the draws' positions or atoms), into scratch; ``idx`` if no table.

        One resample per chunk (large inputs) goes to ``bincount`` as it is, so its keys are copied to
        int64 here: ``bincount`` would otherwise cast them into a fresh array (10^6 keys: 7 -> 4 ms)."""
        if table is None:
            keys = self.idx
        else:
            out = self.scratch.get("keys", self.idx.shape, table.dtype)
            keys = np.take(table, self.idx, out=out, mode="clip")  # clip: no buffering (indices are valid)
        if self.rows == 1 and keys.dtype != np.intp:
            wide = self.scratch.get("keys_intp", keys.shape, np.intp)
            np.copyto(wide, keys)
            return wide
        return keys

    def _floats(self, name: str, counts: np.ndarray) -> np.ndarray:
        out = self.scratch.get(name, counts.shape)
        np.copyto(out, counts)
        return out

    @property
    def items_f(self) -> np.ndarray:
        if self.layout.top is not None and self.layout.top.size == self.layout.n:
            return self.atoms_f  # atoms are items: one float copy
        return self.memo("items_f", lambda: self._floats("items_f", self.items))

    @property
    def atoms(self) -> np.ndarray:
        """Draws of each top-label atom: (rows, atoms) int64 (needs a ``Layout.for_top``)."""
        top = self.layout.top
        if top is None:
            raise ValueError("atom counts need a layout sorted by confidence (Layout.for_top)")

        def make() -> np.ndarray:
            if top.size == self.layout.n:
                return self.items
            if self.layout.items_used:  # the item counts are made anyway: sum them per atom
                return segment_sums(self.items, top.bounds)
            assert self._atom_table is not None
            return RowKeys(self._keys(self._atom_table), top.size).sums()

        return self.memo("atoms", make)

    @property
    def atoms_f(self) -> np.ndarray:
        return self.memo("atoms_f", lambda: self._floats("atoms_f", self.atoms))

    def prefix(self, name: str) -> np.ndarray:
        """Exclusive prefix sums over atoms, (rows, atoms + 1) int64: ``"total"`` or ``"wrong"`` counts."""

        def make() -> np.ndarray:
            top = self.layout.top
            assert top is not None
            counts = self.atoms
            size = counts.shape[1]
            out = self.scratch.get(f"prefix_{name}", (self.rows, size + 1), np.int64)
            out[:, 0] = 0
            if name == "total":
                np.cumsum(counts, axis=1, out=out[:, 1:])
                return out
            # wrong counts block by block, each block's prefix carried on from the last (exact integers)
            wrong = self.scratch.get("wrong", (self.rows, min(size, CACHE_BLOCK)), np.int64)
            for start, stop in cache_blocks(size):
                block = wrong[:, : stop - start]
                np.multiply(counts[:, start:stop], top.wrong_int[start:stop], out=block)
                np.cumsum(block, axis=1, out=out[:, start + 1 : stop + 1])
                if start:
                    out[:, start + 1 : stop + 1] += out[:, start : start + 1]
            return out

        return self.memo(("prefix", name), make)


Kernel = Callable[[CountChunk], np.ndarray]


def _workers() -> int:
    """Threads for chunk kernels: the cores this process may use, at most ``MAX_WORKERS``, and at most
    ``OMP_NUM_THREADS`` where that is set (as study workers and benchmarks set it to their CPU share)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    limit = os.environ.get("OMP_NUM_THREADS", "")
    if limit.isdigit() and int(limit) > 0:
        cores = min(cores, int(limit))
    return max(1, min(MAX_WORKERS, cores))


MAX_WORKERS = 4  # most numpy loops release the GIL; chunks are independent, so threads add up
# OpenBLAS splits a dot product over threads only above 10,000 elements; below that, limiting its threads
# (2.5 ms per call, threadpoolctl inspects the loaded libraries) would cost more than small inputs take
BLAS_THREADED_ABOVE = 10_000


def replicate_all(layout: Layout, n_resamples: int, seed: int, kernels: Sequence[Kernel], *,
                  paired: bool = True) -> list[np.ndarray]:
    """One value per resample for each kernel, all fed the same chunks of ``resample_indices`` draws.

    ``paired=False`` feeds them ``resample_positions`` draws instead (the same bootstrap, cheaper to
    count; see there), for callers whose resamples need not draw the same items as another layout's:
    the replicates are then those of the items ``CountChunk.drawn_items``, not of ``resample_indices``.

    Chunks are evaluated on up to ``_workers()`` threads (numpy releases the GIL in most loops); each
    chunk's values depend only on its draws, so the result does not depend on the thread count. Memory
    stays flat: at most one chunk per worker (plus the one being drawn) is alive, each about
    ``CHUNK_ITEMS`` draws and its counts.
    """
    return replicate_layouts([(layout, kernels)], n_resamples, seed, paired=paired)[0]


def replicate_layouts(groups: Sequence[tuple[Layout, Sequence[Kernel]]], n_resamples: int, seed: int, *,
                      paired: bool = True) -> list[list[np.ndarray]]:
    """``replicate_all`` of several layouts of the same items at once, every chunk of draws shared.

    For two runs' records of the same items (in one item order, each run sorted its own way): with item
    draws, resample r takes the same items from every layout, so differences of their replicates are
    paired-bootstrap replicates, and the draws are made once for all of them. Position draws
    (``paired=False``) index one layout's order, so they take one layout only.
    """
    if not groups:
        raise ValueError("replicate_layouts needs at least one layout")
    n = groups[0][0].n
    if any(layout.n != n for layout, _ in groups):
        raise CalibenchError(f"paired layouts must hold the same items: {[layout.n for layout, _ in groups]}")
    if not paired and len(groups) > 1:
        raise ValueError("position draws index one layout's order: several layouts need paired=True")
    n_resamples = check_n_resamples(n_resamples)
    workers = _workers() if n_resamples > chunk_rows(n) else 1
    if n <= BLAS_THREADED_ABOVE:
        return _replicate(groups, n_resamples, seed, workers, paired)
    from threadpoolctl import threadpool_limits

    # the chunks are the parallel work: BLAS threads inside a kernel's dot products would only wait for
    # cores the chunk threads hold (10^6 items under load: 457 s with OpenBLAS threads, see performance.md)
    with threadpool_limits(limits=1, user_api="blas"):
        return _replicate(groups, n_resamples, seed, workers, paired)


def _evaluate(groups: Sequence[tuple[Layout, Sequence[Kernel]]], paired: bool, idx: np.ndarray, scratch: Scratch
              ) -> list[list[np.ndarray]]:
    """Every group's kernels on one chunk of draws, one layout after another (kernels return fresh
    values, so the chunks of the layouts can reuse one scratch)."""
    values = []
    for layout, kernels in groups:
        chunk = CountChunk(idx, layout, scratch, positions=not paired)
        values.append([kernel(chunk) for kernel in kernels])
    return values


def _replicate(groups: Sequence[tuple[Layout, Sequence[Kernel]]], n_resamples: int, seed: int, workers: int,
               paired: bool) -> list[list[np.ndarray]]:
    """Chunks in order, evaluated here (one worker), in forked processes (large inputs, see
    ``calibench.metrics.forked``) or in threads; at most ``workers`` chunks are pending at a time.

    Item draws come from one stream, so they are drawn here, in order, and handed to the workers;
    position draws are drawn by the worker that evaluates the chunk, from the chunk's own stream.
    """
    from calibench.metrics import forked

    outs = [[np.empty(n_resamples) for _ in kernels] for _, kernels in groups]
    n = groups[0][0].n
    position_draws = None if paired else position_chunks(n, n_resamples, seed)
    draws = None if position_draws is None else [draw for _, draw in position_draws]

    def run(task: int | np.ndarray, scratch: Scratch) -> list[list[np.ndarray]]:
        """A chunk's values: ``task`` is a position chunk's index (drawn here) or drawn item indices."""
        idx = task if draws is None else draws[task]()  # type: ignore[index]
        return _evaluate(groups, paired, idx, scratch)

    def tasks() -> Iterator[tuple[int, int | np.ndarray]]:
        """(rows, task) per chunk: a position chunk's index, or the drawn item indices."""
        if position_draws is not None:
            yield from ((rows, j) for j, (rows, _) in enumerate(position_draws))
        else:
            yield from ((idx.shape[0], idx) for idx in resample_indices(n, n_resamples, seed))

    def store(row: int, values: list[list[np.ndarray]]) -> None:
        for group_outs, group_values in zip(outs, values, strict=True):
            for out, v in zip(group_outs, group_values, strict=True):
                out[row : row + v.shape[0]] = v

    if workers == 1:
        row, scratch = 0, Scratch()
        for rows, task in tasks():
            store(row, run(task, scratch))
            row += rows
        return outs
    if forked.wanted(n, workers):
        pool: Any = forked.ForkedPool(workers, run, Scratch)
        submit = pool.submit
    else:
        local = threading.local()  # one Scratch per thread (this call's threads only)

        def in_thread(task: int | np.ndarray) -> list[list[np.ndarray]]:
            if not hasattr(local, "scratch"):
                local.scratch = Scratch()
            return run(task, local.scratch)

        pool = ThreadPoolExecutor(max_workers=workers)
        submit = functools.partial(pool.submit, in_thread)
    pending: deque[tuple[int, Any]] = deque()
    with pool:
        row = 0
        for rows, task in tasks():
            if len(pending) >= workers:
                store(*_result(pending.popleft()))
            pending.append((row, submit(task)))
            row += rows
        while pending:
            store(*_result(pending.popleft()))
    return outs


def _result(item: tuple[int, Any]) -> tuple[int, list[list[np.ndarray]]]:
    row, future = item
    return row, future.result()
