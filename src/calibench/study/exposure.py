"""Results per exposure bucket: how often the pretraining corpus stated a fact (often | rare | never).

Facts and MC item ids embed their subject's bucket (``fact-often-0012-employer``), so any record table
of a lab task splits by exposure with no other input. Never-seen people are the chance-level control;
rarely seen ones show what a model half-knows.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from calibench.world.derived import BUCKETS, bucket_of_id

GROUP = ("model", "revision", "task", "method")


def by_exposure(records: pd.DataFrame, metrics: Sequence[str] = ("accuracy", "ece"), *,
                n_bins: int = 10) -> pd.DataFrame:
    """One row per (model, revision, task, method, bucket) present: ``n`` and each metric.

    Rows whose item id carries no bucket (CLM documents, other tasks) are left out.
    """
    from calibench.metrics import get_spec, metric_function

    rec = records.assign(bucket=[bucket_of_id(i) for i in records["item_id"]])
    rec = rec[rec["bucket"].notna()]
    keys = [k for k in GROUP if k in rec.columns]
    rows = []
    for key, g in rec.groupby([*keys, "bucket"], sort=False):
        row = dict(zip([*keys, "bucket"], key if isinstance(key, tuple) else (key,), strict=True))
        row["n"] = len(g)
        for name in metrics:
            cols = get_spec(name).columns
            args = [list(g[c]) if c == "probs" else g[c].to_numpy() for c in cols]
            row[name] = float(metric_function(name, n_bins=n_bins)(*args))
        rows.append(row)
    out = pd.DataFrame(rows, columns=[*keys, "bucket", "n", *metrics])
    order = {b: i for i, b in enumerate(BUCKETS)}
    return out.sort_values([*keys, "bucket"], key=lambda s: s.map(order) if s.name == "bucket" else s,
                           kind="stable").reset_index(drop=True)
