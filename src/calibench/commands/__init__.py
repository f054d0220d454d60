"""CLI sub-commands. Each module exposes ``register(app)``; REGISTRARS lists them in help order."""

from __future__ import annotations

from calibench.commands import evaluate, examples, from_lm_eval, lifecycle, metrics, study, train

REGISTRARS = [
    metrics.register,
    examples.register,
    evaluate.register,
    from_lm_eval.register,
    train.register,
    study.register,
    lifecycle.register,
]
