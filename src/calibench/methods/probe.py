"""``probe``: a linear probe on a hidden state predicts whether the model's answer is right.

The hidden state is layer ``probe_layer`` (default: the middle layer) at the last prompt token, where the
model is about to answer (the fact prompt, or the choice prompt). The label is the correctness of the
model's own answer: the greedy answer for facts (as ``sequence``), the argmax letter of ``choice`` for
multiple choice. A standardised L2 logistic regression (scikit-learn) is cross-fitted over
``probe_folds`` folds (stratified where each class has enough items): every item is scored by a probe
fitted on the other folds only, so no item's confidence comes from a probe that saw it (Azaria & Mitchell
2023; Kadavath et al. 2022 train such heads on held-out data). A training part that holds only right (or
only wrong) answers has nothing to separate; its fold's items get that part's add-one smoothed share of
right answers, marked ``constant`` in ``extra``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from calibench.errors import CalibenchError
from calibench.methods.answers import greedy_proposals
from calibench.methods.core import ScoringSession, _check_kind, _record, _session


@dataclass(frozen=True)
class CrossFit:
    """Out-of-fold probabilities, each item's fold, the training indices of each fold's probe."""

    probs: np.ndarray
    fold: np.ndarray
    train: list[np.ndarray]
    constant: np.ndarray  # items scored by a constant (one-class training part)


def cross_fit(x: np.ndarray, y: np.ndarray, *, folds: int, seed: int, c: float = 1.0) -> CrossFit:
    """Cross-fitted logistic-regression probabilities P(y = 1 | x), no item scored by a probe trained on it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    n = len(y)
    k = min(int(folds), n)
    if k < 2:
        raise CalibenchError(f"the probe needs at least 2 items to cross-fit, got {n}")
    counts = np.bincount(y, minlength=2)
    splitter = (StratifiedKFold(k, shuffle=True, random_state=seed) if counts.min() >= k
                else KFold(k, shuffle=True, random_state=seed))
    probs = np.zeros(n)
    fold = np.zeros(n, dtype=int)
    constant = np.zeros(n, dtype=bool)
    train: list[np.ndarray] = []
    for f, (tr, te) in enumerate(splitter.split(x, y)):
        train.append(tr)
        fold[te] = f
        ytr = y[tr]
        if ytr.min() == ytr.max():
            probs[te] = (ytr.sum() + 1.0) / (len(ytr) + 2.0)
            constant[te] = True
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        model.fit(x[tr], ytr)
        probs[te] = model.predict_proba(x[te])[:, 1]
    return CrossFit(probs, fold, train, constant)


def probe(engine: Any, task: Any, *, tokenizer: Any = None, options: Mapping[str, Any] | None = None,
          session: ScoringSession | None = None) -> list[dict]:
    """Cross-fitted linear probe on a hidden state: confidence = P(the model's answer is right)."""
    _check_kind(task, "probe")
    ses = _session(engine, tokenizer, options, session)
    props = greedy_proposals(ses, task)
    states, layer = ses.hidden(task)
    y = np.asarray([p.correct for p in props], dtype=int)
    fit = cross_fit(states, y, folds=ses.options.probe_folds, seed=ses.options.seed)
    records = []
    for i, (item, prop) in enumerate(zip(task.items, props, strict=True)):
        extra: dict[str, Any] = {"layer": layer, "fold": int(fit.fold[i]), "n_train": int(len(fit.train[fit.fold[i]])),
                                 "constant": bool(fit.constant[i]), "dim": int(states.shape[1])}
        if task.kind == "mc":
            extra["n_options"] = len(item.options)
        records.append(_record(task, "probe", item.item_id, confidence=float(fit.probs[i]), correct=prop.correct,
                               pred=prop.pred, extra=extra))
    return records
