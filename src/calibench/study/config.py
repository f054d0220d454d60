"""Study files: a declarative grid of models x revisions x tasks x methods (YAML).

A study file is read with ``calibench.strict.read_yaml_file`` (safe; aliases and duplicate keys refused) and
validated field by field, so a typo fails before any unit runs, with an error that names the file and the
field path (``study.yaml: models[2].revision: ...``).
The schema (documented in docs/study.md)::

    name: my-study                    # required; names the default output folder
    description: free text
    settings: {seed: 0, limit: null, num_fewshot: 0, chat_template: false, n_bins: 10, threads: null,
               bootstrap: 1000, batch_size: 8, device: cpu}
    resources: {num_cpus: 1, num_gpus: 0}   # per unit, for the Ray executor
    methods: [choice, continuation-sum]     # default method set of every task
    metrics: [ece, sce]                     # metrics the report's tables show
    tasks:                                  # names, or mappings with per-task options
      - world-mc
      - {name: world-facts, methods: [first-token, sequence], limit: 100}
    train:                                  # lifecycle-lab recipes (run before the evals that use them)
      - {name: sft-full, recipe: sft, after: [pretrain], options: {method: full, epochs: 3}}
    models:
      - {name: pythia-70m, pretrained: EleutherAI/pythia-70m, revisions: [step1000, step143000], params: 7.0e7}
      - {name: sft-full, train: sft-full, revisions: [epoch1, epoch2], stage: sft, tuning: full,
         data: diverse, base: pythia-70m}
      - {name: demo, synthetic: {skill: 0.6, sharpness: 1.5}}   # simulated model, for tests/demos

Exactly one of ``pretrained`` (hub id, local folder or built-in name), ``train`` (a train entry) or
``synthetic`` (a simulated model with a known calibration curve) gives a model's weights. The schema
itself (types, ranges, unknown keys) is declared in ``calibench.study.schema``; this module reads the
file, resolves cross-references (``base:``, ``train:``, ``after:``, per-model ``tasks:``) and returns
the frozen ``Study`` the planner expands.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from calibench.errors import CalibenchError, quote
from calibench.strict import read_yaml_file
from calibench.study.schema import (
    DEFAULT_REPORT_METRICS,
    DEFAULT_SETTINGS,
    METHOD_NAMES,
    METRIC_NAMES,
    RECIPES,
    STAGES,
    TUNINGS,
    ModelSpec,
    StudySpec,
    SyntheticSpec,
    TaskSpec,
    TrainSpec,
    schema_error,
)

__all__ = [
    "DEFAULT_REPORT_METRICS", "DEFAULT_RESOURCES", "DEFAULT_SETTINGS", "EXECUTION_ONLY", "METHOD_NAMES",
    "METRIC_NAMES", "RECIPES", "STAGES", "TUNINGS", "ModelEntry", "Study", "TaskEntry", "TrainEntry",
    "load_study", "parse_study", "revision_epoch", "revision_step",
]

# Settings that change how fast a unit runs (or whether it may load pickles) but not its numbers; they
# stay out of unit keys. batch_size is not one of them: padding to a batch's longest sequence changes
# confidences in the last bits (up to ~1e-8), so it is part of an eval unit's key.
EXECUTION_ONLY: frozenset[str] = frozenset({"device", "threads", "allow_pickle"})
DEFAULT_RESOURCES: dict[str, float] = {"num_cpus": 1.0, "num_gpus": 0.0}


@dataclass(frozen=True)
class TaskEntry:
    """One task of the study, with the methods run on it and per-task options."""

    name: str
    methods: tuple[str, ...]
    limit: int | None = None
    items: int = 200           # synthetic models only: number of items
    n_options: int = 4         # synthetic models only: options per item


@dataclass(frozen=True)
class TrainEntry:
    """A lifecycle-lab recipe; its outputs are checkpoints that models can name via ``train:``."""

    name: str
    recipe: str
    after: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    resources: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelEntry:
    """A model (and the revisions of it) to evaluate, with the lifecycle labels the report uses."""

    name: str
    source: str                          # "pretrained" | "train" | "synthetic"
    pretrained: str | None = None
    train: str | None = None
    synthetic: Mapping[str, float] | None = None
    revisions: tuple[str, ...] = ("",)
    peft: str | None = None
    dtype: str | None = None
    gguf_file: str | None = None
    params: float | None = None
    stage: str = "base"
    base: str | None = None
    tuning: str | None = None
    data: str | None = None
    chat_template: bool | None = None
    tasks: tuple[str, ...] | None = None
    resources: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """A validated study file."""

    name: str
    path: Path
    description: str
    settings: Mapping[str, Any]
    resources: Mapping[str, float]
    metrics: tuple[str, ...]           # the metrics the report's tables show, in this order
    tasks: tuple[TaskEntry, ...]
    train: tuple[TrainEntry, ...]
    models: tuple[ModelEntry, ...]


class _Ctx:
    """Field-path bookkeeping so every error says where it is (``study.yaml: models[2].revision``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, where: str, message: str) -> CalibenchError:
        return CalibenchError(f"{self.path.name}: {where}: {message}" if where else f"{self.path.name}: {message}")


def load_study(path: str | Path) -> Study:
    """Read and validate a study file; every problem raises CalibenchError naming the field path."""
    path = Path(path)
    if not path.exists():
        raise CalibenchError(f"{path}: no such study file")
    raw = read_yaml_file(path)  # no aliases (expansion bombs), no duplicate keys, regular files only
    return parse_study(raw, path)


def parse_study(raw: Any, path: Path) -> Study:
    """Validate an already-parsed study mapping (``path`` is used in messages and to resolve folders)."""
    ctx = _Ctx(path)
    if not isinstance(raw, dict):
        raise ctx.error("", "a study file must be a mapping with at least 'name', 'tasks' and 'models'")
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as err:
        raise ctx.error(*schema_error(err)) from None
    tasks = _tasks(ctx, spec.tasks, spec.methods)
    train = _train(ctx, spec.train)
    models = _models(ctx, spec.models, {t.name: t for t in train}, {t.name for t in tasks}, path)
    return Study(name=spec.name, path=path, description=spec.description or "", settings=spec.settings.model_dump(exclude_none=False,
                 exclude={"method_options"} if spec.settings.method_options is None else set()),
                 resources={**DEFAULT_RESOURCES, **spec.resources.given()}, metrics=spec.metrics, tasks=tasks,
                 train=train, models=models)


# -- cross-references (the schema checked each value on its own) --------------------------------------------


def _tasks(ctx: _Ctx, specs: list[TaskSpec], default_methods: tuple[str, ...] | None) -> tuple[TaskEntry, ...]:
    out: list[TaskEntry] = []
    for i, t in enumerate(specs):
        where = f"tasks[{i}]"
        methods = t.methods if t.methods is not None else default_methods
        if methods is None:
            raise ctx.error(f"{where}.methods", "is required when the study has no top-level 'methods'")
        if any(o.name == t.name for o in out):
            raise ctx.error(f"{where}.name", f"task {quote(t.name)} is listed twice")
        out.append(TaskEntry(name=t.name, methods=methods, limit=t.limit, items=t.items, n_options=t.n_options))
    return tuple(out)


def _train(ctx: _Ctx, specs: list[TrainSpec]) -> tuple[TrainEntry, ...]:
    out: dict[str, TrainEntry] = {}
    for i, t in enumerate(specs):
        where = f"train[{i}]"
        if t.name in out:
            raise ctx.error(f"{where}.name", f"train entry {quote(t.name)} is defined twice")
        for j, dep in enumerate(t.after):
            if dep not in out:
                raise ctx.error(f"{where}.after[{j}]", f"{quote(dep)} is not a train entry defined above this one")
        out[t.name] = TrainEntry(name=t.name, recipe=t.recipe, after=t.after, options=t.options,
                                 resources=t.resources.given())
    return tuple(out.values())


def _models(ctx: _Ctx, specs: list[ModelSpec], train: Mapping[str, TrainEntry], task_names: set[str],
            path: Path) -> tuple[ModelEntry, ...]:
    out: dict[str, ModelEntry] = {}
    for i, m in enumerate(specs):
        where = f"models[{i}]"
        given = m.model_fields_set
        if m.name in out:
            raise ctx.error(f"{where}.name", f"model {quote(m.name)} is defined twice")
        sources = [k for k in ("pretrained", "train", "synthetic") if k in given]
        if len(sources) != 1:
            raise ctx.error(where, "needs exactly one of 'pretrained', 'train' or 'synthetic'"
                            + (f" (got {', '.join(sources)})" if sources else ""))
        source = sources[0]
        pretrained = m.pretrained
        if pretrained and pretrained.startswith("."):
            pretrained = str((path.parent / pretrained).resolve())
        if source == "train" and m.train not in train:
            raise ctx.error(f"{where}.train", f"{quote(m.train)} is not a train entry "
                            f"(defined: {', '.join(train) or 'none'})")
        synthetic = (m.synthetic or SyntheticSpec()).model_dump() if source == "synthetic" else None
        if "revision" in given and "revisions" in given:
            raise ctx.error(f"{where}.revision", "give either 'revision' or 'revisions', not both")
        revisions = m.revisions if m.revisions is not None else (m.revision,)
        if len(set(revisions)) != len(revisions):
            raise ctx.error(f"{where}.revisions", "lists a revision twice")
        if source == "train" and revisions == ("",):
            raise ctx.error(f"{where}.revisions", "a trained model needs the checkpoint names to evaluate "
                            "(e.g. [epoch1, epoch2] or [step16, step256])")
        if m.base is not None and m.base not in out:
            raise ctx.error(f"{where}.base", f"{quote(m.base)} is not a model defined above this one")
        for j, t in enumerate(m.tasks or ()):
            if t not in task_names:
                raise ctx.error(f"{where}.tasks[{j}]", f"{quote(t)} is not one of the study's tasks")
        out[m.name] = ModelEntry(
            name=m.name, source=source, pretrained=pretrained, train=m.train if source == "train" else None,
            synthetic=synthetic, revisions=revisions, peft=m.peft, dtype=m.dtype, gguf_file=m.gguf_file,
            params=m.params, stage=m.stage, base=m.base, tuning=m.tuning, data=m.data,
            chat_template=m.chat_template, tasks=m.tasks, resources=m.resources.given(),
        )
    return tuple(out.values())


def revision_step(revision: str) -> int | None:
    """The training step of a Pythia-style revision name (``step1000``, ``lab-70k/step16``), else None."""
    m = re.fullmatch(r"step(\d+)", revision.rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


def revision_epoch(revision: str) -> int | None:
    """The epoch of a lab checkpoint name (``epoch2`` -> 2), else None."""
    m = re.fullmatch(r"epoch(\d+)", revision.rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None
