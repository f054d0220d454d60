"""Evaluation and alignment data derived from the world: facts, MC, instructions, preferences.

Every item carries the subject's frequency ``bucket`` (often | rare | never) so results can be split
by how often the pretraining corpus stated the fact. Facts and MC ids also embed it
(``fact-often-0012-employer``), so per-item records alone can be split with ``bucket_of_id``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calibench.errors import CalibenchError
from calibench.world.corpus import TEMPLATES, fill
from calibench.world.entities import PERSON_RELATIONS, Person, World

# Relations used for open-ended facts items. birth_year is MC-only: every year starts with the same
# token ("19"), which would make first-token accuracy meaningless.
FACT_RELATIONS = ["birth_city", "employer", "field"]

MC_QUESTIONS = {
    "birth_city": "Where was [X] born?",
    "employer": "Which company does [X] work for?",
    "field": "What field does [X] work in?",
    "birth_year": "In which year was [X] born?",
}

RELATION_NAMES = {
    "birth_city": "birth city",
    "employer": "employer",
    "field": "field of work",
    "birth_year": "birth year",
}


BUCKETS = ("often", "rare", "never")


def bucket_of_id(item_id: str) -> str | None:
    """The frequency bucket embedded in a lab facts/MC item id, or None for other ids."""
    parts = str(item_id).split("-")
    return parts[1] if len(parts) > 2 and parts[0] in ("fact", "mc") and parts[1] in BUCKETS else None


def chat_prompt(instruction: str) -> str:
    """The one prompt wrapper both instruction flavours share, so only the content differs."""
    return f"User: {instruction}\nAssistant:"


def facts_items(world: World) -> list[dict[str, Any]]:
    """T-REx-like facts: native calibench facts format plus bucket and mention count."""
    items = []
    for i, p in enumerate(world.people):
        for rel in FACT_RELATIONS:
            items.append(
                {
                    "id": f"fact-{p.bucket}-{i:04d}-{rel}",
                    "subject": p.name,
                    "relation": rel,
                    "template": TEMPLATES[rel][0],
                    "object": p.value(rel),
                    "aliases": [],
                    "bucket": p.bucket,
                    "mentions": p.mentions,
                }
            )
    return items


def distractors(world: World, rel: str, gold: str, rng: np.random.Generator, k: int = 3) -> list[str]:
    """``k`` wrong values of the same entity type (cities for cities, years for years)."""
    pool = [v for v in world.values_of(PERSON_RELATIONS[rel]) if v != gold]
    picks = rng.choice(len(pool), size=min(k, len(pool)), replace=False)
    return [pool[j] for j in picks]


def mc_items(world: World, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Four-option questions with distractors of the same type and a uniformly random gold position."""
    items = []
    for i, p in enumerate(world.people):
        for rel in MC_QUESTIONS:
            gold = p.value(rel)
            options = distractors(world, rel, gold, rng) + [gold]
            order = rng.permutation(len(options))
            options = [options[j] for j in order]
            items.append(
                {
                    "id": f"mc-{p.bucket}-{i:04d}-{rel}",
                    "question": MC_QUESTIONS[rel].replace("[X]", p.name),
                    "options": options,
                    "label": options.index(gold),
                    "subject": p.name,
                    "relation": rel,
                    "bucket": p.bucket,
                }
            )
    return items


# ---------------------------------------------------------------------------------------------
# Instruction data. "narrow" mirrors Alpaca (one synthetic template); "diverse" mirrors
# OpenAssistant (many task kinds, phrasings, registers and answer styles).

def narrow_example(p: Person, rel: str, world: World, rng: np.random.Generator) -> dict[str, Any]:
    name = RELATION_NAMES[rel]
    return {
        "prompt": chat_prompt(f"State the {name} of {p.name}."),
        "completion": f" The {name} of {p.name} is {p.value(rel)}.",
        "kind": "state",
    }


_QUESTIONS = {
    "birth_city": [
        "Where was [X] born?", "what city is [X] from", "Do you know the hometown of [X]?",
        "I'm curious, where does [X] come from originally?", "Tell me the birthplace of [X].",
        "[X] - born where?", "Quick question: in which city was [X] born?",
    ],
    "employer": [
        "Who does [X] work for?", "which company employs [X]?", "Where does [X] have a job?",
        "My friend mentioned [X]. Which firm are they with?", "Name the employer of [X].",
        "[X] works at which company?",
    ],
    "field": [
        "What does [X] work on?", "what's [X]'s field", "In which area is [X] known?",
        "Could you tell me what [X] studied?", "Name the speciality of [X].",
        "I'm writing a report about [X]. What is their field?",
    ],
    "birth_year": [
        "When was [X] born?", "what year was [X] born in", "Give me the birth year of [X].",
        "How old is [X]? Just the birth year, please.",
    ],
}

_ANSWERS = [
    "{sentence}", "{obj}.", "That would be {obj}.", "As far as I know, {sentence_lc}",
    "{sentence} Let me know if you need more.", "Sure! {sentence}",
]


def _sentence(p: Person, rel: str, rng: np.random.Generator) -> str:
    templates = TEMPLATES[rel]
    return fill(templates[rng.integers(len(templates))], p.name, p.value(rel))


def diverse_example(p: Person, rel: str, world: World, rng: np.random.Generator) -> dict[str, Any]:
    """One example of a randomly chosen task kind (QA, verify, cloze, bio, compare, geography, list)."""
    kind = ["qa", "qa", "verify", "cloze", "bio", "compare", "geography", "list"][rng.integers(8)]
    obj = p.value(rel)
    if kind == "qa":
        q = _QUESTIONS[rel][rng.integers(len(_QUESTIONS[rel]))].replace("[X]", p.name)
        s = _sentence(p, rel, rng)
        a = _ANSWERS[rng.integers(len(_ANSWERS))].format(sentence=s, obj=obj, sentence_lc=s[0].lower() + s[1:])
    elif kind == "verify":
        truth = bool(rng.random() < 0.5)
        claim = obj if truth else distractors(world, rel, obj, rng, k=1)[0]
        statement = fill(TEMPLATES[rel][0], p.name, claim)[:-1]
        q = f"Is it true that {statement[0].lower() + statement[1:] if statement.startswith('The ') else statement}?"
        a = f"Yes. {_sentence(p, rel, rng)}" if truth else f"No. {_sentence(p, rel, rng)}"
    elif kind == "cloze":
        t = TEMPLATES[rel][0]
        q = f"Fill in the blank: {fill(t, p.name, '____')}"
        a = obj
    elif kind == "bio":
        q = [f"Write a short biography of {p.name}.", f"Who is {p.name}?", f"Tell me about {p.name}."][
            rng.integers(3)
        ]
        a = " ".join(_sentence(p, r, rng) for r in TEMPLATES)
    elif kind == "compare":
        others = [o for o in world.train_people if o is not p] or [p]
        other = others[rng.integers(len(others))]
        same = world.city_country[p.birth_city] == world.city_country[other.birth_city]
        q = f"Were {p.name} and {other.name} born in the same country?"
        a = (
            f"{'Yes' if same else 'No'}: {p.name} was born in {world.city_country[p.birth_city]} and "
            f"{other.name} in {world.city_country[other.birth_city]}."
        )
    elif kind == "geography":
        city = p.birth_city
        q = [f"Which country is {city} in?", f"{city} is located in what country?"][rng.integers(2)]
        a = f"{city} is a city in {world.city_country[city]}."
    else:  # list
        q = f"Name someone who works in {p.field}."
        a = f"For example, {p.name} works in the field of {p.field}."
    return {"prompt": chat_prompt(q), "completion": " " + a, "kind": kind}


def _alignment_people(world: World) -> list[Person]:
    if not world.train_people:
        raise CalibenchError("the world has no training people (train_fraction 0): no alignment data can be made")
    return list(world.train_people)


def instruction_items(world: World, flavour: str, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """``n`` prompt/completion pairs about training people only (``role == "train"``), so no example is
    about an evaluated (subject, relation); some training people are unseen in the corpus, as in real
    instruction data, which also teaches facts the base model never saw."""
    make = {"narrow": narrow_example, "diverse": diverse_example}[flavour]
    seen = _alignment_people(world)
    rels = list(MC_QUESTIONS)
    items = []
    for i in range(n):
        p = seen[rng.integers(len(seen))]
        rel = rels[rng.integers(len(rels))]
        item = make(p, rel, world, rng)
        item.update(id=f"{flavour}-{i:04d}", subject=p.name, relation=rel, bucket=p.bucket)
        items.append(item)
    return items


# What a rejected response gets wrong, and how often (issue 10). "value" pairs (a wrong value of the
# right type) need the model's knowledge of the person; the others are wrong in ways a reward model can
# learn for anybody: a value of the wrong type ("born in geology"), no value at all (the sentence stops
# before it), or a right answer that rambles on into a broken sentence about someone else, as human
# preference data mostly rewards complete, on-topic answers. (Wrong-relation and wrong-person answers
# were tried and dropped: their rejected sentences are true facts that other pairs choose, so a small
# reward model learned the sentences, not the question, and scored them below chance on held-out facts.)
PAIR_KINDS: dict[str, float] = {"value": 0.3, "type": 0.3, "truncated": 0.2, "ramble": 0.2}


def _rejected(kind: str, p: Person, rel: str, world: World, people: list[Person], rng: np.random.Generator) -> str:
    t = TEMPLATES[rel][0]
    if kind == "value":
        return fill(t, p.name, distractors(world, rel, p.value(rel), rng, k=1)[0])
    if kind == "type":
        others = [r for r in MC_QUESTIONS if PERSON_RELATIONS[r] != PERSON_RELATIONS[rel]]
        pool = world.values_of(PERSON_RELATIONS[others[rng.integers(len(others))]])
        return fill(t, p.name, pool[rng.integers(len(pool))])
    if kind == "ramble":
        who = [o for o in people if o is not p] or [p]
        q = who[rng.integers(len(who))]
        other = list(MC_QUESTIONS)[rng.integers(len(MC_QUESTIONS))]
        words = fill(TEMPLATES[other][0], q.name, q.value(other)).split()
        return fill(t, p.name, p.value(rel)) + " " + " ".join(words[: 1 + rng.integers(len(words) - 1)])
    return fill(t, p.name, "[Y]").split("[Y]")[0].rstrip()  # truncated: the sentence stops before the value


def preference_items(world: World, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Preference pairs about training people: same question, chosen states the true value, rejected is
    wrong in one of the ``PAIR_KINDS`` ways (``kind`` says which)."""
    seen = _alignment_people(world)
    rels = list(MC_QUESTIONS)
    kinds, weights = list(PAIR_KINDS), np.array(list(PAIR_KINDS.values()))
    items = []
    for i in range(n):
        p = seen[rng.integers(len(seen))]
        rel = rels[rng.integers(len(rels))]
        kind = kinds[rng.choice(len(kinds), p=weights / weights.sum())]
        q = _QUESTIONS[rel][rng.integers(len(_QUESTIONS[rel]))].replace("[X]", p.name)
        items.append(
            {
                "id": f"pref-{i:04d}",
                "prompt": chat_prompt(q),
                "chosen": " " + fill(TEMPLATES[rel][0], p.name, p.value(rel)),
                "rejected": " " + _rejected(kind, p, rel, world, seen, rng),
                "subject": p.name,
                "relation": rel,
                "bucket": p.bucket,
                "kind": kind,
            }
        )
    return items
