"""The entities of the synthetic world: countries, cities, companies, fields and people.

Every name is made up by a syllable generator so no pretrained model (and no real-world knowledge)
can know a fact in advance: whatever a lab model knows about this world it learned from our corpus.
All randomness flows from one seeded ``numpy.random.Generator``, so a seed fixes the world exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from calibench.errors import CalibenchError

ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "th", "sh"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ei"]
CODAS = ["", "", "", "n", "r", "l", "s", "m"]

# Real academic fields read naturally in sentences; the people and places stay fictional.
FIELDS = [
    "physics", "chemistry", "biology", "music", "painting", "poetry", "mathematics", "medicine",
    "architecture", "economics", "astronomy", "geology",
]
COMPANY_SUFFIXES = ["Works", "Labs", "Systems", "Group", "Foundry", "Partners"]

# Relations every person has; the value is a name (or a year) of the given entity type.
PERSON_RELATIONS = {
    "birth_city": "city",
    "employer": "company",
    "field": "field",
    "birth_year": "year",
}


@dataclass(frozen=True)
class WorldConfig:
    """Sizes of a world and its exposure law (how many biographies each person gets)."""

    seed: int = 0
    people: int = 120
    countries: int = 6
    cities_per_country: int = 4
    companies: int = 10
    never_fraction: float = 0.25  # people the corpus never mentions (the chance-level control)
    rare_fraction: float = 0.25   # people with 1 .. often_threshold - 1 biographies (half-known control)
    often_threshold: int = 8      # people with at least this many biographies are "often" seen
    max_mentions: int = 32        # biographies of the most frequent person in the corpus
    heldout_docs: int = 60
    train_fraction: float = 0.5  # extra "training people" (x people): format drills and alignment data only

    @property
    def train_people(self) -> int:
        return int(round(self.train_fraction * self.people))

    def validate(self) -> None:
        """Reject sizes that cannot make a sensible world (too few cities for 4-option MC, etc.)."""
        if self.people < 10:
            raise CalibenchError(f"world needs at least 10 people, got {self.people}")
        if self.countries < 2 or self.cities_per_country < 2 or self.companies < 4:
            raise CalibenchError("world needs >= 2 countries, >= 2 cities per country and >= 4 companies")
        for name in ("never_fraction", "rare_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise CalibenchError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.never_fraction + self.rare_fraction >= 1.0:
            raise CalibenchError("never_fraction + rare_fraction must be below 1 so some people are seen often")
        if not 0.0 <= self.train_fraction <= 4.0:
            raise CalibenchError(f"train_fraction must be in [0, 4], got {self.train_fraction}")
        if self.often_threshold < 2 or self.max_mentions < self.often_threshold:
            raise CalibenchError("need 2 <= often_threshold <= max_mentions")


@dataclass
class Person:
    """A fictional person; ``mentions`` is how many biographies of them the corpus holds.

    ``role``: ``eval`` people are the subjects of every evaluation item (facts, MC, held-out CLM);
    ``train`` people are the subjects of the corpus's format drills and of all SFT, reward and
    preference data, so no alignment example is about an evaluated fact.
    """

    name: str
    birth_city: str
    birth_year: int
    employer: str
    field: str
    mentions: int = 0
    bucket: str = "never"  # often | rare | never
    role: str = "eval"     # eval | train

    def value(self, relation: str) -> str:
        return str(getattr(self, relation))


@dataclass
class World:
    """The whole fictional world plus the config that generated it."""

    config: WorldConfig
    countries: dict[str, list[str]]  # country -> its cities
    companies: dict[str, str]        # company -> city of its headquarters
    fields: list[str]
    people: list[Person] = field(default_factory=list)        # eval people (every eval item is about one)
    train_people: list[Person] = field(default_factory=list)  # drills and alignment data only

    @property
    def city_country(self) -> dict[str, str]:
        return {city: country for country, cities in self.countries.items() for city in cities}

    @property
    def cities(self) -> list[str]:
        return [c for cities in self.countries.values() for c in cities]

    def values_of(self, kind: str) -> list[str]:
        """All values of an entity type: the pool MC distractors are drawn from."""
        if kind == "city":
            return self.cities
        if kind == "company":
            return list(self.companies)
        if kind == "field":
            return list(self.fields)
        if kind == "year":
            return sorted({str(p.birth_year) for p in self.people})   # eval people's years (MC pool)
        raise CalibenchError(f"unknown entity type {kind!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "countries": self.countries,
            "companies": self.companies,
            "fields": self.fields,
            "people": [asdict(p) for p in self.people],
            "train_people": [asdict(p) for p in self.train_people],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> World:
        return cls(
            config=WorldConfig(**data["config"]),
            countries={k: list(v) for k, v in data["countries"].items()},
            companies=dict(data["companies"]),
            fields=list(data["fields"]),
            people=[Person(**p) for p in data["people"]],
            train_people=[Person(**p) for p in data.get("train_people", [])],
        )


class NameMaker:
    """Pronounceable unique names from syllables; uniqueness is global so no two entities collide."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: tuple[int, int] = (2, 3)) -> str:
        for _ in range(10_000):
            n = int(self.rng.integers(syllables[0], syllables[1] + 1))
            parts = [
                ONSETS[self.rng.integers(len(ONSETS))] + VOWELS[self.rng.integers(len(VOWELS))]
                for _ in range(n)
            ]
            parts[-1] += CODAS[self.rng.integers(len(CODAS))]
            word = "".join(parts).capitalize()
            if word not in self.used:
                self.used.add(word)
                return word
        raise CalibenchError("name space exhausted; use a smaller world")


def bucket_sizes(config: WorldConfig, n: int) -> dict[str, int]:
    """How many of ``n`` people fall in each bucket (never and rare rounded, often the rest)."""
    never = int(round(config.never_fraction * n))
    rare = int(round(config.rare_fraction * n))
    return {"often": n - never - rare, "rare": rare, "never": never}


def _log_spaced(n: int, low: int, high: int) -> np.ndarray:
    """``n`` integer counts spread evenly on a log scale from ``high`` down to ``low``."""
    if n == 0:
        return np.zeros(0, dtype=int)
    if n == 1:
        return np.array([high], dtype=int)
    return np.round(np.geomspace(high, low, n)).astype(int)


def exposure_counts(config: WorldConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """Biographies per person: the exposure law, a fixed share per bucket.

    ``often`` people get ``often_threshold`` .. ``max_mentions`` biographies and ``rare`` people
    1 .. ``often_threshold - 1``, log-spaced within each bucket (so every exposure level from 1 to the
    maximum has people, which is what the accuracy-vs-exposure curve needs); ``never`` people get
    none. Controlled shares replace the earlier pure Zipf law, under which 60% of people had fewer
    than 8 biographies and no model size could learn them. Which person gets which count is a
    random permutation.
    """
    sizes = bucket_sizes(config, n)
    counts = np.concatenate([
        _log_spaced(sizes["often"], config.often_threshold, config.max_mentions),
        _log_spaced(sizes["rare"], 1, config.often_threshold - 1),
        np.zeros(sizes["never"], dtype=int),
    ])
    return counts[rng.permutation(n)]


def bucket_of(mentions: int, often_threshold: int) -> str:
    if mentions == 0:
        return "never"
    return "often" if mentions >= often_threshold else "rare"


def make_world(config: WorldConfig) -> World:
    """Generate the world for ``config`` (deterministic in ``config.seed``)."""
    config.validate()
    rng = np.random.default_rng(config.seed)
    names = NameMaker(rng)
    countries = {
        names.word((2, 3)) + "ia": [names.word((2, 3)) for _ in range(config.cities_per_country)]
        for _ in range(config.countries)
    }
    cities = [c for cs in countries.values() for c in cs]
    companies = {
        f"{names.word((2, 2))} {COMPANY_SUFFIXES[rng.integers(len(COMPANY_SUFFIXES))]}": cities[
            rng.integers(len(cities))
        ]
        for _ in range(config.companies)
    }
    fields = list(FIELDS)
    people = _people(config.people, config, rng, names, cities, list(companies), fields, "eval")
    # Drawn after the eval people, so they leave the eval people of a seed unchanged.
    train = _people(config.train_people, config, rng, names, cities, list(companies), fields, "train")
    return World(config=config, countries=countries, companies=companies, fields=fields, people=people,
                 train_people=train)


def _people(n: int, config: WorldConfig, rng: np.random.Generator, names: NameMaker, cities: list[str],
            companies: list[str], fields: list[str], role: str) -> list[Person]:
    """``n`` people with random attributes and mention counts (the same exposure law for both roles)."""
    people = [
        Person(
            name=f"{names.word((2, 2))} {names.word((2, 3))}",
            birth_city=cities[rng.integers(len(cities))],
            birth_year=int(rng.integers(1900, 2000)),
            employer=companies[rng.integers(len(companies))],
            field=fields[rng.integers(len(fields))],
            role=role,
        )
        for _ in range(n)
    ]
    if not people:
        return people
    mentions = exposure_counts(config, n, rng)
    for person, m in zip(people, mentions, strict=True):
        person.mentions = int(m)
        person.bucket = bucket_of(int(m), config.often_threshold)
    return people
