"""The model's own answer per item, and when two answers mean the same: shared by the sampling families.

An answer's *key* is its meaning as calibench can tell it offline: for facts, answers that match the gold
object or one of its aliases are one meaning (the aliases are the same entity by construction), and any
other answer is its SQuAD-normalised text; for multiple choice, the option letter the answer starts with
(an answer that starts with no option letter is keyed by its normalised text, a meaning of its own).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from calibench.methods.core import LETTERS, ScoringSession, _fact_gold, answer_matches, normalize_answer

GOLD_KEY = "=gold"  # the key of every answer that matches the gold object or an alias
_LETTER = re.compile(r"^\s*\(?([A-Z])(?![A-Za-z])")


@dataclass(frozen=True)
class Proposal:
    """The answer a method is confident about: its text, meaning key, correctness and ``pred`` string."""

    text: str
    key: str
    correct: bool
    pred: str


def parse_letter(text: str, n_options: int) -> int | None:
    """The option index an answer starts with ("B", " B.", "(B)"), or None."""
    m = _LETTER.match(text)
    if not m:
        return None
    k = LETTERS.index(m.group(1))
    return k if k < n_options else None


def answer_key(item: Any, kind: str, text: str) -> str:
    """The meaning key of ``text`` as an answer to ``item`` (see the module docstring)."""
    if kind == "mc":
        k = parse_letter(text, len(item.options))
        return str(k) if k is not None else "~" + normalize_answer(text)
    if answer_matches(text, _fact_gold(item)):
        return GOLD_KEY
    return normalize_answer(text)


def greedy_proposals(ses: ScoringSession, task: Any) -> list[Proposal]:
    """Facts: the greedy answer (as ``sequence``); mc: the argmax letter of ``choice``."""
    out = []
    if task.kind == "mc":
        outs, _cands, _variants = ses.choice_outputs(task)
        for item, o in zip(task.items, outs, strict=True):
            k = int(np.argmax(np.asarray(o.candidate_logprobs, dtype=np.float64)))
            out.append(Proposal(item.options[k], str(k), k == item.label, str(k)))
        return out
    for item, ans in zip(task.items, ses.greedy_answers(task), strict=True):
        out.append(Proposal(ans.text, answer_key(item, "facts", ans.text) if ans.text else "",
                            answer_matches(ans.text, _fact_gold(item)), ans.text))
    return out


def p_true_proposals(ses: ScoringSession, task: Any) -> list[Proposal]:
    """The proposals zero-shot ``p-true`` judges: greedy answers (facts), continuation-sum argmax (mc)."""
    if task.kind != "mc":
        return greedy_proposals(ses, task)
    out = []
    for item, scores in zip(task.items, ses.option_scores(task), strict=True):
        k = int(np.argmax([s.sum for s in scores]))
        out.append(Proposal(item.options[k], str(k), k == item.label, item.options[k]))
    return out


def sample_keys(ses: ScoringSession, task: Any) -> list[list[tuple[str, str, float]]]:
    """Per item, each sample's (text, meaning key, log-prob of the tokens spelling it)."""
    rows = []
    for item, samples in zip(task.items, ses.samples(task), strict=True):
        rows.append([(a.text, answer_key(item, task.kind, a.text) if a.text else "", float(a.logprob))
                     for a in samples])
    return rows
