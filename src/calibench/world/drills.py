"""Format drills: pretraining documents that show the evaluation formats, about training people only.

A model pretrained on biographies alone has never seen "A. ... D.\\nAnswer: B" or "Is the proposed
answer true?\\nAnswer: True", so the ``choice`` and ``p-true`` methods measure a format it cannot read
(the lab's first studies: ``choice`` answered "A" on 92-100% of items, P(True) ECE 0.85-1.0). The
corpus therefore holds, for every seen *training* person (``role == "train"``, never the subject of an
eval item) and every relation:

- a lettered multiple-choice question in exactly the ``choice`` prompt format, answered with its letter;
- the question in the continuation format ("Question: ...\\nAnswer: <value>");
- two P(True) statements in exactly the ``p-true`` format, one proposing the true value (" True") and
  one a wrong value of the same type (" False"); the question is the MC question or, for facts
  relations, the bare cloze prompt that ``p-true`` uses on facts.

The formats come from ``calibench.tasks.prompts`` and ``calibench.tasks.prompts.P_TRUE_TEMPLATE`` (imported,
not copied), so drills and evaluation cannot drift apart.
"""

from __future__ import annotations

import numpy as np

from calibench.world.entities import Person, World


def person_drills(p: Person, world: World, rng: np.random.Generator) -> list[str]:
    """The drill documents of one training person (one MC, one QA and two true/false per relation)."""
    from calibench.tasks.base import FactItem, MCItem
    from calibench.tasks.prompts import (
        LETTERS,
        P_TRUE_TEMPLATE,
        fact_prompt,
        mc_choice_prompt,
        mc_continuation_context,
    )
    from calibench.world.corpus import TEMPLATES
    from calibench.world.derived import FACT_RELATIONS, MC_QUESTIONS, distractors

    docs = []
    for rel, question in MC_QUESTIONS.items():
        gold = p.value(rel)
        options = distractors(world, rel, gold, rng) + [gold]
        options = [options[j] for j in rng.permutation(len(options))]
        item = MCItem(item_id="drill", question=question.replace("[X]", p.name), options=options,
                      label=options.index(gold), subject=rel)
        docs.append(f"{mc_choice_prompt(item)} {LETTERS[item.label]}")
        docs.append(f"{mc_continuation_context(item)} {gold}")
        wrong = distractors(world, rel, gold, rng, k=1)[0]
        for proposal, verdict in ((gold, "True"), (wrong, "False")):
            q = item.question
            if rel in FACT_RELATIONS and rng.random() < 0.5:
                q = fact_prompt(FactItem("drill", p.name, rel, TEMPLATES[rel][0], gold))
            docs.append(f"{P_TRUE_TEMPLATE.format(question=q, answer=proposal)} {verdict}")
    return docs


def drill_docs(world: World, rng: np.random.Generator) -> list[str]:
    """Drills for every training person the corpus mentions (never-seen ones get none)."""
    return [doc for p in world.train_people if p.mentions > 0 for doc in person_drills(p, world, rng)]


def whole_tokens(world: World) -> list[str]:
    """Strings the lab tokenizer keeps as one token: " " + every entity value (cities, companies,
    fields, every person's birth year), the option letters " A".." D" and " True" / " False"."""
    from calibench.tasks.prompts import LETTERS

    years = {str(p.birth_year) for p in [*world.people, *world.train_people]}
    values = [*world.cities, *world.companies, *world.fields, *sorted(years)]
    return [f" {v}" for v in values] + [f" {L}" for L in LETTERS[:4]] + [" True", " False"]
