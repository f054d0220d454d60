"""Small batching helpers shared by the engine's paths: length order, chunks, a progress bar."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any


def length_order(lengths: Sequence[int]) -> list[int]:
    """Indices sorted by length descending (ties keep input order) so batches pad little."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


def chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), n):
        yield seq[start : start + n]


class Progress:
    """A tqdm bar that is a no-op when disabled (keeps call sites simple).

    ``total=None`` makes an open-ended bar counting ``unit`` (CLM tokens).
    """

    def __init__(self, enabled: bool, total: int | None, desc: str, *, unit: str = "it") -> None:
        self.bar = None
        if enabled and (total is None or total > 0):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
