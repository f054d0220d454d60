"""The methods registry: which methods exist (``METHODS``) and which run for a method spec."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from calibench.errors import CalibenchError
from calibench.methods.agreement import consistency, semantic
from calibench.methods.core import (
    APPLIES_TO,
    OPT_IN,
    choice,
    continuation_mean,
    continuation_min,
    continuation_sum,
    first_token,
    p_true,
    sequence,
    token,
)
from calibench.methods.probe import probe
from calibench.methods.ptrue import p_true_fewshot
from calibench.methods.verbalized import verbalized, verbalized_2s

METHODS: dict[str, Callable[..., list[dict]]] = {
    "choice": choice,
    "continuation-sum": continuation_sum,
    "continuation-mean": continuation_mean,
    "continuation-min": continuation_min,
    "first-token": first_token,
    "sequence": sequence,
    "p-true": p_true,
    "token": token,
    "verbalized": verbalized,
    "verbalized-2s": verbalized_2s,
    "consistency": consistency,
    "semantic": semantic,
    "p-true-fewshot": p_true_fewshot,
    "probe": probe,
}


def parse_methods(spec: str | Sequence[str]) -> list[str] | None:
    """``"all"`` -> None (every applicable method); else a validated, de-duplicated list of names."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    names = [n for n in names if n]
    if not names:
        raise CalibenchError("no methods given (use --methods all or a comma-separated list)")
    if names == ["all"]:
        return None
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise CalibenchError(f"unknown method '{unknown[0]}'; choose from: all, {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def resolve_methods(spec: str | Sequence[str], tasks: Sequence[Any]) -> list[tuple[Any, str]]:
    """The (task, method) units to run, in task order then METHODS order.

    ``all`` runs every method that applies to each task's kind (others are skipped without noise),
    except the ``OPT_IN`` families, which run only when named.
    An explicit method runs on the tasks it applies to; a method that applies to none of the given
    tasks is an error, since it would silently produce nothing.
    """
    names = parse_methods(spec)
    chosen = [m for m in METHODS if m not in OPT_IN] if names is None else names
    if names is not None:
        kinds = {t.kind for t in tasks}
        for name in names:
            if not kinds.intersection(APPLIES_TO[name]):
                listed = ", ".join(f"{t.name} ({t.kind})" for t in tasks)
                raise CalibenchError(
                    f"method '{name}' does not apply to any given task [{listed}]; "
                    f"it needs a {' or '.join(APPLIES_TO[name])} task"
                )
    units = [(t, m) for t in tasks for m in chosen if t.kind in APPLIES_TO[m]]
    if not units:
        raise CalibenchError("no method applies to the given tasks")
    return units
