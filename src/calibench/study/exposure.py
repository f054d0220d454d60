"""Results per exposure bucket: how often the pretraining corpus stated a fact (often | rare | never).

Facts and MC item ids embed their subject's bucket (``fact-often-0012-employer``), so any record table
of a lab task splits by exposure with no other input. Never-seen people are the chance-level control;
rarely seen ones show what a model half-knows. Pooled rows sit beside the buckets: ``seen`` (often and
rare together, the people the accuracy targets of docs/lifecycle-lab.md are about) and ``all``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from calibench.world.derived import BUCKETS, bucket_of_id

GROUP = ("model", "revision", "task", "method")
POOLS: dict[str, tuple[str, ...]] = {"seen": ("often", "rare"), "all": BUCKETS}


def by_exposure(records: pd.DataFrame, metrics: Sequence[str] = ("accuracy", "ece"), *,
                n_bins: int = 10, pooled: bool = True) -> pd.DataFrame:
    """One row per (model, revision, task, method, bucket) present: ``n`` and each metric.

    With ``pooled``, each group also gets a ``seen`` row (often + rare) and an ``all`` row (every
    bucket). Rows whose item id carries no bucket (CLM documents, other tasks) are left out.
    """
    rec = records.assign(bucket=[bucket_of_id(i) for i in records["item_id"]])
    rec = rec[rec["bucket"].notna()]
    keys = [k for k in GROUP if k in rec.columns]
    parts = [rec]
    if pooled:
        parts += [rec[rec["bucket"].isin(members)].assign(bucket=name) for name, members in POOLS.items()]
    rows = []
    for key, g in pd.concat(parts, ignore_index=True).groupby([*keys, "bucket"], sort=False):
        row = dict(zip([*keys, "bucket"], key if isinstance(key, tuple) else (key,), strict=True))
        row["n"] = len(g)
        row.update(_metrics(g, metrics, n_bins))
        rows.append(row)
    out = pd.DataFrame(rows, columns=[*keys, "bucket", "n", *metrics])
    order = {b: i for i, b in enumerate([*BUCKETS, *POOLS])}
    return out.sort_values([*keys, "bucket"], key=lambda s: s.map(order) if s.name == "bucket" else s,
                           kind="stable").reset_index(drop=True)


def _metrics(g: pd.DataFrame, metrics: Sequence[str], n_bins: int) -> dict[str, float]:
    from calibench.metrics import get_spec, metric_function

    out = {}
    for name in metrics:
        cols = get_spec(name).columns
        args = [list(g[c]) if c == "probs" else g[c].to_numpy() for c in cols]
        out[name] = float(metric_function(name, n_bins=n_bins)(*args))
    return out
