"""Sampling families: ``consistency`` (agreement with the greedy answer) and ``semantic`` (meaning clusters).

Both read the session's ``n_samples`` seeded samples at ``temperature`` and the greedy answer; meanings are
the keys of ``calibench.methods.answers`` (normalised match, aliases as one meaning; option identity for
multiple choice); no embedding model is used. An empty answer (the model stops at once) is an abstention:
its confidence is 0, as ``sequence`` gives it.

- consistency (Wang et al. 2023's self-consistency as a confidence; Xiong et al. 2024): the share of
  samples whose key equals the greedy answer's.
- semantic (Kuhn et al. 2023; Farquhar et al. 2024): samples are clustered by key; a cluster's probability
  is the summed sequence probability of its distinct answers, normalised over the sampled clusters; the
  confidence is the probability of the greedy answer's cluster (0 when no sample shares its meaning).
  ``extra`` holds the semantic entropy of those cluster probabilities and the discrete (frequency)
  semantic entropy of Farquhar et al. Abstaining samples count in the frequencies, not in the masses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from calibench.methods.answers import greedy_proposals, sample_keys
from calibench.methods.core import ScoringSession, _check_kind, _record, _session


def agreement_share(greedy_key: str, keys: Sequence[str]) -> float:
    """Share of sample keys equal to the greedy key (0 for an abstention or no samples)."""
    if not greedy_key or not keys:
        return 0.0
    return sum(k == greedy_key for k in keys) / len(keys)


def cluster_probs(samples: Sequence[tuple[str, str, float]]) -> dict[str, float]:
    """Cluster probabilities: each distinct answer's sequence probability once, summed per key, normalised.

    Empty answers (abstentions) have no tokens and so no probability of their own; they are left out.
    """
    seen: dict[str, tuple[str, float]] = {}
    for text, key, lp in samples:
        if key:
            seen.setdefault(text, (key, lp))
    if not seen:
        return {}
    keys = [k for k, _ in seen.values()]
    lps = np.asarray([lp for _, lp in seen.values()], dtype=np.float64)
    w = np.exp(lps - lps.max())
    mass: dict[str, float] = {}
    for k, x in zip(keys, w, strict=True):
        mass[k] = mass.get(k, 0.0) + float(x)
    total = sum(mass.values())
    return {k: v / total for k, v in mass.items()}


def entropy(probs: Sequence[float]) -> float:
    """Shannon entropy in nats of a distribution (zeros ignored)."""
    p = np.asarray([x for x in probs if x > 0], dtype=np.float64)
    return float(-(p * np.log(p)).sum()) if p.size else 0.0


def _records(method: str, engine: Any, task: Any, tokenizer: Any, options: Mapping[str, Any] | None,
             session: ScoringSession | None) -> list[dict]:
    _check_kind(task, method)
    ses = _session(engine, tokenizer, options, session)
    opts = ses.options
    records = []
    for item, prop, samples in zip(task.items, greedy_proposals(ses, task), sample_keys(ses, task), strict=True):
        keys = [k for _, k, _ in samples]
        counts = Counter(keys)
        extra: dict[str, Any] = {"samples": [t for t, _, _ in samples], "n_samples": len(samples),
                                 "temperature": opts.temperature, "n_clusters": len(counts),
                                 "agreement": agreement_share(prop.key, keys)}
        if task.kind == "mc":
            extra["n_options"] = len(item.options)
        if method == "consistency":
            conf = extra["agreement"]
        else:
            probs = cluster_probs(samples)
            conf = probs.get(prop.key, 0.0) if prop.key else 0.0
            extra["semantic_entropy"] = entropy(list(probs.values()))
            extra["discrete_semantic_entropy"] = entropy([c / len(keys) for c in counts.values()])
            extra["cluster_mass"] = float(conf)
        records.append(_record(task, method, item.item_id, confidence=conf, correct=prop.correct, pred=prop.pred,
                               extra=extra))
    return records


def consistency(engine: Any, task: Any, *, tokenizer: Any = None, options: Mapping[str, Any] | None = None,
                session: ScoringSession | None = None) -> list[dict]:
    """Share of ``n_samples`` seeded samples that mean the same as the greedy answer."""
    return _records("consistency", engine, task, tokenizer, options, session)


def semantic(engine: Any, task: Any, *, tokenizer: Any = None, options: Mapping[str, Any] | None = None,
             session: ScoringSession | None = None) -> list[dict]:
    """Probability of the greedy answer's meaning cluster among the samples; semantic entropy in ``extra``."""
    return _records("semantic", engine, task, tokenizer, options, session)
