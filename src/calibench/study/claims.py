"""Claim statistics: validity gates, a joint paired bootstrap per claim, Holm across claims.

The rules below were fixed before any lifecycle run was looked at (docs/lifecycle-lab.md, "How the
claims are tested"); they are not to be tuned after seeing a verdict.

- **Cells.** A claim's comparison gives pairs of eval units (``findings.COMPARISONS``); a cell is one
  pair x one confidence method on one task. Its statistic is ``metric(b) - metric(a)`` or, for a pair
  with a reference unit (zhu-lora), ``|metric(b) - metric(ref)| - |metric(a) - metric(ref)|``.
- **Validity.** A cell whose units fail :func:`check_validity` on that method is left out and counted
  with its reason; the gates (chance, mass, parse failures, degenerate confidences) are
  ``calibench.validity``'s, the same that ``calibench eval`` warns with.
- **Joint paired bootstrap.** Every unit's records of a task are put in one item order (sorted
  ``item_id``) and resampled with one seed per task (``task_seed``): replicate r draws the same item
  indices for every unit, so every cell on that task, and every claim, sees the same resample r.
  Tasks are resampled independently. At least ``MIN_RESAMPLES`` replicates. CLM token records
  (``CLUSTERED``) are resampled by document, all of a document's tokens together.
- **Tests** (each gives one p-value and the side it points to):

  * ``pooled``: the mean of the valid cells' statistics; two-sided bootstrap p of that mean.
  * ``some`` (a "sometimes" claim): each cell is tested; Holm within the claim; p = the smallest
    adjusted p among cells on the claimed side (refuted only if every cell is significantly opposite:
    p = the largest raw p).
  * ``every``: an intersection-union test: p = the largest raw p when every cell is on the claimed
    side; refuted by the smallest Holm-adjusted p among cells on the other side.
  * ``equivalence`` (direction 0): the pooled mean is equivalent to 0 within +-margin by two one-sided
    tests at ``ALPHA`` (the 90% interval lies inside the band); refuted when the mean lies outside the
    band (two-sided test of |delta| > margin).
- **Holm** across the testable claims of one report; a claim is decisive when its adjusted p < ALPHA:
  agree (side +1) or disagree (side -1). Otherwise it is ``mixed`` when, after Holm within the claim,
  some cells are significant on each side, else ``inconclusive``. No testable cell: ``not tested``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from calibench import validity
from calibench.errors import CalibenchError
from calibench.validity import chance_rate as chance_rate  # re-exported: the claims' chance is the gates'

ALPHA = 0.05
MIN_RESAMPLES = 1000


# -- validity (the rules live in calibench.validity) -----------------------------------------------------


@dataclass(frozen=True)
class Validity:
    valid: bool
    reason: str = ""
    accuracy: float = float("nan")
    chance: float = float("nan")


def check_validity(frame: pd.DataFrame, task_records: pd.DataFrame | None = None, *,
                   alpha: float = validity.ALPHA, max_degenerate: float = validity.MAX_DEGENERATE) -> Validity:
    """Is this unit x method measuring anything? ``calibench.validity.assess`` on the unit's records of
    one method (``task_records``: all of the unit's records, for the items' options and gold labels),
    so a claim's gate and ``calibench eval``'s warning read one set of rules."""
    a = validity.assess(frame, task_records, alpha=alpha, max_degenerate=max_degenerate)
    return Validity(a.valid, a.reason, a.accuracy, a.chance_rate)


# -- where the numbers come from -----------------------------------------------------------------------


@dataclass(frozen=True)
class Values:
    """A statistic on the full data, its bootstrap replicates (shared draws per task) and item count."""

    estimate: float
    replicates: np.ndarray
    n: int


class CellSource(Protocol):
    n_resamples: int

    def delta_values(self, a: Any, b: Any, method: str, metric: str) -> Values | None: ...

    def validity(self, unit: Any, method: str) -> Validity: ...


def task_seed(seed: int, task: str) -> int:
    """One bootstrap seed per (study seed, task): units of a task share draws, tasks do not."""
    digest = hashlib.sha256(json.dumps([int(seed), str(task)]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name == "probs":
        items = list(frame["probs"])
        if any(p is None or isinstance(p, float) for p in items):
            raise CalibenchError("some records have no probs")
        try:
            return np.stack([np.asarray(p, dtype=float) for p in items])
        except ValueError as exc:
            raise CalibenchError("records have different numbers of classes") from exc
    return frame[name].to_numpy()


CLUSTERED = ("token",)   # methods whose items are tokens of documents ("<doc id>:<position>")


def cluster_replicates(func: Callable[..., float], arrays: list[np.ndarray], item_ids: np.ndarray,
                       n_resamples: int, seed: int) -> np.ndarray:
    """Bootstrap over documents: each replicate draws documents with replacement and keeps all their
    tokens (tokens of one document are not independent items). Documents come from the item ids'
    part before the last ":"; units with the same items and seed draw the same documents."""
    docs = np.array([str(i).rsplit(":", 1)[0] for i in item_ids])
    codes, uniques = pd.factorize(docs, sort=True)
    members = [np.flatnonzero(codes == k) for k in range(len(uniques))]
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    for r in range(n_resamples):
        idx = np.concatenate([members[k] for k in rng.integers(0, len(members), size=len(members))])
        out[r] = func(*(a[idx] for a in arrays))
    return out


class RecordSource:
    """Replicates from per-item records: ``records(key)`` gives a unit's record table.

    Caches live on the instance (one report), never at module level.
    """

    def __init__(self, records: Callable[[str], pd.DataFrame], *, seed: int = 0, n_bins: int = 10,
                 n_resamples: int = MIN_RESAMPLES) -> None:
        self._records = records
        self.seed = int(seed)
        self.n_bins = int(n_bins)
        self.n_resamples = max(MIN_RESAMPLES, int(n_resamples or 0))
        self._units: dict[str, pd.DataFrame] = {}
        self._frames: dict[tuple[str, str], pd.DataFrame] = {}
        self._values: dict[tuple[str, str, str], tuple[float, np.ndarray] | None] = {}
        self._validity: dict[tuple[str, str], Validity] = {}

    @classmethod
    def from_study(cls, data: Any) -> RecordSource:
        s = data.settings
        return cls(data.records, seed=int(s.get("seed", 0)), n_bins=int(s.get("n_bins", 10)),
                   n_resamples=int(s.get("bootstrap", MIN_RESAMPLES) or MIN_RESAMPLES))

    def unit_records(self, unit: Any) -> pd.DataFrame:
        """All of a unit's records (every method), read once."""
        if unit.key not in self._units:
            self._units[unit.key] = self._records(unit.key)
        return self._units[unit.key]

    def frame(self, unit: Any, method: str) -> pd.DataFrame:
        k = (unit.key, method)
        if k not in self._frames:
            r = self.unit_records(unit)
            r = r[r["method"] == method]
            self._frames[k] = r.assign(item_id=r["item_id"].astype(str)).sort_values("item_id", kind="stable")
        return self._frames[k]

    def validity(self, unit: Any, method: str) -> Validity:
        k = (unit.key, method)
        if k not in self._validity:
            self._validity[k] = check_validity(self.frame(unit, method), self.unit_records(unit))
        return self._validity[k]

    def unit_values(self, unit: Any, method: str, metric: str) -> tuple[float, np.ndarray] | None:
        from calibench.metrics import get_spec, metric_function
        from calibench.metrics.bootstrap import bootstrap_replicates

        k = (unit.key, method, metric)
        if k not in self._values:
            frame = self.frame(unit, method)
            try:
                if not len(frame):
                    raise CalibenchError("no records")
                func = metric_function(metric, n_bins=self.n_bins)
                arrays = [_column(frame, c) for c in get_spec(metric).columns]
                est = float(func(*arrays))
                seed = task_seed(self.seed, unit.task)
                if method in CLUSTERED:
                    reps = cluster_replicates(func, arrays, frame["item_id"].to_numpy(), self.n_resamples, seed)
                else:
                    reps = bootstrap_replicates(func, *arrays, n_resamples=self.n_resamples, seed=seed)
                self._values[k] = (est, reps)
            except CalibenchError:
                self._values[k] = None
        return self._values[k]

    def delta_values(self, a: Any, b: Any, method: str, metric: str) -> Values | None:
        """``metric(b) - metric(a)`` with replicates on shared draws; None if the units' items differ."""
        fa, fb = self.frame(a, method), self.frame(b, method)
        if a.task != b.task or len(fa) != len(fb) or not np.array_equal(fa["item_id"].to_numpy(),
                                                                       fb["item_id"].to_numpy()):
            return None
        va, vb = self.unit_values(a, method, metric), self.unit_values(b, method, metric)
        if va is None or vb is None:
            return None
        return Values(vb[0] - va[0], vb[1] - va[1], len(fa))


class DeltaSource:
    """A source from a plain ``delta(a, b, method, metric) -> (delta, low, high, p, n)`` (no records).

    Replicates are normal pseudo-replicates ``delta + se * z`` with ONE shared z for every cell:
    perfectly correlated cells, the largest possible spread of a mean of cells (conservative).
    """

    def __init__(self, delta: Callable[..., Any], *, seed: int = 0, n_resamples: int = MIN_RESAMPLES) -> None:
        self._delta = delta
        self.n_resamples = max(MIN_RESAMPLES, int(n_resamples))
        self._z = np.random.default_rng(seed).standard_normal(self.n_resamples)

    def validity(self, unit: Any, method: str) -> Validity:
        return Validity(True)

    def delta_values(self, a: Any, b: Any, method: str, metric: str) -> Values | None:
        d = self._delta(a, b, method, metric)
        if d is None:
            return None
        est, low, high, _, n = d
        if not all(math.isfinite(float(x)) for x in (est, low, high)):
            return None
        se = (float(high) - float(low)) / (2 * 1.959963984540054)
        return Values(float(est), float(est) + se * self._z, int(n))


def as_source(source: Any) -> CellSource:
    """A CellSource from a study (``StudyData`` or its bound ``delta``), a CellSource, or a delta callable."""
    if hasattr(source, "delta_values") and hasattr(source, "validity"):
        return source
    owner = getattr(source, "__self__", source)
    if hasattr(owner, "records") and hasattr(owner, "settings"):
        return RecordSource.from_study(owner)
    if callable(source):
        return DeltaSource(source)
    raise CalibenchError(f"cannot test claims from {type(source).__name__}: need study data or a delta function")


# -- tests ------------------------------------------------------------------------------------------------


def two_sided_p(reps: np.ndarray, null: float = 0.0) -> float:
    """Bootstrap two-sided p of H0: statistic = ``null`` (as ``calibench.metrics.paired_delta``)."""
    r = reps[np.isfinite(reps)]
    if r.size == 0:
        return float("nan")
    below = (1 + np.count_nonzero(r <= null)) / (1 + r.size)
    above = (1 + np.count_nonzero(r >= null)) / (1 + r.size)
    return float(min(1.0, 2.0 * min(below, above)))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (NaN stays NaN and is left out of the family)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def interval(reps: np.ndarray, level: float) -> tuple[float, float]:
    r = reps[np.isfinite(reps)]
    if r.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class ClaimTest:
    """One claim's test: pooled effect and interval, the p-value and the side it points to."""

    effect: float
    low: float
    high: float
    level: float
    p_value: float
    side: int   # +1: towards the claim, -1: against it, 0: nothing to point at


def _sign(x: float) -> int:
    return 1 if x > 0 else -1 if x < 0 else 0


def run_test(kind: str, direction: int, margin: float, estimates: np.ndarray, reps: np.ndarray,
             cell_p: np.ndarray, cell_holm: np.ndarray, alpha: float = ALPHA) -> ClaimTest:
    """The claim-level test of ``kind`` on k cells (``reps``: k x R replicates of the cell statistics)."""
    pooled = np.mean(reps, axis=0)
    effect = float(np.mean(estimates))
    if kind == "equivalence":
        low, high = interval(pooled, 1 - 2 * alpha)
        r = pooled[np.isfinite(pooled)]
        n = r.size
        p_eq = max((1 + np.count_nonzero(r >= margin)) / (1 + n), (1 + np.count_nonzero(r <= -margin)) / (1 + n))
        p_out = min(1.0, 2 * min((1 + np.count_nonzero(r <= margin)) / (1 + n),
                                 (1 + np.count_nonzero(r >= -margin)) / (1 + n)))
        if p_eq <= p_out:
            return ClaimTest(effect, low, high, 1 - 2 * alpha, float(p_eq), 1)
        return ClaimTest(effect, low, high, 1 - 2 * alpha, float(p_out), -1)
    low, high = interval(pooled, 1 - alpha)
    if kind == "pooled":
        s = _sign(effect) * direction
        return ClaimTest(effect, low, high, 1 - alpha, two_sided_p(pooled), s)
    towards = np.sign(estimates) * direction > 0
    if kind == "some":
        if towards.any():
            return ClaimTest(effect, low, high, 1 - alpha, float(np.nanmin(cell_holm[towards])), 1)
        return ClaimTest(effect, low, high, 1 - alpha, float(np.nanmax(cell_p)), -1)
    if kind == "every":
        if towards.all():
            return ClaimTest(effect, low, high, 1 - alpha, float(np.nanmax(cell_p)), 1)
        return ClaimTest(effect, low, high, 1 - alpha, float(np.nanmin(cell_holm[~towards])), -1)
    raise CalibenchError(f"unknown claim test {kind!r}")


def claim_test_kind(quantifier: str, direction: int) -> str:
    """Which test a claim gets: equivalence for direction 0, else its quantifier (``pooled``/some/every)."""
    if direction == 0:
        return "equivalence"
    return {"consensus": "pooled"}.get(quantifier, quantifier)
