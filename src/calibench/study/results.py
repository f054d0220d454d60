"""A finished study read back from its folder: eval units, stored metrics, records and paired deltas.

The one place the report side opens the DuckDB store: ``load_study_data`` collects what the report
and the findings need, ``StudyData.delta`` runs (and caches per instance) paired bootstraps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from calibench.errors import CalibenchError
from calibench.study.config import DEFAULT_REPORT_METRICS
from calibench.study.exposure import by_exposure
from calibench.study.findings import EvalUnit
from calibench.study.store import Store


@dataclass
class StudyData:
    """Everything the report needs, loaded once from a study folder."""

    root: Path
    name: str
    description: str
    settings: dict[str, Any]
    units: list[EvalUnit]
    metrics: pd.DataFrame                  # one row per unit x method x metric
    store: Store
    synthetic: bool = False
    shown_metrics: tuple[str, ...] = DEFAULT_REPORT_METRICS   # the study file's ``metrics:``
    _records: dict[str, pd.DataFrame] = field(default_factory=dict)
    _deltas: dict[tuple[str, str, str, str], Any] = field(default_factory=dict)

    def records(self, key: str) -> pd.DataFrame:
        """The per-item records of one unit (read once)."""
        if key not in self._records:
            self._records[key] = self.store.read_records(key)
        return self._records[key]

    def metric_rows(self, keys: list[str], metric: str) -> pd.DataFrame:
        """Stored metric rows (estimate, low, high per method) of these units for one metric."""
        m = self.metrics
        return m[(m["metric"] == metric) & (m["key"].isin(keys))]

    def delta(self, a: EvalUnit, b: EvalUnit, method: str, metric: str) -> tuple[float, float, float, float, int] | None:
        """Paired bootstrap delta metric(b) - metric(a) for one method on the items both scored, cached;
        None if not computable (no shared items, or a metric undefined on them)."""
        from calibench.metrics import metric_function, paired_delta

        ck = (a.key, b.key, method, metric)
        if ck not in self._deltas:
            ra = self.records(a.key)
            rb = self.records(b.key)
            ra, rb = ra[ra["method"] == method], rb[rb["method"] == method]
            # paired on the items both units scored (two limits, or a task that grew, leave extra items)
            shared = set(ra["item_id"]) & set(rb["item_id"])
            ra, rb = ra[ra["item_id"].isin(shared)], rb[rb["item_id"].isin(shared)]
            if not shared:
                self._deltas[ck] = None
                return None
            try:
                d = paired_delta(metric_function(metric, n_bins=int(self.settings.get("n_bins", 10))), ra, rb,
                                 n_resamples=int(self.settings.get("bootstrap", 1000)) or 200,
                                 seed=int(self.settings.get("seed", 0)))
                self._deltas[ck] = (d.delta, d.low, d.high, d.p_value, d.n)
            except CalibenchError:
                self._deltas[ck] = None
        return self._deltas[ck]


def bucket_metrics(data: StudyData, unit: EvalUnit, metrics: Sequence[str], *,
                   n_resamples: int = 0) -> pd.DataFrame:
    """One row per method x exposure bucket (often | rare | never, read from the item ids) of one unit:
    ``n`` and each metric (NaN where a metric is undefined on those records, e.g. SCE without a
    probability vector); with ``n_resamples``, also ``METRIC_low``/``METRIC_high``, the 95% bootstrap CI
    over the bucket's items (the study's seed). Empty for a task whose item ids carry no bucket."""
    from calibench.metrics import get_spec

    rec = data.records(unit.key)
    n_bins = int(data.settings.get("n_bins", 10))
    first = rec["probs"].iloc[0] if "probs" in rec.columns and len(rec) else None
    has_probs = first is not None and not isinstance(first, float) and len(first) > 1
    usable = [m for m in metrics if has_probs or "probs" not in get_spec(m).columns]
    try:
        out = by_exposure(rec, usable, n_bins=n_bins, pooled=False)  # the report adds its own pooled row
    except CalibenchError:        # one metric undefined on these records: compute the others one by one
        out = by_exposure(rec, (), n_bins=n_bins, pooled=False)
        for metric in usable:
            try:
                part = by_exposure(rec, (metric,), n_bins=n_bins, pooled=False)
            except CalibenchError:
                continue
            out = out.merge(part[["method", "bucket", metric]], on=["method", "bucket"], how="left")
    for metric in metrics:
        if metric not in out.columns:
            out[metric] = float("nan")
    columns = ["method", "bucket", "n", *metrics]
    if n_resamples:
        bounds = _bucket_cis(rec, out, usable, n_resamples, int(data.settings.get("seed", 0)), n_bins)
        out = pd.concat([out.reset_index(drop=True), bounds], axis=1)
        columns += [f"{m}_{side}" for m in metrics for side in ("low", "high")]
        for c in columns:
            if c not in out.columns:
                out[c] = float("nan")
    return out[columns]


def _bucket_cis(rec: pd.DataFrame, table: pd.DataFrame, metrics: Sequence[str], n_resamples: int, seed: int,
                n_bins: int) -> pd.DataFrame:
    """Bootstrap CI bounds of each metric for each (method, bucket) row of ``table``."""
    import numpy as np

    from calibench.metrics import get_spec
    from calibench.metrics.bootstrap import bootstrap_ci
    from calibench.world.derived import bucket_of_id

    buckets = rec["item_id"].map(bucket_of_id)
    rows = []
    for method, bucket in zip(table["method"], table["bucket"], strict=True):
        part = rec[(rec["method"] == method) & (buckets == bucket)]
        row: dict[str, float] = {}
        for metric in metrics:
            cols = get_spec(metric).columns
            try:
                args = [np.stack(list(part[c])) if c == "probs" else part[c].to_numpy() for c in cols]
                kwargs = {"n_bins": n_bins} if "n_bins" in get_spec(metric).options else {}
                ci = bootstrap_ci(metric, *args, n_resamples=n_resamples, seed=seed, **kwargs)
                row[f"{metric}_low"], row[f"{metric}_high"] = float(ci.low), float(ci.high)
            except (CalibenchError, ValueError):
                row[f"{metric}_low"] = row[f"{metric}_high"] = float("nan")
        rows.append(row)
    return pd.DataFrame(rows, index=range(len(rows)))


def load_study_data(study_dir: str | Path) -> StudyData:
    """Open a study folder read-only and collect its finished eval units and their metrics."""
    root = Path(study_dir)
    store = Store.open(root, read_only=True)
    meta_path = root / "study.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    units: list[EvalUnit] = []
    rows: list[dict[str, Any]] = []
    settings: dict[str, Any] = {}
    synthetic = False
    # A train unit whose manifest says its model is not testable (RL that did not change the model,
    # calibench.train.signals) marks every eval unit of that model; findings leave their cells out.
    untestable = {t.key: str(t.metrics["not_testable"]) for t in store.finished("train")
                  if isinstance(t.metrics, dict) and t.metrics.get("not_testable")}
    for su in store.finished("eval"):
        spec = su.spec
        synthetic = synthetic or spec.get("source") == "synthetic" or spec.get("train_recipe") == "synthetic"
        settings = spec.get("settings", settings)
        extra = {"not_testable": untestable[spec["train_key"]]} if spec.get("train_key") in untestable else {}
        u = EvalUnit(key=su.key, model=spec["model"], revision=spec.get("revision", ""), task=spec["task"],
                     labels={**spec.get("labels", {}), "chat_template": bool(spec.get("chat_template")), **extra},
                     methods=tuple(spec.get("methods", ())))
        units.append(u)
        for m in su.metrics or []:
            rows.append({"key": su.key, "unit": u.name, "model": u.model, "revision": u.revision,
                         "stage": u.labels.get("stage", "base"), **m})
    if not units:
        store.close()
        raise CalibenchError(f"{root}: the study has no finished evaluation units yet")
    order = {k: i for i, k in enumerate(meta.get("units", []))}
    if order:  # units the study file no longer lists stay in the store but not in the report
        keep = {u.key for u in units if u.key in order}
        units = [u for u in units if u.key in keep]
        rows = [r for r in rows if r["key"] in keep]
    units.sort(key=lambda u: order.get(u.key, len(order)))
    return StudyData(root=root, name=meta.get("name", root.name), description=meta.get("description", ""),
                     settings=settings, units=units, metrics=pd.DataFrame(rows), store=store,
                     synthetic=synthetic, shown_metrics=tuple(meta.get("metrics") or DEFAULT_REPORT_METRICS))
