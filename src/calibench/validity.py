"""Validity before verdicts: is a confidence method measuring anything on this model, per task x method?

From contract records alone (docs/design.md, "Validity before verdicts"), each (task, method) cell gets:

- accuracy against chance: a one-sided binomial test (scipy) of the correct count against the chance
  rate, 1 / options for multiple choice (from ``probs`` or ``extra.n_options`` of any record of the task),
  0 for open answers, where the gate asks for at least one correct answer instead;
- the probability mass a method reads, where it reads one: the option letters' total next-token mass
  (``choice``: ``extra.letter_mass``), P(True) + P(False) (``p-true``, ``p-true-fewshot``); the mean
  over items must reach ``min_mass``;
- the verbalized parse-failure share (``extra.n_unparsed`` / ``extra.n_items``), at most ``max_unparsed``;
- degenerate confidences: at most ``max_degenerate`` of the items at <= 0.01 or >= 0.99, and not one
  constant value.

A cell fails with the first reasons it meets; ``valid`` is False and ``reason`` says why. CLM token
records are skipped (a corpus has no chance rate per token).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

ALPHA = 0.05
MIN_MASS = 0.25
MAX_UNPARSED = 0.5
MAX_DEGENERATE = 0.9
_EDGE = 0.01

# where each method keeps the probability mass it reads (a key, or keys summed)
MASS_FIELDS: dict[str, tuple[str, ...]] = {
    "choice": ("letter_mass",),
    "p-true": ("p_true", "p_false"),
    "p-true-fewshot": ("p_true", "p_false"),
}
COLUMNS = ("task", "method", "n", "accuracy", "chance", "p_value", "mass", "unparsed_share", "degenerate_share",
           "valid", "reason")


def _extras(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [e if isinstance(e, Mapping) else json.loads(e or "{}") for e in frame["extra"]]


def _task_chance(frame: pd.DataFrame, extras: list[dict[str, Any]]) -> float:
    """1 / options averaged over the items of a task whose records say how many options they had."""
    per_item: dict[str, int] = {}
    for item, probs, extra in zip(frame["item_id"], frame["probs"], extras, strict=True):
        k = len(probs) if probs is not None and not (isinstance(probs, float)) else extra.get("n_options")
        if k:
            per_item.setdefault(str(item), int(k))
    return float(np.mean([1.0 / k for k in per_item.values()])) if per_item else 0.0


def _cell(method: str, group: pd.DataFrame, extras: list[dict[str, Any]], chance: float, *, alpha: float,
          min_mass: float, max_unparsed: float, max_degenerate: float) -> dict[str, Any]:
    from scipy.stats import binomtest

    correct = group["correct"].to_numpy(bool)
    conf = group["confidence"].to_numpy(float)
    n, k = len(correct), int(correct.sum())
    reasons: list[str] = []
    if chance > 0:
        p_value = float(binomtest(k, n, chance, alternative="greater").pvalue)
        if p_value >= alpha:
            reasons.append(f"accuracy {k / n:.2f} not above chance {chance:.2f} (binomial p={p_value:.2g})")
    else:
        p_value = float("nan")
        if k == 0:
            reasons.append("no correct answer")
    mass = float("nan")
    if method in MASS_FIELDS and all(all(f in e for f in MASS_FIELDS[method]) for e in extras):
        mass = float(np.mean([sum(float(e[f]) for f in MASS_FIELDS[method]) for e in extras]))
        if mass < min_mass:
            reasons.append(f"mean mass on the read tokens {mass:.2f} < {min_mass}")
    unparsed = float("nan")
    if extras and "n_unparsed" in extras[0]:
        unparsed = float(extras[0]["n_unparsed"]) / float(extras[0]["n_items"])
        if unparsed > max_unparsed:
            reasons.append(f"{unparsed:.0%} of answers state no parseable confidence ({extras[0].get('unparsed')})")
    degenerate = float(np.mean((conf <= _EDGE) | (conf >= 1 - _EDGE))) if n else float("nan")
    if n and degenerate > max_degenerate:
        reasons.append(f"{degenerate:.0%} of confidences at 0 or 1")
    elif n > 1 and np.ptp(conf) == 0:
        reasons.append(f"every confidence is {conf[0]:.3g}")
    return {"n": n, "accuracy": k / n if n else float("nan"), "chance": chance, "p_value": p_value, "mass": mass,
            "unparsed_share": unparsed, "degenerate_share": degenerate, "valid": not reasons,
            "reason": "; ".join(reasons)}


def validity_table(records: pd.DataFrame, *, alpha: float = ALPHA, min_mass: float = MIN_MASS,
                   max_unparsed: float = MAX_UNPARSED, max_degenerate: float = MAX_DEGENERATE) -> pd.DataFrame:
    """One row per (task, method) with the gate numbers, ``valid`` and ``reason`` (see the module docstring)."""
    rows = []
    for task, tframe in records.groupby("task", sort=False):
        if (tframe["method"] == "token").all():
            continue
        tframe = tframe[tframe["method"] != "token"].reset_index(drop=True)
        extras = _extras(tframe)
        chance = _task_chance(tframe, extras)
        for method, group in tframe.groupby("method", sort=False):
            cell = _cell(str(method), group, [extras[i] for i in group.index], chance, alpha=alpha, min_mass=min_mass,
                         max_unparsed=max_unparsed, max_degenerate=max_degenerate)
            rows.append({"task": task, "method": method, **cell})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def warnings(table: pd.DataFrame) -> list[str]:
    """One line per failing cell, for the end of ``calibench eval``."""
    return [f"not valid: {r['task']} · {r['method']}: {r['reason']}" for r in table.to_dict("records")
            if not r["valid"]]
