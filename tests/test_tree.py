"""Prefix trees and header groups: the structure the engine's packed scoring relies on."""

from __future__ import annotations

import numpy as np
import pytest

from calibench.models.tree import PrefixTree, common_prefix_length, header_groups


def test_common_prefix_length() -> None:
    assert common_prefix_length([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2
    assert common_prefix_length([], [1]) == 0
    assert common_prefix_length([5], [6]) == 0


def test_each_distinct_prefix_is_one_node_and_sees_only_its_ancestors() -> None:
    tree = PrefixTree()
    a = tree.add([1, 2, 3])
    b = tree.add([1, 2, 4, 9])
    c = tree.add([1, 5])
    assert a[:2] == b[:2] == [0, 1] and c[0] == 0  # shared prefixes reuse nodes
    assert len(tree.tokens) == 6  # 1, 2, 3, 4, 9, 5
    tree.score(a[2])
    tree.score(b[1])
    row = tree.pack()
    assert row.n_scored == 2 and len(row) == 6
    # scored nodes are the last columns, in the order they were asked for
    assert [row.column[a[2]], row.column[b[1]]] == [4, 5]
    assert row.tokens.tolist()[-2:] == [3, 2]
    depth = {int(n): int(row.positions[row.column[n]]) for n in range(6)}
    assert depth == {0: 0, 1: 1, 2: 2, 3: 2, 4: 3, 5: 1}
    sees = {n: {m for m in range(6) if row.allowed[row.column[n], row.column[m]]} for n in range(6)}
    assert sees[a[2]] == {0, 1, a[2]}
    assert sees[b[3]] == {0, 1, b[2], b[3]}
    assert sees[c[1]] == {0, c[1]}
    assert row.header_allowed.shape == (6, 0)


def test_sequences_below_a_header_see_the_header_ancestors_of_their_anchor() -> None:
    head = PrefixTree()
    shots_a = head.add([7, 7, 8])
    shots_b = head.add([7, 9])
    header = head.pack()
    tree = PrefixTree(header)
    p = tree.add([7, 7, 8, 1, 2], start=3, anchor=header.column[shots_a[-1]])
    q = tree.add([7, 9, 1, 3], start=2, anchor=header.column[shots_b[-1]])
    assert p[0] != q[0]  # same token 1, but below different header nodes: not shared
    row = tree.pack()
    assert row.positions[row.column[p[0]]] == 3 and row.positions[row.column[q[1]]] == 3
    seen_p = set(np.flatnonzero(row.header_allowed[row.column[p[1]]]).tolist())
    seen_q = set(np.flatnonzero(row.header_allowed[row.column[q[1]]]).tolist())
    assert seen_p == {header.column[n] for n in shots_a}
    assert seen_q == {header.column[n] for n in shots_b}
    with pytest.raises(ValueError, match="anchor"):
        tree.add([1, 2], start=1)


def test_header_groups_keep_each_subjects_long_header() -> None:
    geo, rel = list(range(100, 140)), list(range(100, 110)) + list(range(300, 330))  # share 10 tokens
    stems = [geo + [1, 2], rel + [1], geo + [3], rel + [2, 2], [9, 9], geo + [1, 5], rel + [4]]
    groups = dict((tuple(sorted(m)), h) for h, m in header_groups(stems))
    assert groups[(0, 2, 5)] == 40  # not cut to the 10 tokens geo shares with rel
    assert groups[(1, 3, 6)] == 40
    assert groups[(4,)] == 0  # no partner: no header
    assert sorted(i for m in groups for i in m) == list(range(len(stems)))


def test_header_groups_need_enough_saving() -> None:
    stems = [[1, 2, 3, 4, 10 + i] for i in range(5)]  # 4 shared tokens
    assert header_groups(stems, min_saved=64) == [(0, [0, 1, 2, 3, 4])]  # saves 16 tokens: not worth it
    assert header_groups(stems, min_saved=16) == [(4, [0, 1, 2, 3, 4])]
    assert header_groups([[1, 2, 3], [1, 2, 4]], min_header=4) == [(0, [0, 1])]
