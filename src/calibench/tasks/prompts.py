"""Prompt formats for every method, in one place, so methods never build strings themselves.

- choice: MMLU style ("question\\nA. x\\nB. y\\nAnswer:"), scored on the next-token letter.
- continuation: "Question: ...\\nAnswer:" with each option scored as " " + option (lm-eval's
  default target delimiter); with a chat template the delimiter is "" as lm-eval does, since the
  assistant turn starts fresh.
- facts: the template with [X] filled, cut before [Y] ("The capital of France is").

Zero-shot by default; k-shot examples come from the task's few-shot pool (MMLU dev split: first k
of the same subject, as lm-eval does) or else from the task's other items chosen by seed, never
the item itself. ``chat_template`` is a tokenizer: the whole prompt becomes one user message and
the assistant turn is opened (``add_generation_prompt=True``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from calibench.errors import CalibenchError
from calibench.tasks._names import MMLU_SUBJECTS
from calibench.tasks.base import FactItem, MCItem, Task

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# p-true (Kadavath et al. 2022): the question, a proposed answer, and " True" / " False" after "Answer:"
P_TRUE_TEMPLATE = "Question: {question}\nProposed answer: {answer}\nIs the proposed answer true?\nAnswer:"


def apply_chat(prompt: str, tokenizer: Any | None) -> str:
    """Wrap ``prompt`` as one user turn with the tokenizer's chat template (no-op when None)."""
    if tokenizer is None:
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise CalibenchError("the tokenizer has no chat template; run without --chat-template")
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def _letters(item: MCItem) -> str:
    if len(item.options) > len(LETTERS):
        raise CalibenchError(f"item {item.item_id}: {len(item.options)} options is more than {len(LETTERS)} letters")
    return LETTERS[: len(item.options)]


def _choice_block(item: MCItem) -> str:
    lines = [item.question] + [f"{L}. {o}" for L, o in zip(_letters(item), item.options, strict=True)]
    return "\n".join(lines) + "\nAnswer:"


def mc_choice_prompt(item: MCItem, fewshot: Sequence[MCItem] = (), chat_template: Any | None = None) -> str:
    """Question, lettered options, "Answer:"; MMLU items get lm-eval's subject description line."""
    head = ""
    if item.subject in MMLU_SUBJECTS:
        head = f"The following are multiple choice questions (with answers) about {item.subject.replace('_', ' ')}.\n\n"
    shots = "".join(f"{_choice_block(ex)} {LETTERS[ex.label]}\n\n" for ex in fewshot)
    return apply_chat(head + shots + _choice_block(item), chat_template)


def mc_choice_letters(item: MCItem, *, chat: bool = False) -> list[str]:
    """The letter strings whose next-token probability the choice method reads (" A" after "Answer:")."""
    return [("" if chat else " ") + L for L in _letters(item)]


def mc_continuation_context(item: MCItem, fewshot: Sequence[MCItem] = (), chat_template: Any | None = None) -> str:
    """"Question: ...\\nAnswer:" (with k solved examples before it)."""
    shots = "".join(f"Question: {ex.question}\nAnswer: {ex.options[ex.label]}\n\n" for ex in fewshot)
    return apply_chat(f"{shots}Question: {item.question}\nAnswer:", chat_template)


def mc_continuation_options(item: MCItem, *, chat: bool = False) -> list[str]:
    """The continuations to score: " " + option (or the bare option inside a chat turn)."""
    return [("" if chat else " ") + o for o in item.options]


def fact_statement(item: FactItem, obj: str | None = None) -> str:
    """The full sentence with [X] and [Y] filled (used for few-shot examples and prose)."""
    text = item.template.replace("[X]", item.subject).replace("[Y]", item.object if obj is None else obj)
    return text[:1].upper() + text[1:]


def fact_prompt(item: FactItem, fewshot: Sequence[FactItem] = (), chat_template: Any | None = None) -> str:
    """Template with [X] filled and cut before [Y], e.g. "The capital of France is"."""
    if "[Y]" not in item.template:
        raise CalibenchError(f"item {item.item_id}: template has no [Y]: {item.template!r}")
    head = item.template.split("[Y]", 1)[0].replace("[X]", item.subject).rstrip()
    head = head[:1].upper() + head[1:]
    shots = "".join(fact_statement(ex) + "\n" for ex in fewshot)
    return apply_chat(shots + head, chat_template)


def _same(a: Any, b: Any) -> bool:
    if a.item_id == b.item_id and type(a) is type(b):
        return True
    if isinstance(a, MCItem) and isinstance(b, MCItem):
        return a.question == b.question and a.options == b.options
    if isinstance(a, FactItem) and isinstance(b, FactItem):
        return (a.subject, a.relation) == (b.subject, b.relation)
    return False


def select_fewshot(task: Task, item: Any, k: int, *, seed: int = 0) -> list:
    """``k`` solved examples for ``item``: never the item itself, same subject/relation when possible.

    With an explicit pool (MMLU dev) the first k are taken, as lm-eval does; otherwise k other items
    of the task are drawn with a per-item seed, so the choice is stable whatever else is scored.
    """
    if k <= 0:
        return []
    if task.kind == "clm":
        raise CalibenchError("few-shot prompts do not apply to CLM tasks")
    explicit = bool(task.fewshot)
    pool = [x for x in (task.fewshot or task.items) if not _same(x, item)]
    group = getattr(item, "subject", "") if isinstance(item, MCItem) else getattr(item, "relation", "")
    key = (lambda x: x.subject) if isinstance(item, MCItem) else (lambda x: x.relation)
    same_group = [x for x in pool if group and key(x) == group]
    if len(same_group) >= k:
        pool = same_group
    if len(pool) < k:
        raise CalibenchError(f"task '{task.name}': only {len(pool)} few-shot examples available for "
                             f"item {item.item_id}, {k} asked")
    if explicit:
        return pool[:k]
    return random.Random(f"{seed}/{item.item_id}/fewshot").sample(pool, k)


# -- confidence families beyond token probabilities (calibench.methods.verbalized, .ptrue) ----------

VERBAL_NUMERIC_ASK = "how confident you are that your answer is correct, as a number from 0 to 100"
VERBAL_LINGUISTIC_ASK = ("how likely your answer is to be correct, as one of: almost certain, highly likely, "
                         "very good chance, probable, likely, we believe, probably, better than even, about even, "
                         "we doubt, improbable, unlikely, probably not, little chance, almost no chance, "
                         "highly unlikely, chances are slight")


def _verbal_ask(scale: str) -> str:
    return VERBAL_LINGUISTIC_ASK if scale == "linguistic" else VERBAL_NUMERIC_ASK


def verbal_question(item: Any) -> str:
    """The question a verbalized prompt asks: the lettered options for mc, the open cloze for facts."""
    if isinstance(item, MCItem):
        return _choice_block(item)[: -len("\nAnswer:")]
    return fact_prompt(item) + " ..."


def verbal_one_stage_prompt(item: Any, scale: str, chat_template: Any | None = None) -> str:
    """One stage (Tian et al. 2023 "Verb. 1S"): the answer, then on its own line "Confidence: ..."."""
    what = "the letter of the correct option" if isinstance(item, MCItem) else "the words that complete the statement"
    text = (f"Answer with {what}. Then, on a new line, write \"Confidence:\" followed by {_verbal_ask(scale)}.\n\n"
            f"Question: {verbal_question(item)}\nAnswer:")
    return apply_chat(text, chat_template)


def verbal_two_stage_prompt(item: Any, answer: str, scale: str, chat_template: Any | None = None) -> str:
    """Two stages (Tian et al. "Verb. 2S", Xiong et al. 2024): the model's answer is given back and the
    confidence asked on its own; the prompt ends in "Confidence:" so the stated value comes next."""
    text = (f"Question: {verbal_question(item)}\nProposed answer: {answer}\n"
            f"Say {_verbal_ask(scale).replace('your answer', 'the proposed answer')}.\nConfidence:")
    return apply_chat(text, chat_template)


def p_true_fewshot_block(question: str, ideas: Sequence[str], answer: str, verdict: bool | None = None) -> str:
    """Kadavath et al. 2022's P(True) with brainstormed samples; a solved shot ends in " (A)" / " (B)"."""
    text = (f"Question: {question}\nHere are some brainstormed ideas: " + "\n".join(ideas) +
            f"\nPossible Answer: {answer}\nIs the possible answer:\n (A) True\n (B) False\nThe possible answer is:")
    if verdict is not None:
        text += " (A)" if verdict else " (B)"
    return text
