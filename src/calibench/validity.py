"""Validity before verdicts: is a confidence method measuring anything on this model?

The one home of the gates (docs/confidence-families.md, "Validity gates"). ``calibench eval`` warns
with :func:`validity_table` / :func:`warnings` per task x method; the study's claims gate each unit x
method with :func:`assess` (``calibench.study.claims.check_validity``). Both read the rules below, so
the eval warning and the claim gate cannot disagree on the same records. A cell fails when:

1. **chance**: its accuracy is not above chance by a one-sided binomial test (scipy) at ``ALPHA``.
   Chance is the larger of

   - ``1 / K``, K the item's option count (``probs`` or ``extra.n_options`` of any record of the
     task: every method on a multiple-choice task answers among the same options), averaged over
     items, and
   - the share of the most common gold: the gold option (``label``, per item over the task's records)
     or, for open answers, the gold token the cell's own records name (``extra.gold_id``,
     ``extra.target``: first-token and CLM token records), i.e. always giving that answer.

   With neither (open answers that name no gold token) the cell needs at least one correct answer.
   The binomial p-value grows with the chance rate, so a test at the larger rate fails exactly when
   either test fails; the table keeps both rates and p-values (``chance`` / ``p_value`` for 1/K,
   ``majority`` / ``p_value_majority`` for the most common gold).
2. **mass**: the method reads next-token mass (``MASS_FIELDS``: the option letters for ``choice``,
   P(True) + P(False) for ``p-true``, ``p-true-fewshot``) and its mean over items is below ``MIN_MASS``.
3. **parse failures**: more than ``MAX_UNPARSED`` of the items state no parseable confidence
   (verbalized methods: ``extra.n_unparsed / extra.n_items``).
4. **degenerate confidences**: more than ``MAX_DEGENERATE`` of them at <= ``EDGE`` or >= 1 - ``EDGE``,
   or (with two or more records) all one value.

Every failed rule is named in ``reason`` (``"; "``-joined, in the order above).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

ALPHA = 0.05          # one-sided binomial level of the chance gate
MIN_MASS = 0.25       # smallest mean next-token mass on the tokens a method reads
MAX_UNPARSED = 0.5    # largest share of items whose stated confidence does not parse
MAX_DEGENERATE = 0.9  # largest share of confidences at <= EDGE or >= 1 - EDGE
EDGE = 0.01           # a confidence this close to 0 or 1 counts as degenerate

# where each method keeps the probability mass it reads (a key, or keys summed)
MASS_FIELDS: dict[str, tuple[str, ...]] = {
    "choice": ("letter_mass",),
    "p-true": ("p_true", "p_false"),
    "p-true-fewshot": ("p_true", "p_false"),
}
# keys of ``extra`` naming an open answer's gold token, first found wins
GOLD_TOKEN_FIELDS = ("gold_id", "target")
COLUMNS = ("task", "method", "n", "accuracy", "chance", "p_value", "mass", "unparsed_share", "degenerate_share",
           "valid", "reason", "majority", "p_value_majority")


@dataclass(frozen=True)
class Assessment:
    """The gate numbers of one cell (see the module docstring); ``valid`` and why not."""

    n: int
    accuracy: float
    chance: float                 # 1 / options (0: open answers)
    p_value: float                # binomial p against ``chance`` (nan when it is 0)
    majority: float               # share of the most common gold (nan: the records name no gold)
    p_value_majority: float       # binomial p against ``majority``
    mass: float
    unparsed_share: float
    degenerate_share: float
    valid: bool
    reason: str

    @property
    def chance_rate(self) -> float:
        """The rate the accuracy must beat: the larger of 1/K and the most common gold's share."""
        return max(self.chance, 0.0 if np.isnan(self.majority) else self.majority)


def _extras(frame: pd.DataFrame) -> list[dict[str, Any]]:
    if "extra" not in frame:
        return [{} for _ in range(len(frame))]
    return [e if isinstance(e, Mapping) else json.loads(e or "{}") for e in frame["extra"]]


def item_facts(task_records: pd.DataFrame) -> tuple[float, float]:
    """(mean 1/K over the items that say how many options they had, else 0; share of the most common
    gold label over the items that name one, else nan); per ``item_id``, the first record that says."""
    n = len(task_records)
    items = task_records["item_id"].astype(str).to_numpy() if "item_id" in task_records else np.arange(n)
    probs = task_records["probs"] if "probs" in task_records else [None] * n
    ks = [float(len(p)) if p is not None and not isinstance(p, float) and len(p) else np.nan for p in probs]
    if "extra" in task_records:
        for i in np.flatnonzero(task_records["extra"].astype(str).str.contains("n_options", regex=False).to_numpy()):
            e = task_records["extra"].iloc[i]
            k = (e if isinstance(e, Mapping) else json.loads(e or "{}")).get("n_options")
            if np.isnan(ks[i]) and k:
                ks[i] = float(k)
    labels = pd.to_numeric(task_records["label"], errors="coerce").to_numpy(float) if "label" in task_records \
        else np.full(n, np.nan)
    per_item = pd.DataFrame({"item": items, "k": ks, "label": labels}).groupby("item", sort=False).first()
    k, gold = per_item["k"].dropna(), per_item["label"].dropna()
    uniform = float(np.mean(1.0 / k)) if len(k) else 0.0
    majority = float(gold.value_counts().iloc[0] / len(gold)) if len(gold) else float("nan")
    return uniform, majority


def _gold_token_majority(extras: list[dict[str, Any]]) -> float:
    golds = [next((e[f] for f in GOLD_TOKEN_FIELDS if e.get(f) is not None), None) for e in extras]
    golds = [g for g in golds if g is not None]
    return float(pd.Series(golds).value_counts().iloc[0] / len(golds)) if golds else float("nan")


def chance_rates(cell: pd.DataFrame, task_records: pd.DataFrame | None = None, *,
                 extras: list[dict[str, Any]] | None = None) -> tuple[float, float]:
    """(1/K, most common gold's share) of one cell; item facts come from ``task_records`` (default: the
    cell); ``extras``: the cell's parsed ``extra`` if already at hand."""
    uniform, majority = item_facts(cell if task_records is None else task_records)
    if np.isnan(majority) and uniform == 0:
        majority = _gold_token_majority(_extras(cell) if extras is None else extras)
    return uniform, majority


def chance_rate(cell: pd.DataFrame, task_records: pd.DataFrame | None = None) -> float:
    """What guessing scores without knowing anything: the larger of 1/K and the most common gold's share."""
    uniform, majority = chance_rates(cell, task_records)
    return max(uniform, 0.0 if np.isnan(majority) else majority)


def assess(cell: pd.DataFrame, task_records: pd.DataFrame | None = None, *, method: str | None = None,
           alpha: float = ALPHA, min_mass: float = MIN_MASS, max_unparsed: float = MAX_UNPARSED,
           max_degenerate: float = MAX_DEGENERATE) -> Assessment:
    """The gates on one cell: the records of one method (and one model) on one task.

    ``task_records``: every record of that model on the task (for the items' options and gold labels;
    default: the cell). ``method``: default the cell's ``method`` column.
    """
    from scipy.stats import binomtest

    correct = cell["correct"].to_numpy(bool)
    conf = cell["confidence"].to_numpy(float)
    n, k = len(correct), int(correct.sum())
    nan = float("nan")
    if n == 0:
        return Assessment(0, nan, nan, nan, nan, nan, nan, nan, nan, False, "no records")
    if method is None:
        method = str(cell["method"].iloc[0]) if "method" in cell else ""
    extras = _extras(cell)
    acc = k / n
    reasons: list[str] = []
    uniform, majority = chance_rates(cell, task_records, extras=extras)
    p_uniform = float(binomtest(k, n, uniform, alternative="greater").pvalue) if uniform > 0 else nan
    p_majority = float(binomtest(k, n, min(majority, 1.0), alternative="greater").pvalue) if majority > 0 else nan
    if uniform > 0 and p_uniform >= alpha:
        reasons.append(f"accuracy {acc:.2f} not above chance {uniform:.2f} (binomial p={p_uniform:.2g})")
    elif majority > uniform and p_majority >= alpha:
        reasons.append(f"accuracy {acc:.2f} not above chance {majority:.2f} of always giving the most common gold "
                       f"(binomial p={p_majority:.2g})")
    elif uniform == 0 and not majority > 0 and k == 0:
        reasons.append("no correct answer")
    mass = nan
    if method in MASS_FIELDS and all(all(f in e for f in MASS_FIELDS[method]) for e in extras):
        mass = float(np.mean([sum(float(e[f]) for f in MASS_FIELDS[method]) for e in extras]))
        if mass < min_mass:
            reasons.append(f"mean mass on the read tokens {mass:.2f} < {min_mass}")
    unparsed = nan
    if "n_unparsed" in extras[0]:
        unparsed = float(extras[0]["n_unparsed"]) / float(extras[0]["n_items"])
        if unparsed > max_unparsed:
            reasons.append(f"{unparsed:.0%} of answers state no parseable confidence ({extras[0].get('unparsed')})")
    degenerate = float(np.mean((conf <= EDGE) | (conf >= 1 - EDGE)))
    if degenerate > max_degenerate:
        reasons.append(f"{degenerate:.0%} of confidences at 0 or 1")
    elif n > 1 and np.ptp(conf) == 0:
        reasons.append(f"every confidence is {conf[0]:.3g}")
    return Assessment(n, acc, uniform, p_uniform, majority, p_majority, mass, unparsed, degenerate, not reasons,
                      "; ".join(reasons))


def validity_table(records: pd.DataFrame, *, alpha: float = ALPHA, min_mass: float = MIN_MASS,
                   max_unparsed: float = MAX_UNPARSED, max_degenerate: float = MAX_DEGENERATE) -> pd.DataFrame:
    """One row per (task, method) with the gate numbers, ``valid`` and ``reason`` (see the module docstring)."""
    rows = []
    for task, tframe in records.groupby("task", sort=False):
        tframe = tframe.reset_index(drop=True)
        for method, group in tframe.groupby("method", sort=False):
            cell = assess(group, tframe, method=str(method), alpha=alpha, min_mass=min_mass,
                          max_unparsed=max_unparsed, max_degenerate=max_degenerate)
            rows.append({"task": task, "method": method, **asdict(cell)})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def warnings(table: pd.DataFrame) -> list[str]:
    """One line per failing cell, for the end of ``calibench eval``."""
    return [f"not valid: {r['task']} · {r['method']}: {r['reason']}" for r in table.to_dict("records")
            if not r["valid"]]
