"""Built-in offline tasks from the real country facts that the ``countryinfo`` package ships.

``world-facts``: capital, world region, subregion, official language and currency of each country
(about a thousand FactItems). ``world-mc``: the same facts as 4-option questions whose distractors
are values of the same relation (a capital for a capital), never a right answer for that country.
``world-clm``: readable prose paragraphs made from the same facts, an offline CLM corpus.
All three are deterministic given ``seed``; distractors are drawn per item, so filtering or
``limit`` never changes another item's options.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from calibench.errors import CalibenchError
from calibench.tasks._names import CURRENCIES, LANGUAGES
from calibench.tasks.base import CLMDoc, FactItem, MCItem

RELATIONS: tuple[str, ...] = ("capital", "region", "subregion", "language", "currency")

# (template when the country has one value, template when it has several, MC question, MC question
# when several). With several values any of them is right, so the template says "One ...".
_TEMPLATES: dict[str, tuple[str, str, str, str]] = {
    "capital": ("The capital of [X] is [Y].", "The capital of [X] is [Y].",
                "What is the capital of [X]?", "What is the capital of [X]?"),
    "region": ("[X] lies in the world region of [Y].", "[X] lies in the world region of [Y].",
               "In which world region does [X] lie?", "In which world region does [X] lie?"),
    "subregion": ("[X] lies in the subregion of [Y].", "[X] lies in the subregion of [Y].",
                  "In which subregion does [X] lie?", "In which subregion does [X] lie?"),
    "language": ("The official language of [X] is [Y].", "One official language of [X] is [Y].",
                 "What is the official language of [X]?", "Which of these is an official language of [X]?"),
    "currency": ("The currency of [X] is the [Y].", "One currency used in [X] is the [Y].",
                 "What is the currency of [X]?", "Which of these currencies is used in [X]?"),
}

# Entries left out: historical states, duplicates of another entry, and contested capitals.
_SKIP = {"burma", "holy see (vatican city state)", "palestine", "palestine, state of",
         "serbia and montenegro", "antilles néerlandaises", "wales"}
_RENAME = {"Virgin Islands, British": "British Virgin Islands", "Virgin Islands, U.S.": "United States Virgin Islands",
           "Saint Martin (French part)": "Saint Martin", "Sint Maarten (Dutch part)": "Sint Maarten",
           "Vatican City State": "Vatican City", "The Bahamas": "Bahamas", "The Gambia": "Gambia"}
# countryinfo 1.0.1 codes Aruba's Papiamento as "pa" (ISO 639-1 for Punjabi; Papiamento has none).
_LANGUAGE_FIXES = {("ABW", "pa"): "Papiamento"}
_THE = {"Bahamas", "Gambia", "Netherlands", "Philippines", "Maldives", "Seychelles", "Comoros"}


@dataclass(frozen=True)
class Country:
    """One country's facts; each relation maps to its accepted values (first = the answer)."""

    code: str
    name: str
    values: dict[str, tuple[str, ...]]


def ascii_fold(text: str) -> str:
    """"Bogotá" -> "Bogota": an accepted spelling for exact-match scoring."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _display_name(name: str) -> str:
    name = _RENAME.get(name, name)
    if name in _THE or name.endswith("Islands") or "Republic" in name or name.startswith(("United ", "Federated ")):
        return "the " + name
    return name


@lru_cache(maxsize=1)
def countries() -> tuple[Country, ...]:
    """Every country with at least one usable fact, sorted by code (stable across runs)."""
    try:
        from countryinfo import CountryInfo
    except ImportError as exc:
        raise CalibenchError("built-in world tasks need the 'countryinfo' package: pip install countryinfo") from exc
    out = []
    for key, info in CountryInfo.all().items():
        if key in _SKIP or not info.get("name"):
            continue
        code = (info.get("ISO") or {}).get("alpha3") or key.replace(" ", "_")
        capital = info.get("capital")
        capital = capital[0] if isinstance(capital, list) and capital else capital
        langs = [_LANGUAGE_FIXES.get((code, c)) or LANGUAGES[c][0] for c in info.get("languages") or []
                 if c in LANGUAGES]
        currs = [CURRENCIES[c] for c in info.get("currencies") or [] if c in CURRENCIES]
        values = {
            # "Kralendijk / Oranjestad / The Bottom" is three seats, not one answer.
            "capital": (capital,) if isinstance(capital, str) and capital.strip() and "/" not in capital else (),
            "region": (info["region"],) if info.get("region") else (),
            "subregion": (info["subregion"],) if info.get("subregion") else (),
            "language": tuple(dict.fromkeys(langs)),
            "currency": tuple(dict.fromkeys(currs)),
        }
        if any(values.values()):
            out.append(Country(code=code, name=_display_name(info["name"]), values=values))
    return tuple(sorted(out, key=lambda c: c.code))


def _aliases(relation: str, value: str) -> list[str]:
    """Other accepted spellings of one value: ASCII folding, other language names, the currency code."""
    out = [ascii_fold(value)]
    if relation == "language":
        out += [n for names in LANGUAGES.values() if names[0] == value for n in names[1:]]
    if relation == "currency":
        out += [code for code, name in CURRENCIES.items() if name == value]
    return [a for a in dict.fromkeys(out) if a and a != value]


def _relations(selected: str | list[str] | None) -> list[str]:
    if selected is None:
        return list(RELATIONS)
    names = [s.strip() for s in selected.split(",")] if isinstance(selected, str) else list(selected)
    bad = [n for n in names if n not in RELATIONS]
    if bad:
        raise CalibenchError(f"unknown world relation(s) {bad}; choose from {', '.join(RELATIONS)}")
    return names


def world_facts(relations: str | list[str] | None = None) -> list[FactItem]:
    """One FactItem per (country, relation); with several right values, all of them are aliases."""
    items = []
    for c in countries():
        for rel in _relations(relations):
            vals = c.values[rel]
            if not vals:
                continue
            template = _TEMPLATES[rel][0 if len(vals) == 1 else 1]
            aliases = _aliases(rel, vals[0]) + [a for v in vals[1:] for a in [v, *_aliases(rel, v)]]
            items.append(FactItem(item_id=f"{c.code}/{rel}", subject=c.name, relation=rel, template=template,
                                  object=vals[0], aliases=list(dict.fromkeys(aliases))))
    return items


def world_mc(*, seed: int = 0, relations: str | list[str] | None = None, n_options: int = 4) -> list[MCItem]:
    """The facts as MC questions; distractors are same-relation values that are wrong for this country."""
    if n_options < 2:
        raise CalibenchError(f"n_options must be at least 2, got {n_options}")
    by_code = {c.code: c for c in countries()}
    pools: dict[str, list[str]] = {}
    for rel in RELATIONS:
        pools[rel] = sorted({v for c in by_code.values() for v in c.values[rel]})
    items = []
    for fact in world_facts(relations):
        country = by_code[fact.item_id.split("/")[0]]
        right = {v.casefold() for v in country.values[fact.relation]}
        pool = [v for v in pools[fact.relation] if v.casefold() not in right]
        if len(pool) < n_options - 1:
            continue
        rng = random.Random(f"{seed}/{fact.item_id}")
        options = [*rng.sample(pool, n_options - 1), fact.object]
        rng.shuffle(options)
        several = len(country.values[fact.relation]) > 1
        question = _TEMPLATES[fact.relation][3 if several else 2].replace("[X]", country.name)
        items.append(MCItem(item_id=fact.item_id, question=question[0].upper() + question[1:], options=options,
                            label=options.index(fact.object), subject=fact.relation))
    return items


def _prose_region(region: str) -> str:
    return "the Americas" if region == "Americas" else region


def world_clm(*, seed: int = 0) -> list[CLMDoc]:
    """One prose paragraph per country, phrasing varied by ``seed`` (deterministic)."""
    docs = []
    for c in countries():
        rng = random.Random(f"{seed}/{c.code}/clm")
        v = c.values
        name = c.name
        cap_name = name[0].upper() + name[1:]
        sentences = []
        if v["subregion"] and v["region"]:
            sentences.append(rng.choice([
                f"{cap_name} lies in {v['subregion'][0]}, part of {_prose_region(v['region'][0])}.",
                f"Geographically, {name} belongs to {v['subregion'][0]}, within {_prose_region(v['region'][0])}.",
            ]))
        elif v["region"]:
            sentences.append(f"{cap_name} lies in {_prose_region(v['region'][0])}.")
        if v["capital"]:
            sentences.append(rng.choice([
                f"The capital of {name} is {v['capital'][0]}.",
                f"Its capital city is {v['capital'][0]}.",
                f"{v['capital'][0]} is the capital of {name}.",
            ]))
        langs = v["language"]
        if len(langs) == 1:
            sentences.append(rng.choice([f"The official language is {langs[0]}.",
                                         f"People in {name} speak {langs[0]}, the official language."]))
        elif langs:
            listed = ", ".join(langs[:-1]) + f" and {langs[-1]}"
            sentences.append(f"Its official languages are {listed}.")
        currs = v["currency"]
        if currs:
            sentences.append(rng.choice([f"The currency of {name} is the {currs[0]}.",
                                         f"Prices in {name} are paid in the {currs[0]}."]))
            if len(currs) > 1:
                sentences.append(f"The {', the '.join(currs[1:])} {'is' if len(currs) == 2 else 'are'} also used.")
        if sentences:
            docs.append(CLMDoc(item_id=c.code, text=" ".join(sentences)))
    return docs
