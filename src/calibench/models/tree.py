"""Prefix trees of token sequences, packed into one model row with an ancestor attention mask.

Why this is hand-written: an item's requests share most of their tokens (the question is the prefix
of the choice prompt and of every continuation; the options share "Answer:"), and the items of a
few-shot task share their shots. lm-evaluation-harness runs each request as its own sequence;
transformers' packing (``DataCollatorWithFlattening``) packs independent sequences, not shared
prefixes. Here every distinct prefix is one node, computed once: a node attends to its ancestors
only, at the position it has in its own sequences, so each scored position sees exactly the tokens
it would see in a plain left-to-right pass over its sequence.

Two levels of sharing:

* ``header_groups`` finds runs of items with a long common prefix (a few-shot header). For each of
  the items' sequences (choice prompt, continuation of option 1, ...) the prefix the whole run shares
  goes into one header tree; the engine runs it once, and its KV cache serves every item of the run.
* ``PrefixTree`` holds one item's sequences below the header, one node per distinct prefix;
  ``pack`` lays the nodes out as one row (unscored nodes first, scored nodes last, so that only the
  tail of the row goes through the LM head) with the ancestor mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_HEADER = 4  # shortest common prefix that may start a header group ("What is the capital of")
MIN_SAVED = 64  # a group must save at least this many tokens: (items - 1) x header length


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def header_groups(
    stems: Sequence[Sequence[int]], *, min_header: int = MIN_HEADER, min_saved: int = MIN_SAVED
) -> list[tuple[int, list[int]]]:
    """Group items whose stems share a prefix: ``[(header length, item indices)]``.

    Items are sorted by stem; a run of neighbours continues while the shared prefix stays at least
    ``min_header`` tokens and at least half of the run's header so far (so a subject's 250-token
    five-shot header is not cut to the 20 tokens it shares with the next subject). A run is kept if
    its header saves ``min_saved`` tokens or more (a header pass and a part-filled batch cost
    something too); the other items come back in one group with header 0.
    """
    order = sorted(range(len(stems)), key=lambda i: (tuple(stems[i]), i))
    groups: list[tuple[int, list[int]]] = []
    loners: list[int] = []
    run: list[int] = []
    header = 0

    def close() -> None:
        if len(run) >= 2 and (len(run) - 1) * header >= min_saved:
            groups.append((header, list(run)))
        else:
            loners.extend(run)

    for i in order:
        if run:
            shared = common_prefix_length(stems[run[-1]], stems[i])
            limit = header if len(run) >= 2 else shared
            if shared >= min_header and shared >= limit / 2:
                header = min(limit, shared)
                run.append(i)
                continue
            close()
        run, header = [i], 0
    if run:
        close()
    if loners:
        groups.append((0, sorted(loners)))
    return groups


@dataclass
class PackedRow:
    """A prefix tree as a model row: tokens, absolute positions, who attends to whom."""

    tokens: np.ndarray  # int64 [T]
    positions: np.ndarray  # int64 [T]: a node's position in its sequences
    allowed: np.ndarray  # bool [T, T]: allowed[i, j] = column i attends to column j
    header_allowed: np.ndarray  # bool [T, H]: column i attends to column j of the header row
    n_scored: int  # the last n_scored columns are the scored nodes
    column: dict[int, int]  # node id -> column

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


class PrefixTree:
    """The distinct prefixes of some token sequences, one node each, optionally below a packed header.

    A sequence whose first ``start`` tokens are in the header (a row already run, whose KV cache the
    packed row will see) hangs off the header's column ``anchor``: it attends to that column's
    ancestors in the header, then to its own nodes.
    """

    def __init__(self, header: PackedRow | None = None) -> None:
        self.header = header
        self.tokens: list[int] = []
        self.parent: list[int] = []  # a node of this tree; -1: a root; -2 - k: below header column k
        self.start: list[int] = []  # position of a root node
        self._children: dict[tuple[int, int], int] = {}  # (parent, token) -> node
        self._scored: dict[int, None] = {}  # ordered set

    def add(self, seq: Sequence[int], start: int = 0, anchor: int = -1) -> list[int]:
        """Insert ``seq[start:]`` below header column ``anchor``; the node of each of those tokens."""
        if (anchor >= 0) != (start > 0):
            raise ValueError("a sequence starts inside the header exactly when it names an anchor column")
        path, node = [], (-2 - anchor if anchor >= 0 else -1)
        for tok in seq[start:]:
            key = (node, int(tok))
            nxt = self._children.get(key)
            if nxt is None:
                nxt = len(self.tokens)
                self.tokens.append(int(tok))
                self.parent.append(node)
                self.start.append(start)
                self._children[key] = nxt
            path.append(nxt)
            node = nxt
        return path

    def score(self, node: int) -> None:
        """Ask for the logits at ``node`` (the distribution of the token after it)."""
        self._scored[node] = None

    def pack(self) -> PackedRow:
        """Lay the nodes out as one row: unscored first, scored last (in insertion order each)."""
        n = len(self.tokens)
        h = 0 if self.header is None else len(self.header)
        depth = np.empty(n, dtype=np.int64)
        allowed = np.zeros((n, n), dtype=bool)
        header_allowed = np.zeros((n, h), dtype=bool)
        for i, p in enumerate(self.parent):  # parents precede children: insertion order is topological
            if p >= 0:
                allowed[i] = allowed[p]
                header_allowed[i] = header_allowed[p]
                depth[i] = depth[p] + 1
            else:
                depth[i] = self.start[i]
                if p < -1:
                    header_allowed[i] = self.header.allowed[-2 - p]  # type: ignore[union-attr]
            allowed[i, i] = True
        scored = list(self._scored)
        is_scored = np.zeros(n, dtype=bool)
        is_scored[scored] = True
        order = np.concatenate([np.flatnonzero(~is_scored), np.asarray(scored, dtype=np.int64)])
        return PackedRow(
            tokens=np.asarray(self.tokens, dtype=np.int64)[order],
            positions=depth[order],
            allowed=allowed[np.ix_(order, order)],
            header_allowed=header_allowed[order],
            n_scored=len(scored),
            column={int(node): k for k, node in enumerate(order)},
        )
