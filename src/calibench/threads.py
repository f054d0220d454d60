"""Torch intra-op threads for a block of work.

Small models (the lab's, tests', and many scoring batches) gain nothing from a second OpenMP thread on
an idle machine, and on a busy one the threads spin-wait for cores: a SmolLM2 forward measured more
than 20x slower with 2 threads on 2 loaded cores. Training, studies and ``calibench eval --threads``
use this to pin the count for their own work only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


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
