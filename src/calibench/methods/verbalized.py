"""Verbalized confidence: the model is asked how sure it is, and says so in words or a number.

Two prompts (``calibench.tasks.prompts``): ``verbalized`` asks for the answer and the confidence in one
generation (Tian et al. 2023's "Verb. 1S"; Xiong et al. 2024's vanilla prompt), ``verbalized-2s``
gives the model's own greedy answer back and asks for the confidence alone ("Verb. 2S"). The scale is
``verbal_scale``: ``numeric`` (0 to 100) or ``linguistic`` (Tian et al.'s list of expressions, mapped to
probabilities by ``LINGUISTIC``).

Parsing never invents a number: a value is read only after the "Confidence:" label (the two-stage prompt
ends in it), must be on the asked scale (numeric: a number at the start, or exactly one percentage;
linguistic: exactly one expression of the list, not negated) and, for numbers, within 0 to 100; 0.8 is
read as 0.8 out of 100, as asked. An item whose confidence does
not parse, or whose one-stage answer names no option, is left out of the records; every record of the
(task, method) carries ``n_items``, ``n_unparsed`` and the reasons, which ``calibench.validity`` turns into
a parse-failure share. When no item parses there are no records to measure and the method raises.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from calibench.errors import NotMeasurable
from calibench.methods.answers import answer_key, greedy_proposals, parse_letter
from calibench.methods.core import (
    ScoringSession,
    _check_kind,
    _fact_gold,
    _record,
    _session,
    answer_matches,
    first_sentence,
)

# Tian et al. 2023 (Just Ask for Calibration), "Ling. 1S": the expressions of Fagen-Ulmschneider's survey of
# how people read probability words; the numbers are approximate survey medians as encoded here.
LINGUISTIC: dict[str, float] = {
    "almost certain": 0.95, "highly likely": 0.90, "very good chance": 0.80, "probable": 0.70,
    "likely": 0.70, "we believe": 0.75, "probably": 0.70, "better than even": 0.60, "about even": 0.50,
    "we doubt": 0.20, "improbable": 0.10, "unlikely": 0.20, "probably not": 0.25, "little chance": 0.10,
    "almost no chance": 0.02, "highly unlikely": 0.05, "chances are slight": 0.10,
}
_BY_LENGTH = sorted(LINGUISTIC, key=len, reverse=True)  # "probably not" before "probably"
_LABEL = re.compile(r"confidence\s*(?:level)?\s*[:=]?", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*(%|percent)?")
_PERCENT = re.compile(r"(?<![\w.])([-+]?\d+(?:\.\d+)?)\s*(?:%|percent\b)", re.IGNORECASE)
_ONE_STAGE_EXTRA_TOKENS = 12  # room after the answer for "\nConfidence: 90"
_TWO_STAGE_TOKENS = 6


class NoStatedConfidence(NotMeasurable):
    """No item of a (task, method) states a parseable confidence: the model cannot be measured this way."""


@dataclass(frozen=True)
class Stated:
    """A parsed confidence: ``value`` in [0, 1] or None with the ``reason`` it is missing."""

    value: float | None
    reason: str = ""
    said: str = ""  # the number or expression as read


def _phrases(low: str) -> list[tuple[int, str]]:
    """Whole-word scale expressions in ``low`` (longest first at each position, no overlaps)."""
    found: list[tuple[int, str]] = []
    i = 0
    while i < len(low):
        if i == 0 or not low[i - 1].isalpha():
            hit = next((p for p in _BY_LENGTH if low.startswith(p, i) and not low[i + len(p):i + len(p) + 1].isalpha()),
                       None)
            if hit:
                found.append((i, hit))
                i += len(hit)
                continue
        i += 1
    return found


def parse_value(text: str, scale: str) -> Stated:
    """The confidence ``text`` states on ``scale`` ("numeric" 0-100, or "linguistic").

    Numeric: a number at the start ("85", "85%"), else exactly one percentage anywhere ("I am 85%
    sure"); a bare number elsewhere is not read (it may be part of an answer). Linguistic: exactly one
    expression of the scale, as whole words ("The proposed answer is highly unlikely"); a negated one
    ("not likely") or two different ones are not read.
    """
    text = text.strip().strip('"').strip()
    if scale == "linguistic":
        low = " ".join(text.lower().split())
        found = _phrases(low)
        if not found:
            return Stated(None, "not on the scale")
        if len({p for _, p in found}) > 1:
            return Stated(None, "ambiguous")
        at, phrase = found[0]
        before = low[:at].split()
        if before and (before[-1] in ("not", "no", "never") or before[-1].endswith("n't")):
            return Stated(None, "negated")
        return Stated(LINGUISTIC[phrase], said=phrase)
    m = _NUMBER.match(text)
    if m:
        x = float(m.group(1))
        said = m.group(0).strip()
    else:
        pcts = _PERCENT.findall(text)
        if not pcts:
            return Stated(None, "not a number")
        if len(set(pcts)) > 1:
            return Stated(None, "ambiguous")
        x, said = float(pcts[0]), pcts[0] + "%"
    if not 0.0 <= x <= 100.0:
        return Stated(None, "out of range")
    return Stated(x / 100.0, said=said)


def parse_labelled(text: str, scale: str) -> Stated:
    """The value after the first "Confidence:" label in ``text`` (one-stage answers)."""
    m = _LABEL.search(text)
    if not m:
        return Stated(None, "no confidence")
    return parse_value(text[m.end():], scale)


def _one_stage(ses: ScoringSession, task: Any) -> list[tuple[str, str, bool, Stated, str]]:
    from calibench.tasks.prompts import verbal_one_stage_prompt

    opts = ses.options
    chat = ses.tok if opts.chat_template else None
    prompts = [verbal_one_stage_prompt(it, opts.verbal_scale, chat) for it in task.items]
    gens = ses.engine.greedy(prompts, max_new_tokens=opts.max_new_tokens + _ONE_STAGE_EXTRA_TOKENS,
                             stop=("\n\n", "\nQuestion:"))
    out = []
    for item, g in zip(task.items, gens, strict=True):
        text = g.text
        head, _, _rest = text.strip().partition("\n")
        stated = parse_labelled(text, opts.verbal_scale)
        if task.kind == "mc":
            k = parse_letter(head, len(item.options))
            if k is None:
                out.append(("", "", False, Stated(None, "no option letter"), text))
                continue
            out.append((str(k), str(k), k == item.label, stated, text))
        else:
            answer = first_sentence(_LABEL.split(head)[0])
            out.append((answer, answer_key(item, "facts", answer), answer_matches(answer, _fact_gold(item)),
                        stated if answer else Stated(None, "no answer"), text))
    return out


def _two_stage(ses: ScoringSession, task: Any) -> list[tuple[str, str, bool, Stated, str]]:
    from calibench.tasks.prompts import verbal_two_stage_prompt

    opts = ses.options
    chat = ses.tok if opts.chat_template else None
    props = greedy_proposals(ses, task)
    shown = [it.options[int(p.pred)] if task.kind == "mc" else p.text for it, p in zip(task.items, props, strict=True)]
    prompts = [verbal_two_stage_prompt(it, a, opts.verbal_scale, chat) for it, a in zip(task.items, shown, strict=True)]
    gens = ses.engine.greedy(prompts, max_new_tokens=_TWO_STAGE_TOKENS, stop=("\n",))
    out = []
    for p, a, g in zip(props, shown, gens, strict=True):
        stated = parse_value(g.text, opts.verbal_scale) if a else Stated(None, "no answer")
        out.append((p.pred, p.key, p.correct, stated, g.text))
    return out


def _verbalized(method: str, engine: Any, task: Any, tokenizer: Any, options: Mapping[str, Any] | None,
                session: ScoringSession | None) -> list[dict]:
    _check_kind(task, method)
    ses = _session(engine, tokenizer, options, session)
    rows = _one_stage(ses, task) if method == "verbalized" else _two_stage(ses, task)
    reasons = Counter(s.reason for _, _, _, s, _ in rows if s.value is None)
    n_unparsed = sum(reasons.values())
    if n_unparsed == len(rows):
        example = next((g for *_, g in rows if g.strip()), "")
        raise NoStatedConfidence(
            f"method '{method}' on task '{task.name}': none of the {len(rows)} answers states a confidence "
            f"on the {ses.options.verbal_scale} scale ({dict(reasons)}; e.g. {example[:60]!r}); the model cannot "
            "be measured with this method, leave it out of --methods")
    records = []
    for item, (pred, _key, correct, stated, gen) in zip(task.items, rows, strict=True):
        if stated.value is None:
            continue
        extra: dict[str, Any] = {"generation": gen, "stated": stated.said, "scale": ses.options.verbal_scale,
                                 "n_items": len(rows), "n_unparsed": n_unparsed, "unparsed": dict(reasons)}
        if task.kind == "mc":
            extra["n_options"] = len(item.options)
        records.append(_record(task, method, item.item_id, confidence=stated.value, correct=correct, pred=pred,
                               extra=extra))
    return records


def verbalized(engine: Any, task: Any, *, tokenizer: Any = None, options: Mapping[str, Any] | None = None,
               session: ScoringSession | None = None) -> list[dict]:
    """One stage: the model answers and states its confidence; unparseable items are counted, not scored."""
    return _verbalized("verbalized", engine, task, tokenizer, options, session)


def verbalized_2s(engine: Any, task: Any, *, tokenizer: Any = None, options: Mapping[str, Any] | None = None,
                  session: ScoringSession | None = None) -> list[dict]:
    """Two stages: the greedy answer is given back and the model states its confidence in it."""
    return _verbalized("verbalized-2s", engine, task, tokenizer, options, session)
