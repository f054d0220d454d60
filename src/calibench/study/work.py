"""Unit functions: what one study unit computes, in the driver or in a Ray worker.

``execute_unit`` gets a JSON spec and returns a ``UnitResult``; it never touches the store (the driver,
``calibench.study.runner``, is its single writer). Each unit kind dispatches to one small adapter:

- eval units -> ``eval_records``: load the model (through a ``ModelCache``) and the task, score them
  with ``calibench.scoring.score`` and keep the records in memory (no run folder, nothing re-read);
- eval units of simulated models -> ``calibench.study.synthetic.synthetic_records`` (tests/demos);
- train units -> ``TRAIN_ADAPTERS[recipe]`` -> the lifecycle lab (``calibench.train``).

Then ``unit_metrics`` summarises the records once, in memory.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from calibench.errors import CalibenchError
from calibench.models.weights import WeightsHasher
from calibench.study.lab import LAB_ADAPTERS
from calibench.study.synthetic import synthetic_records, synthetic_train
from calibench.study.units import model_args


@dataclass
class UnitResult:
    """What a unit function returns to the driver (picklable, so Ray can carry it)."""

    key: str
    ok: bool
    records: pd.DataFrame | None = None
    metrics: Any = None
    staged_dir: str | None = None
    error: str | None = None


@dataclass
class ModelCache:
    """The one loaded model of a worker: consecutive units of the same model (one per task) load it once.

    Owned by whoever runs units one after another (the local executor); loading another model first
    drops the previous one, so at most one model is held.
    """

    hasher: WeightsHasher = field(default_factory=WeightsHasher)  # remembers weight digests across loads
    loads: int = 0
    _key: tuple[str, str, bool] | None = None
    _loaded: Any = field(default=None, repr=False)

    def get(self, args: str, device: str, *, allow_pickle: bool = False) -> Any:
        """The ``LoadedModel`` for lm-eval style ``args`` on ``device``, loading it if it is not held."""
        from calibench.models.loading import load_model

        key = (args, device, allow_pickle)
        if self._key != key:
            self._key, self._loaded = None, None  # free the previous model before loading the next
            self._loaded = load_model(args, device=device, hasher=self.hasher, allow_pickle=allow_pickle)
            self._key = key
            self.loads += 1
        return self._loaded


def eval_records(spec: dict[str, Any], cache: ModelCache) -> pd.DataFrame:
    """Score one model revision on one task with the unit's methods; the records, in memory."""
    from calibench.evaluate import load_tasks, make_method_options, score_loaded, seed_everything
    from calibench.methods import parse_methods, resolve_methods
    from calibench.threads import count_parameters, resolve_threads, torch_threads
    from calibench.train.config import quiet_transformers

    quiet_transformers()  # per-load progress bars would cut through the study's own progress bar

    s = spec["settings"]
    methods = list(spec["methods"])
    opts = make_method_options(num_fewshot=s["num_fewshot"], chat_template=spec["chat_template"],
                               extra=s.get("method_options"))
    parse_methods(methods)
    args = model_args(spec, path=spec.get("checkpoint_path"))
    seed_everything(s["seed"])
    tasks = load_tasks([spec["task"]], limit=spec["limit"], seed=s["seed"])
    units = resolve_methods(methods, tasks)
    loaded = cache.get(args, s["device"], allow_pickle=bool(s.get("allow_pickle", False)))
    with torch_threads(resolve_threads(s.get("threads"), count_parameters(loaded.model))):
        chunks = list(score_loaded(loaded, units, opts, batch_size=s["batch_size"], device=s["device"],
                                   seed=s["seed"], progress=False))
    frames = [c.frame for c in chunks if not c.not_measured]
    if not frames:  # every method of the unit is unmeasurable on this model: the unit's error says why
        raise CalibenchError("; ".join(c.not_measured for c in chunks))
    records = pd.concat(frames, ignore_index=True)
    records["model"] = portable_model(spec, str(loaded.model_id))
    return records


def portable_model(spec: dict[str, Any], model_id: str) -> str:
    """The ``model`` a study's records carry: a local path is made relative to the study folder (or
    replaced by the study's model name for trained checkpoints), so moving a study keeps its bytes."""
    if spec.get("source") == "train":
        rev = spec.get("revision")
        return f"{spec['model']}@{rev}" if rev else str(spec["model"])
    root = spec.get("study_dir")
    if root and Path(model_id.split("@", 1)[0]).is_absolute():
        path, _, rev = model_id.partition("@")
        try:
            rel = Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            return model_id
        return rel + (f"@{rev}" if rev else "")
    return model_id


TRAIN_ADAPTERS: dict[str, Callable[[dict[str, Any], Path], dict[str, Any]]] = {
    "synthetic": synthetic_train, **LAB_ADAPTERS,
}


# Bootstrapping smooth ECE costs ~10x all other metrics together; studies report its estimate only.
NO_BOOTSTRAP: frozenset[str] = frozenset({"smooth_ece"})


def unit_metrics(records: pd.DataFrame, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Every metric per (task, method) with bootstrap CIs (``calibench.metrics.summarize``), stored with
    the unit so reports are instant; metrics in ``NO_BOOTSTRAP`` get their estimate only."""
    from calibench.metrics import summarize

    table = summarize(records, n_bins=settings["n_bins"], n_resamples=settings["bootstrap"],
                      seed=settings["seed"], no_bootstrap=NO_BOOTSTRAP)
    return table.to_dict("records")


def execute_unit(key: str, spec: dict[str, Any], staging: str | None = None,
                 cache: ModelCache | None = None) -> UnitResult:
    """Run one unit; never raises, errors come back in the result.

    ``cache`` keeps the loaded model for the next unit; without one (a Ray task) the model is loaded
    for this unit only.
    """
    try:
        if spec["kind"] == "train":
            if staging is None:
                raise CalibenchError("train units need a staging folder")
            manifest = TRAIN_ADAPTERS[spec["recipe"]](spec, Path(staging))
            return UnitResult(key=key, ok=True, metrics=manifest, staged_dir=staging)
        if spec.get("synthetic_params") is not None:
            records = synthetic_records(spec, spec["synthetic_params"])
        else:
            records = eval_records(spec, cache if cache is not None else ModelCache())
        return UnitResult(key=key, ok=True, records=records, metrics=unit_metrics(records, spec["settings"]))
    except CalibenchError as exc:
        return UnitResult(key=key, ok=False, error=str(exc))
    except Exception as exc:  # a unit's bug must not kill the other units; keep the traceback
        return UnitResult(key=key, ok=False, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
