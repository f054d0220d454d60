"""``p-true-fewshot``: Kadavath et al. 2022's P(True) with brainstormed samples and solved shots.

The prompt lists the model's own sampled answers ("Here are some brainstormed ideas: ..."), the proposed
answer, and asks "Is the possible answer: (A) True (B) False"; confidence = P(" (A)") / (P(" (A)") +
P(" (B)")), each scored as a whole continuation. Before the item come ``P_TRUE_SHOTS`` solved shots from
the task's other items (chosen per item by seed): each shows that item's samples, its proposal and
whether the proposal was right, as Kadavath et al. show the model's own labelled samples. Proposals are
those of zero-shot ``p-true`` (greedy answers for facts, the continuation-sum argmax for multiple choice),
so the two differ only in the prompt. Shots come from the items scored in the run, so ``--limit`` changes
which shots an item can get.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np

from calibench.methods.answers import p_true_proposals
from calibench.methods.core import (
    MethodOptions,
    ScoringSession,
    _check_kind,
    _fact_prompts,
    _record,
    _sep,
    _session,
)

P_TRUE_SHOTS = 4
MAX_IDEAS = 5  # distinct brainstormed answers shown per question


def _ideas(samples: list[Any], kind: str, item: Any) -> list[str]:
    from calibench.methods.answers import parse_letter

    seen: list[str] = []
    for a in samples:
        text = a.text
        if kind == "mc":
            k = parse_letter(text, len(item.options))
            text = item.options[k] if k is not None else ""
        if text and text not in seen:
            seen.append(text)
    return seen[:MAX_IDEAS]


def shot_indices(n: int, i: int, k: int, seed: int, item_id: Any) -> list[int]:
    """``k`` other item indices for item ``i`` (never ``i``), stable per seed and item id."""
    others = [j for j in range(n) if j != i]
    return random.Random(f"{seed}:{item_id}").sample(others, min(k, len(others)))


def p_true_fewshot(engine: Any, task: Any, *, tokenizer: Any = None, options: Mapping[str, Any] | None = None,
                   session: ScoringSession | None = None) -> list[dict]:
    """Few-shot P(True) with the model's brainstormed samples in the prompt (Kadavath et al. 2022)."""
    from calibench.tasks.prompts import apply_chat, p_true_fewshot_block

    _check_kind(task, "p-true-fewshot")
    ses = _session(engine, tokenizer, options, session)
    opts, tok = ses.options, ses.tok
    props = p_true_proposals(ses, task)
    ideas = [_ideas(s, task.kind, it) for s, it in zip(ses.samples(task), task.items, strict=True)]
    if task.kind == "mc":
        questions = [it.question for it in task.items]
    else:
        questions = _fact_prompts(task, tok, MethodOptions())  # the bare zero-shot cloze, as p-true
    blocks = []
    for i, item in enumerate(task.items):
        shots = [p_true_fewshot_block(questions[j], ideas[j], props[j].text, props[j].correct)
                 for j in shot_indices(len(task.items), i, P_TRUE_SHOTS, opts.seed, item.item_id)]
        blocks.append("\n\n".join([*shots, p_true_fewshot_block(questions[i], ideas[i], props[i].text)]))
    if opts.chat_template:
        blocks = [apply_chat(b, tok) for b in blocks]
    sep = _sep(opts)
    outs = ses.engine.score_options([(b, [sep + "(A)", sep + "(B)"]) for b in blocks])
    records = []
    for item, prop, idea, (s_a, s_b) in zip(task.items, props, ideas, outs, strict=True):
        la, lb = float(s_a.sum), float(s_b.sum)
        extra: dict[str, Any] = {"p_true": float(np.exp(la)), "p_false": float(np.exp(lb)), "ideas": idea,
                                 "truncated": max(int(getattr(s_a, "truncated", 0)), int(getattr(s_b, "truncated", 0)))}
        records.append(_record(task, "p-true-fewshot", item.item_id, confidence=float(1.0 / (1.0 + np.exp(lb - la))),
                               correct=prop.correct, pred=prop.pred, extra=extra))
    return records
