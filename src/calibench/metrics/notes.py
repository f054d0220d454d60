"""Why a metric is missing, undefined or flagged for one group: the note lines under the tables.

Every reason is derived from the registry (a metric's input kind, whether it takes ``n_bins``) and the
group's records, so ``calibench metrics``, ``calibench compare`` and ``from-lm-eval`` say the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from calibench.metrics.binning import small_n_warning
from calibench.metrics.registry import METRICS
from calibench.records import class_sizes

if TYPE_CHECKING:
    import pandas as pd


def binned_metrics() -> list[str]:
    """The registered metrics whose value depends on a bin count (they take ``n_bins``)."""
    return [name for name, spec in METRICS.items() if "n_bins" in spec.options]


def _missing_reason(group: pd.DataFrame, after: str | None) -> str:
    if after is not None:
        return f"{after} recalibration changes only the confidence, so class probabilities are dropped"
    if "probs" not in group or any(p is None for p in group["probs"]):
        none = int(sum(p is None for p in group["probs"])) if "probs" in group else len(group)
        return f"{none} of {len(group)} records have no class probabilities (the method gives only a confidence)"
    return "records have no gold label index"


def _undefined_reason(name: str, group: pd.DataFrame) -> str:
    correct = group["correct"].astype(bool)
    if METRICS[name].kind == "top" and name in ("auroc", "aurc") and correct.nunique() < 2:
        return f"every item is {'correct' if bool(correct.iloc[0]) else 'wrong'}, so there is nothing to rank"
    return "undefined on these items"


def option_counts(group: pd.DataFrame) -> tuple[int, int] | None:
    """(fewest, most) options per item when the group's items differ in option count, else None."""
    sizes = class_sizes(group["probs"]) if "probs" in group else None
    if sizes is None or sizes.size == 0:
        return None
    fewest, most = int(sizes.min()), int(sizes.max())
    return (fewest, most) if fewest != most else None


def metric_notes(group: pd.DataFrame, rows: Mapping[str, Mapping[str, Any]], *, n_bins: int,
                 ci: str | None = None, after: str | None = None) -> list[str]:
    """Note lines for one group: skipped and undefined metrics (why), flagged intervals, small n.

    ``rows`` maps metric name -> {"estimate", "low", "high", "widened"?} (None or NaN = undefined);
    ``ci`` is the interval method (None: no intervals); ``after`` the calibrator for recalibrated rows.
    """
    notes: list[str] = []
    missing = [name for name in METRICS if name not in rows]
    if missing:
        notes.append(f"{', '.join(missing)} not reported: {_missing_reason(group, after)}")
    for name, row in rows.items():
        est = row.get("estimate")
        if est is None or (isinstance(est, float) and math.isnan(est)):
            notes.append(f"{name} undefined: {_undefined_reason(name, group)}")
    if ci is not None:
        widened = [name for name, row in rows.items() if row.get("widened")]
        if widened:
            notes.append(f"{', '.join(widened)}: BCa interval widened to include the estimate (marked †; "
                         "almost every resample fell on one side of it)")
        outside = [name for name, row in rows.items() if _outside(row)]
        if outside:
            notes.append(f"{', '.join(outside)}: estimate outside its {ci} interval (marked †; binned errors are "
                         "biased upward, --ci bca corrects for it)")
    spread = option_counts(group)
    if spread is not None and any(METRICS[n].kind == "probs" for n in rows):
        notes.append(f"items have {spread[0]}-{spread[1]} options: sce over the zero-padded class set, "
                     "brier and nll per item (docs/uncertainty.md)")
    warning = small_n_warning(len(group), n_bins)
    if warning is not None:
        notes.append(f"{warning} ({', '.join(n for n in binned_metrics() if n in rows)})")
    return notes


def _outside(row: Mapping[str, Any]) -> bool:
    est, low, high = row.get("estimate"), row.get("low"), row.get("high")
    values: Sequence[Any] = (est, low, high)
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return False
    return not low <= est <= high
