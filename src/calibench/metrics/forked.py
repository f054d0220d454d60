"""Resample chunks evaluated in forked worker processes, for large inputs.

Threads share one interpreter: the chunk kernels' numpy calls release the GIL inside their loops, but
``np.bincount`` (the counting of every chunk) holds it, and every call takes it back to return. With
10^6 items and two cores, two threads ran the kernels 1.2-1.4x as fast as one; two forked processes
1.6-1.8x (``docs/performance.md``). So above ``PROCESSES_ABOVE`` items, where a chunk is one or a few
resamples and costs milliseconds, ``resample.replicate_layouts`` evaluates chunks in processes forked
from this one. Forking shares the layouts, kernels and inputs copy-on-write (nothing is pickled but
the chunk's task and its per-resample values); each process keeps its own scratch arrays.

Forking is used only where it is safe and possible: on platforms with ``fork``, not in a process
where Ray is running (study workers), and not when ``CALIBENCH_CHUNK_WORKERS=threads`` asks for
threads (for embedding applications that must not fork). Results do not depend on the choice: a chunk's values depend only on its draws.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

PROCESSES_ABOVE = 1 << 17  # items; below, a chunk holds many resamples and threads keep the cores busy
WORKERS_ENV = "CALIBENCH_CHUNK_WORKERS"  # "threads" keeps chunk evaluation in this process

Run = Callable[[Any, Any], list[list[np.ndarray]]]  # (task, scratch) -> the chunk's values


def wanted(n: int, workers: int) -> bool:
    """Whether chunks of ``n`` items on ``workers`` workers go to forked processes (not inside a Ray
    worker or driver: Ray's own threads and sockets are not for forked children)."""
    if workers < 2 or n < PROCESSES_ABOVE or os.environ.get(WORKERS_ENV, "").strip().lower() == "threads":
        return False
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        return False
    return "fork" in multiprocessing.get_all_start_methods()


# A forked worker's state: what its parent passed to the pool's initializer (inherited through the
# fork, not pickled). It lives only in the worker processes; the pool's initializer is their one hook.
_STATE: dict[str, Any] = {}


def _start(run: Run, make_scratch: Callable[[], Any]) -> None:
    _STATE.update(run=run, scratch=make_scratch())


def _run(task: Any) -> list[list[np.ndarray]]:
    """One chunk in a worker, with the worker's own scratch."""
    return _STATE["run"](task, _STATE["scratch"])


class Pending:
    """A submitted chunk; ``result()`` waits for its values (re-raising the worker's error)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def result(self) -> list[list[np.ndarray]]:
        return self._handle.get()


class ForkedPool:
    """``workers`` forked processes evaluating chunks: ``submit(task)`` -> ``Pending`` of
    ``run(task, scratch)`` in a worker. All workers are forked when the pool opens, before any task
    thread of the pool exists.
    """

    def __init__(self, workers: int, run: Run, make_scratch: Callable[[], Any]) -> None:
        context = multiprocessing.get_context("fork")
        with warnings.catch_warnings():
            # Python 3.12+ warns on any fork of a threaded process (a reader's Arrow threads): the
            # workers only run numpy on memory they inherit, and never touch those threads' locks
            warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning)
            self._pool = context.Pool(workers, initializer=_start, initargs=(run, make_scratch))

    def submit(self, task: Any) -> Pending:
        return Pending(self._pool.apply_async(_run, (task,)))

    def __enter__(self) -> ForkedPool:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self._pool.close()
        else:
            self._pool.terminate()
        self._pool.join()
