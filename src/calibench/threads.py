"""Torch intra-op threads: the default every command uses, and pinning a count for a block of work.

Why a default other than torch's: torch starts one OpenMP thread per core, and each thread spin-waits
for the others at every op. For a small model the ops are too short to split usefully, and on a busy
machine the threads wait for cores other jobs hold: SmolLM2-135M with all methods at ``--limit 20``
took 299 s with torch's default on 2 loaded cores and 43 s with one thread, with the same records.
A large model on an idle many-core machine, on the other hand, needs the threads.

``choose_threads`` is the rule (a pure function, so it is tested without a machine), ``auto_threads``
applies it to this machine, and ``resolve_threads`` lets an explicit ``--threads`` win. ``eval``,
``study run`` (eval and train units), ``train`` and ``lifecycle`` all go through ``resolve_threads``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Below this many parameters one thread is used whatever the machine: the lab's models (20k-3M) and
# similar never fill more than one core per op.
SMALL_MODEL_PARAMS = 50e6
# A machine is busy when fewer than this many cores are idle (cores minus the cores other processes keep
# busy, sampled when the thread count is chosen); then every extra thread would wait for a core.
MIN_IDLE_CORES = 1.5


def choose_threads(n_params: float | None, cpus: int, load: float) -> int | None:
    """The thread count for a model of ``n_params`` parameters (None: unknown) on a machine with ``cpus``
    cores of which other processes keep ``load`` busy; None means "keep torch's default".

    - one core, a small model, or a busy machine (fewer than ``MIN_IDLE_CORES`` idle): 1 thread;
    - mostly idle (at most a quarter of the cores busy): torch's default (one per core);
    - partly busy: one thread per idle core, so no thread waits for a core another job holds.
    """
    if cpus <= 1:
        return 1
    if n_params is not None and n_params < SMALL_MODEL_PARAMS:
        return 1
    idle = cpus - max(0.0, load)
    if idle < MIN_IDLE_CORES:
        return 1
    if idle >= 0.75 * cpus:
        return None
    return max(1, math.floor(idle))


def _own_load() -> float:
    """This process's average CPU use since it started, in cores (0.0 where /proc is missing).

    The load average counts this process too: a study's second unit would otherwise see its own first
    unit as "another job" and drop to one thread on an idle machine.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22: start time
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        elapsed = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0
    used = os.times()
    return (used.user + used.system) / elapsed if elapsed > 1.0 else 0.0


SAMPLE_SECONDS = 0.25  # how long ``other_busy_cores`` watches the machine


def _busy_jiffies() -> int | None:
    """Clock ticks since boot that all cores spent on work this process must share them with.

    /proc/stat's cpu line: user, nice, system, idle, iowait, irq, softirq, steal (guest time is inside
    user and nice). Idle and iowait are free; so is ``nice`` time (jobs under ``nice``) when this process
    is not niced itself, since the scheduler gives the cores to it first.
    """
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    yields_to_us = fields[1] if os.getpriority(os.PRIO_PROCESS, 0) <= 0 else 0
    return sum(fields) - fields[3] - fields[4] - yields_to_us


def other_busy_cores(seconds: float = SAMPLE_SECONDS) -> float | None:
    """Cores the OTHER processes keep busy right now: the machine's busy ticks over a short window,
    less this process's own CPU time in it (None where /proc/stat is missing).

    Measured now rather than read from the load average, which trails by a minute: a job that just
    ended still counts there, and one that just started does not yet (the benchmark in
    bench/bench_threads.py showed both picking the wrong count).
    """
    import time

    before, own0, t0 = _busy_jiffies(), os.times(), time.perf_counter()
    if before is None:
        return None
    time.sleep(seconds)
    after, own1, t1 = _busy_jiffies(), os.times(), time.perf_counter()
    if after is None or t1 <= t0:
        return None
    busy = (after - before) / os.sysconf("SC_CLK_TCK")
    own = (own1.user + own1.system) - (own0.user + own0.system)
    return max(0.0, (busy - own) / (t1 - t0))


def machine_state() -> tuple[int, float]:
    """(cores this process may use, cores the OTHER processes keep busy): sampled now
    (``other_busy_cores``), else the 1-minute load average less this process's own use."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    sampled = other_busy_cores()
    if sampled is not None:
        return cpus, sampled
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return cpus, max(0.0, load - _own_load())


def auto_threads(n_params: float | None) -> int | None:
    """``choose_threads`` for this machine, now (a small model needs no look at the machine)."""
    if n_params is not None and n_params < SMALL_MODEL_PARAMS:
        return 1
    cpus, load = machine_state()
    return choose_threads(n_params, cpus, load)


def resolve_threads(explicit: int | None, n_params: float | None) -> int | None:
    """An explicit count (``--threads``, a study's ``threads:``) always wins; else ``auto_threads``."""
    if explicit is not None:
        return explicit
    return auto_threads(n_params)


def count_parameters(model: Any) -> int | None:
    """Parameters of a loaded torch model (None for objects without ``parameters()``)."""
    params = getattr(model, "parameters", None)
    if params is None:
        return None
    return int(sum(p.numel() for p in params()))


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads, then restore the previous count; ``None`` leaves it as is."""
    import torch

    if n is None:
        yield
        return
    if n < 1:
        from calibench.errors import CalibenchError

        raise CalibenchError(f"threads must be >= 1, got {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
