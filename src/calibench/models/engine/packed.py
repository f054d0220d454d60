"""The packed path: an item's sequences as one prefix tree in one row; a group's shared prefix as a header.

A header runs once; its KV cache is expanded (a view, no copy) to the batch of item rows that attend
to it, through ``transformers.DynamicCache(ddp_cache_data=...)``, and passed as the model's cache.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from calibench.models.engine.batching import Progress, chunks, length_order
from calibench.models.engine.forward import Forward, torch_log_softmax64
from calibench.models.engine.plain import full_batch
from calibench.models.engine.plan import Plan, TreeSeq
from calibench.models.engine.tokens import Pair
from calibench.models.tree import PackedRow, PrefixTree, common_prefix_length, header_groups


@dataclass
class Header:
    """A group's shared prefixes, run once: the packed row, its KV cache, where each sequence hangs."""

    row: PackedRow
    past: list[tuple[Any, Any]] | None  # per layer (keys, values) of the row, batch 1; None if empty
    starts: list[int]  # per sequence index: how many leading tokens the header holds
    anchors: list[int]  # per sequence index: the header column of its last header token (-1: none)


def tree_agrees(fwd: Forward, plan: Plan, item: int, *, max_length: int) -> bool:
    """Score one item both ways, once per engine: a model that ignores custom masks fails here.

    Half of each sequence's prefix goes through a header cache, so the check covers that path too.
    """
    seqs = plan.tree_seqs[item]
    header = shared_header(fwd, [seqs], check=True)
    worst = 0.0
    for s, got in zip(seqs, tree_rows(fwd, header, [seqs])[0], strict=True):
        if s.targets is None:
            _, logits, _ = fwd.left([s.ids], 1)
            diff = (got - torch_log_softmax64(logits[:, -1])).abs().max()
        else:
            ref = full_batch(fwd, [Pair(s.ids[: s.queries[0] + 1], list(s.targets))], max_length=max_length)[0]
            diff = np.abs(got[0] - ref.token_logprobs).max()
        worst = max(worst, float(diff))
    # float32 noise is ~1e-5; 16-bit models differ between any two batch layouts by up to ~1e-2.
    # A model that ignores the mask sees other branches' tokens: differences of a nat or more.
    dtype = next(fwd.model.parameters()).dtype
    tol = 1e-3 if dtype.itemsize >= 4 else 1e-1
    if worst > tol:
        warnings.warn(
            f"packed prefix scoring disagrees with plain scoring on this model (max diff {worst:.2e}); "
            "scoring every request as its own sequence",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


def run_tree(fwd: Forward, plan: Plan, bar: Progress, *, batch_size: int) -> None:
    """Header groups (items sharing a long prefix), then one packed row per item, batch_size rows a pass."""
    if not plan.tree_items:
        return
    items = plan.tree_items
    keys = [plan.tree_seqs[i][0].head for i in items]
    for header_len, members in header_groups(keys):
        group = [items[m] for m in members]
        header = shared_header(fwd, [plan.tree_seqs[i] for i in group]) if header_len else None
        lengths = [sum(len(s.ids) for s in plan.tree_seqs[i]) for i in group]  # enough to sort by
        order = [group[j] for j in length_order(lengths)]
        for chunk in chunks(order, batch_size):
            outs = tree_rows(fwd, header, [plan.tree_seqs[i] for i in chunk])
            for i, per_seq in zip(chunk, outs, strict=True):
                plan.fill(plan.tree_seqs[i], per_seq)
                bar.update(len(plan.tree_seqs[i]))


def shared_header(fwd: Forward, group: list[list[TreeSeq]], *, check: bool = False) -> Header:
    """Run once what a group of items shares: for the k-th sequence of every item, their common prefix.

    The prefixes (choice prompts' shots, continuations' shots, ...) form one header tree, packed
    and run as one row; its KV cache is what every item row of the group then attends to.
    ``check`` takes half of each sequence's own prefix (one item), to test the header path.
    """
    import torch

    starts: list[int] = []
    tree = PrefixTree()
    paths: list[list[int]] = []
    for k in range(max(len(seqs) for seqs in group)):
        have = [seqs[k].head for seqs in group if len(seqs) > k]
        prefix = have[0][: len(have[0]) // 2] if check else have[0]
        for h in have[1:]:
            prefix = prefix[: common_prefix_length(prefix, h)]
        if len(have) < 2 and not check:
            prefix = []  # nobody else to share it with
        starts.append(len(prefix))
        paths.append(tree.add(prefix))
    row = tree.pack()
    anchors = [row.column[p[-1]] if p else -1 for p in paths]
    if not len(row):
        return Header(row, None, starts, anchors)
    cache, _ = fwd.call(
        torch.from_numpy(row.tokens)[None].to(fwd.device),
        fwd.additive_mask(row.allowed[None]),
        position_ids=torch.from_numpy(row.positions)[None].to(fwd.device),
        keep=1,
        use_cache=True,
        real_tokens=len(row),
    )
    past = [(layer[0], layer[1]) for layer in cache]
    return Header(row, past, starts, anchors)


def expanded_cache(header: Header, batch: int) -> Any:
    """The header's KV cache as a fresh ``DynamicCache`` for ``batch`` rows (expanded views, no copy)."""
    from transformers import DynamicCache

    assert header.past is not None
    return DynamicCache(ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in header.past])


def tree_rows(fwd: Forward, header: Header | None, items: list[list[TreeSeq]]) -> list[list[Any]]:
    """One forward over the packed rows of ``items``; per item, per sequence, its scored log-probs.

    A next-token sequence gets a float64 [1, V] log-softmax row; a continuation gets the float64
    log-probs of its target tokens and whether each was the argmax (as a pair).
    """
    import torch

    head_row = header.row if header is not None and header.past is not None else None
    rows, paths = [], []
    for seqs in items:
        tree = PrefixTree(head_row)
        item_paths = []
        for k, s in enumerate(seqs):
            start, anchor = (header.starts[k], header.anchors[k]) if head_row is not None else (0, -1)
            path = tree.add(s.ids, start, anchor)
            for q in s.queries:
                tree.score(path[q - start])
            item_paths.append((start, path))
        rows.append(tree.pack())
        paths.append(item_paths)
    H = 0 if head_row is None else len(head_row)
    B, W = len(rows), max(len(r) for r in rows)
    keep = max(r.n_scored for r in rows)
    ids = np.full((B, W), fwd.pad_id, dtype=np.int64)
    pos = np.zeros((B, W), dtype=np.int64)
    allowed = np.zeros((B, W, H + W), dtype=bool)
    for b, r in enumerate(rows):
        t = len(r)
        ids[b, W - t :] = r.tokens
        pos[b, W - t :] = r.positions
        allowed[b, W - t :, :H] = r.header_allowed
        allowed[b, W - t :, H + W - t :] = r.allowed
        allowed[b, np.arange(W - t), H + np.arange(W - t)] = True  # padding attends to itself
    cache = expanded_cache(header, B) if head_row is not None and header is not None else None
    _, logits = fwd.call(
        torch.from_numpy(ids).to(fwd.device),
        fwd.additive_mask(allowed),
        position_ids=torch.from_numpy(pos).to(fwd.device),
        keep=keep,
        cache=cache,
        real_tokens=sum(len(r) for r in rows),
    )
    # gather every scored position of every sequence into one [N, V] block
    picks, targets, spans = [], [], []
    for b, (r, item_paths, seqs) in enumerate(zip(rows, paths, items, strict=True)):
        item_spans = []
        for s, (start, path) in zip(seqs, item_paths, strict=True):
            begin = len(picks)
            for n, q in enumerate(s.queries):
                col = W - len(r) + r.column[path[q - start]]
                picks.append((b, keep - (W - col)))
                targets.append(s.targets[n] if s.targets is not None else -1)
            item_spans.append((begin, len(picks)))
        spans.append(item_spans)
    picked = logits[
        torch.tensor([b for b, _ in picks], device=logits.device),
        torch.tensor([c for _, c in picks], device=logits.device),
    ]
    lp = torch_log_softmax64(picked)
    tgt = torch.tensor(targets, device=lp.device)
    sel = (tgt >= 0).nonzero().squeeze(1)
    tok_lp = torch.zeros(len(targets), dtype=torch.float64, device=lp.device)
    greedy = torch.zeros(len(targets), dtype=torch.bool, device=lp.device)
    if len(sel):
        tok_lp[sel] = lp[sel].gather(1, tgt[sel][:, None]).squeeze(1)
        greedy[sel] = picked[sel].argmax(dim=-1) == tgt[sel]
    tok_np, greedy_np = tok_lp.cpu().numpy(), greedy.cpu().numpy()
    out: list[list[Any]] = []
    for seqs, item_spans in zip(items, spans, strict=True):
        out.append(
            [
                lp[a:e] if s.targets is None else (tok_np[a:e].copy(), greedy_np[a:e].copy())
                for s, (a, e) in zip(seqs, item_spans, strict=True)
            ]
        )
    return out
