"""Post-hoc recalibration: fit a map on one split, apply it to another.

Four calibrators, each with ``fit`` and ``transform``:

- ``temperature`` (Guo et al. 2017): probs (N x K) -> softmax(log p / T); T minimises the NLL of the gold
  labels on the fitting split (``scipy.optimize.minimize_scalar`` on log T, so T stays positive). It keeps
  every item's predicted class, so only the confidences change.
- ``platt`` (Platt 1999, top-label): confidence -> sigmoid(a * logit(c) + b), fitted by logistic
  regression of ``correct`` on logit(c).
- ``histogram`` (Zadrozny & Elkan 2001): equal-mass bins of the fitting confidences; each bin maps to its
  accuracy on the fitting split.
- ``isotonic`` (Zadrozny & Elkan 2002): the monotone non-decreasing map from confidence to accuracy
  (scikit-learn ``IsotonicRegression``), clipped to [0, 1] and constant outside the fitted range.

A recalibrated number is only honest on items the map was not fitted on: ``cross_fit`` does K-fold
cross-fitting, so every item's output comes from a map fitted on the other folds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, log_softmax, logsumexp

from calibench.errors import CalibenchError
from calibench.metrics._validate import as_confidence, as_probs, class_wise, top_label

LOG_CLIP = 1e-12  # probabilities are clipped here before taking logs (as in nll)
LOGIT_CLIP = 1e-6  # confidences are clipped to [1e-6, 1 - 1e-6] before the logit in Platt scaling
LOG_T_BOUNDS = (-5.0, 5.0)  # temperature searched in [e^-5, e^5] ~ [0.0067, 148]


class Calibrator(Protocol):
    """What ``cross_fit`` needs: ``inputs`` says whether fit/transform take probs or confidences."""

    inputs: ClassVar[str]  # "probs" (fit(probs, labels), transform(probs)) or "confidence"

    def fit(self, x: Any, y: Any) -> Calibrator: ...

    def transform(self, x: Any) -> np.ndarray: ...


def _not_fitted(name: str) -> CalibenchError:
    return CalibenchError(f"{name} calibrator is not fitted; call fit() on a calibration split first")


def _both_outcomes(y: np.ndarray, name: str) -> None:
    if y.all() or not y.any():
        raise CalibenchError(
            f"{name} needs both correct and incorrect items to fit, got {int(y.sum())} correct of {y.size}"
        )


class TemperatureScaling:
    """softmax(log p / T) with T fitted by minimising the NLL (T > 1 softens over-confident probs)."""

    inputs: ClassVar[str] = "probs"

    def __init__(self) -> None:
        self.temperature: float | None = None

    def fit(self, probs: Any, labels: Any) -> TemperatureScaling:
        p, lab = class_wise(probs, labels)
        logp = np.log(np.maximum(p, LOG_CLIP))
        gold = logp[np.arange(p.shape[0]), lab]

        def nll(log_t: float) -> float:
            inv_t = np.exp(-log_t)
            return float(np.mean(logsumexp(logp * inv_t, axis=1) - gold * inv_t))

        res = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
        self.temperature = float(np.exp(res.x))
        return self

    def transform(self, probs: Any) -> np.ndarray:
        if self.temperature is None:
            raise _not_fitted("temperature")
        p = as_probs(probs)
        return np.exp(log_softmax(np.log(np.maximum(p, LOG_CLIP)) / self.temperature, axis=1))

    def params(self) -> dict[str, float]:
        return {"temperature": float("nan") if self.temperature is None else self.temperature}


class PlattScaling:
    """sigmoid(a * logit(c) + b) fitted by unregularised logistic regression on the top-label outcome."""

    inputs: ClassVar[str] = "confidence"

    def __init__(self) -> None:
        self.coef: tuple[float, float] | None = None

    @staticmethod
    def _logit(c: np.ndarray) -> np.ndarray:
        c = np.clip(c, LOGIT_CLIP, 1 - LOGIT_CLIP)
        return np.log(c) - np.log1p(-c)

    def fit(self, confidence: Any, correct: Any) -> PlattScaling:
        c, y = top_label(confidence, correct)
        _both_outcomes(y, "platt")
        x, t = self._logit(c), y.astype(np.float64)

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            z = w[0] * x + w[1]
            # mean of log(1 + e^z) - t z, and its gradient
            value = np.mean(np.logaddexp(0.0, z) - t * z)
            resid = expit(z) - t
            return float(value), np.array([np.mean(resid * x), np.mean(resid)])

        res = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
        self.coef = (float(res.x[0]), float(res.x[1]))
        return self

    def transform(self, confidence: Any) -> np.ndarray:
        if self.coef is None:
            raise _not_fitted("platt")
        c = as_confidence(confidence)
        return expit(self.coef[0] * self._logit(c) + self.coef[1])

    def params(self) -> dict[str, float]:
        a, b = self.coef if self.coef is not None else (float("nan"), float("nan"))
        return {"a": a, "b": b}


class HistogramBinning:
    """Equal-mass bins of the fitting confidences, each mapped to its accuracy there.

    Bins are right-closed like the metric bins; inner edges are the fitting quantiles, de-duplicated and
    kept below the largest fitting confidence so that no bin is empty.
    """

    inputs: ClassVar[str] = "confidence"

    def __init__(self, n_bins: int = 10) -> None:
        if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
            raise CalibenchError(f"n_bins must be a positive integer, got {n_bins!r}")
        self.n_bins = int(n_bins)
        self.edges: np.ndarray | None = None
        self.values: np.ndarray | None = None

    def fit(self, confidence: Any, correct: Any) -> HistogramBinning:
        c, y = top_label(confidence, correct)
        inner = np.unique(np.quantile(c, np.arange(1, self.n_bins) / self.n_bins))
        inner = inner[inner < c.max()]
        index = np.searchsorted(inner, c, side="left")
        counts = np.bincount(index, minlength=inner.size + 1)
        self.edges = inner
        self.values = np.bincount(index, weights=y, minlength=inner.size + 1) / counts
        return self

    def transform(self, confidence: Any) -> np.ndarray:
        if self.edges is None or self.values is None:
            raise _not_fitted("histogram")
        c = as_confidence(confidence)
        return self.values[np.searchsorted(self.edges, c, side="left")]

    def params(self) -> dict[str, Any]:
        return {"edges": None if self.edges is None else self.edges.tolist()}


class IsotonicCalibration:
    """Monotone non-decreasing map from confidence to accuracy (pool-adjacent-violators)."""

    inputs: ClassVar[str] = "confidence"

    def __init__(self) -> None:
        self.model: Any = None

    def fit(self, confidence: Any, correct: Any) -> IsotonicCalibration:
        from sklearn.isotonic import IsotonicRegression

        c, y = top_label(confidence, correct)
        self.model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        self.model.fit(c, y.astype(np.float64))
        return self

    def transform(self, confidence: Any) -> np.ndarray:
        if self.model is None:
            raise _not_fitted("isotonic")
        c = as_confidence(confidence)
        return np.clip(self.model.predict(c), 0.0, 1.0)

    def params(self) -> dict[str, Any]:
        return {}


CALIBRATORS: dict[str, Callable[[], Calibrator]] = {
    "temperature": TemperatureScaling,
    "platt": PlattScaling,
    "histogram": HistogramBinning,
    "isotonic": IsotonicCalibration,
}


def get_calibrator(name: str) -> Calibrator:
    """A fresh, unfitted calibrator by name (temperature, platt, histogram, isotonic)."""
    if name not in CALIBRATORS:
        raise CalibenchError(f"unknown calibrator {name!r}; choose from {', '.join(CALIBRATORS)}")
    return CALIBRATORS[name]()


def fold_ids(n: int, n_folds: int, seed: int = 0) -> np.ndarray:
    """A fold number in [0, n_folds) for each of ``n`` items: a seeded shuffle dealt round-robin."""
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise CalibenchError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if n < n_folds:
        raise CalibenchError(f"cross-fitting {n} items needs at least n_folds={n_folds} items")
    folds = np.empty(n, dtype=np.int64)
    folds[np.random.default_rng(seed).permutation(n)] = np.arange(n) % n_folds
    return folds


def cross_fit(
    name: str | Callable[[], Calibrator],
    *,
    confidence: Any,
    correct: Any,
    probs: Any | None = None,
    labels: Any | None = None,
    n_folds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Out-of-fold recalibration: each item is transformed by a map fitted on the other folds only.

    ``name`` is a calibrator name or a factory returning an unfitted calibrator. Returns a dict with
    ``confidence`` (recalibrated), ``correct`` (unchanged: no calibrator here changes the prediction),
    ``fold`` (each item's fold), ``params`` (one dict per fold) and, for temperature scaling, ``probs``.
    For temperature scaling the new confidence is the recalibrated probability of each row's argmax.
    """
    factory = CALIBRATORS.get(name) if isinstance(name, str) else name
    if factory is None:
        raise CalibenchError(f"unknown calibrator {name!r}; choose from {', '.join(CALIBRATORS)}")
    c, y = top_label(confidence, correct)
    uses_probs = getattr(factory(), "inputs", "confidence") == "probs"
    if uses_probs:
        if probs is None or labels is None:
            raise CalibenchError(f"{name} recalibration needs probs and labels for every item")
        p, lab = class_wise(probs, labels)
        if p.shape[0] != c.shape[0]:
            raise CalibenchError(f"confidence has {c.shape[0]} items but probs has {p.shape[0]}")
    folds = fold_ids(c.shape[0], n_folds, seed)
    out_conf = np.empty_like(c)
    out_probs = np.empty_like(p) if uses_probs else None
    params: list[dict[str, Any]] = []
    for k in range(n_folds):
        test = folds == k
        train = ~test
        calibrator = factory()
        if uses_probs:
            calibrator.fit(p[train], lab[train])
            new = calibrator.transform(p[test])
            out_probs[test] = new  # type: ignore[index]
            out_conf[test] = new[np.arange(new.shape[0]), np.argmax(p[test], axis=1)]
        else:
            calibrator.fit(c[train], y[train])
            out_conf[test] = calibrator.transform(c[test])
        params.append(dict(calibrator.params()) if hasattr(calibrator, "params") else {})
    result: dict[str, Any] = {"confidence": out_conf, "correct": y.copy(), "fold": folds, "params": params}
    if uses_probs:
        result["probs"] = out_probs
    return result
