"""A finished study read back from its folder: eval units, stored metrics, records and paired deltas.

The one place the report side opens the DuckDB store: ``load_study_data`` collects what the report
and the findings need, ``StudyData.delta`` runs (and caches per instance) paired bootstraps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from calibench.errors import CalibenchError
from calibench.study.config import DEFAULT_REPORT_METRICS
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
