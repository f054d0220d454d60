"""Text about the world: paraphrase templates, the pretraining corpus and held-out CLM documents.

A person with ``mentions = m`` gets m biographies in the corpus, each stating every attribute with a
randomly chosen paraphrase in a random order, so the model must learn the fact, not one string.
"""

from __future__ import annotations

import numpy as np

from calibench.errors import CalibenchError
from calibench.world.entities import Person, World

# Paraphrases per relation; "[X]" is the subject and "[Y]" the object. The first template of each
# relation ends in "[Y]" and is the one facts items use (prompt = text before "[Y]"). Several
# templates per fact, drawn afresh for every biography (Allen-Zhu & Li 2023, "Physics of Language
# Models 3.1": paraphrase diversity is what makes stored facts extractable). No template's text before
# "[Y]" may be the start of another template with a different next word (``prompt_conflicts``): the
# birth-year line "[X] was born in the year [Y]" once made "[X] was born in" answer " the".
TEMPLATES: dict[str, list[str]] = {
    "birth_city": [
        "[X] was born in [Y].",
        "[X] is a native of [Y].",
        "The hometown of [X] is [Y].",
        "[Y] is where [X] was born.",
        "[X] grew up in the city of [Y].",
        "[X] spent a childhood in [Y].",
    ],
    "employer": [
        "[X] works for [Y].",
        "[X] is employed by [Y].",
        "[Y] employs [X].",
        "The employer of [X] is [Y].",
        "[X] has a job at [Y].",
        "[X] earns a living at [Y].",
    ],
    "field": [
        "[X] works in the field of [Y].",
        "[X] is known for work in [Y].",
        "[Y] is the field of [X].",
        "The speciality of [X] is [Y].",
        "[X] studied [Y] for many years.",
        "[X] is an expert in [Y].",
    ],
    "birth_year": [
        "The birth year of [X] is [Y].",
        "[X] came into the world in [Y].",
        "[Y] is the year [X] was born.",
        "[X] was born during the year [Y].",
        "[X] has been alive since [Y].",
    ],
}


def prompt_conflicts(templates: dict[str, list[str]] = TEMPLATES) -> list[tuple[str, str]]:
    """(prompt, template) pairs where the words before a template's "[Y]" start another template
    but are followed there by something other than "[Y]" (empty when the templates are sound)."""
    out = []
    every = [t for ts in templates.values() for t in ts]
    for t in every:
        head = t.split("[Y]", 1)[0].split()
        if not head:
            continue
        for other in every:
            words = other.rstrip(".").split()
            if other != t and words[: len(head)] == head and (len(words) == len(head) or words[len(head)] != "[Y]"):
                out.append((" ".join(head), other))
    return out


OPENERS = ["", "Here is a short note. ", "From the archive: ", "A record of a life. ", "Biography. "]


NEWLINE = "\\n"  # how corpus.txt (one document per line) writes a newline inside a document


def corpus_line(doc: str) -> str:
    """A document as one line of ``corpus.txt`` (drills keep their line breaks as ``\\n``)."""
    if "\\" in doc:
        raise CalibenchError(f"corpus documents may not contain a backslash: {doc[:60]!r}")
    return doc.replace("\n", NEWLINE)


def corpus_doc(line: str) -> str:
    """The document a ``corpus.txt`` line holds (inverse of ``corpus_line``)."""
    return line.replace(NEWLINE, "\n")


def fill(template: str, subject: str, obj: str) -> str:
    """Fill a template; a sentence starting with the object (e.g. a field name) gets a capital."""
    text = template.replace("[X]", subject).replace("[Y]", obj)
    return text[0].upper() + text[1:]


def biography(person: Person, world: World, rng: np.random.Generator) -> str:
    """One biography: every attribute once, random paraphrases, random order, sometimes a country."""
    relations = list(TEMPLATES)
    rng.shuffle(relations)
    sentences = []
    for rel in relations:
        options = TEMPLATES[rel]
        sentences.append(fill(options[rng.integers(len(options))], person.name, person.value(rel)))
    if rng.random() < 0.5:
        city = person.birth_city
        sentences.append(f"{city} is a city in {world.city_country[city]}.")
    return OPENERS[rng.integers(len(OPENERS))] + " ".join(sentences)


def geography_docs(world: World, rng: np.random.Generator, repeats: int = 3) -> list[str]:
    """Background text about countries and companies, so cities and firms are frequent tokens."""
    docs = []
    for _ in range(repeats):
        for country, cities in world.countries.items():
            order = list(cities)
            rng.shuffle(order)
            docs.append(f"{country} is a country. Its cities include {', '.join(order)}.")
        for company, city in world.companies.items():
            docs.append(f"{company} is a company based in {city}, {world.city_country[city]}.")
    return docs


def pretraining_corpus(world: World, rng: np.random.Generator, extra: list[str] | None = None) -> list[str]:
    """All pretraining documents, shuffled: ``mentions`` biographies per person (eval and training
    people), geography, and ``extra`` documents (the format drills of ``world.drills``)."""
    docs = geography_docs(world, rng)
    for person in [*world.people, *world.train_people]:
        docs.extend(biography(person, world, rng) for _ in range(person.mentions))
    docs.extend(extra or [])
    order = rng.permutation(len(docs))
    return [docs[i] for i in order]


def heldout_docs(world: World, rng: np.random.Generator) -> list[dict[str, str]]:
    """Fresh biographies (new paraphrase draws) of seen people, weighted by their frequency.

    Held-out text from the training distribution is what CLM calibration is measured on (Pythia
    models are scored on Pile text they were not trained on).
    """
    seen = [p for p in world.people if p.mentions > 0]
    weights = np.array([p.mentions for p in seen], dtype=float)
    weights /= weights.sum()
    picks = rng.choice(len(seen), size=world.config.heldout_docs, p=weights)
    return [
        {"id": f"clm-{i:04d}", "text": biography(seen[j], world, rng), "bucket": seen[j].bucket}
        for i, j in enumerate(picks)
    ]
