"""CLI sub-commands. Each module exposes ``register(app)``; REGISTRARS lists them in help order."""

from __future__ import annotations

from calibench.commands import evaluate, lifecycle, metrics, study, train

REGISTRARS = [metrics.register, evaluate.register, train.register, study.register, lifecycle.register]
