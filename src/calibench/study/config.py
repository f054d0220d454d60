"""Study files: a declarative grid of models x revisions x tasks x methods (YAML).

A study file is read with ``yaml.safe_load`` and validated field by field, so a typo fails before any
unit runs, with an error that names the file and the field path (``study.yaml: models[2].revision: ...``).
The schema (documented in docs/study.md)::

    name: my-study                    # required; names the default output folder
    description: free text
    settings: {seed: 0, limit: null, num_fewshot: 0, chat_template: false, n_bins: 10, threads: null,
               bootstrap: 1000, batch_size: 8, device: cpu}
    resources: {num_cpus: 1, num_gpus: 0}   # per unit, for the Ray executor
    methods: [choice, continuation-sum]     # default method set of every task
    metrics: [ece, sce]                     # metrics the report leads with
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
``synthetic`` (a simulated model with a known calibration curve) gives a model's weights.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from calibench.errors import CalibenchError

METHOD_NAMES: tuple[str, ...] = (
    "choice", "continuation-sum", "continuation-mean", "continuation-min",
    "first-token", "sequence", "p-true", "token",
)
METRIC_NAMES: tuple[str, ...] = (
    "accuracy", "ece", "ace", "mce", "rmsce", "sce", "brier", "brier_top", "nll", "auroc", "aurc", "smooth_ece",
)
RECIPES: tuple[str, ...] = ("world", "pretrain", "sft", "reward", "rl", "dpo", "synthetic")
STAGES: tuple[str, ...] = ("pretrained", "base", "sft", "rl", "dpo")
TUNINGS: tuple[str, ...] = ("full", "lora")
DEFAULT_REPORT_METRICS: tuple[str, ...] = ("accuracy", "ece", "ace", "sce", "brier", "nll", "auroc")
DEFAULT_SETTINGS: dict[str, Any] = {
    "seed": 0, "limit": None, "num_fewshot": 0, "chat_template": False, "n_bins": 10,
    "bootstrap": 1000, "batch_size": 8, "device": "cpu", "threads": None,
}
# Settings that change how fast a unit runs but not its numbers; they stay out of unit keys.
EXECUTION_ONLY: frozenset[str] = frozenset({"batch_size", "device", "threads"})
DEFAULT_RESOURCES: dict[str, float] = {"num_cpus": 1.0, "num_gpus": 0.0}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


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
    metrics: tuple[str, ...]
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
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise CalibenchError(f"{path.name}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    return parse_study(raw, path)


def parse_study(raw: Any, path: Path) -> Study:
    """Validate an already-parsed study mapping (``path`` is used in messages and to resolve folders)."""
    ctx = _Ctx(path)
    if not isinstance(raw, dict):
        raise ctx.error("", "a study file must be a mapping with at least 'name', 'tasks' and 'models'")
    _no_unknown(ctx, "", raw, {"name", "description", "settings", "resources", "methods", "metrics", "tasks",
                               "train", "models"})
    name = _name(ctx, "name", raw.get("name"))
    description = _opt_str(ctx, "description", raw.get("description")) or ""
    settings = _settings(ctx, raw.get("settings"))
    resources = {**DEFAULT_RESOURCES, **_resources(ctx, "resources", raw.get("resources"))}
    default_methods = _methods(ctx, "methods", raw["methods"]) if "methods" in raw else None
    metrics = _metrics(ctx, raw.get("metrics"))
    tasks = _tasks(ctx, raw.get("tasks"), default_methods)
    train = _train(ctx, raw.get("train"))
    models = _models(ctx, raw.get("models"), {t.name: t for t in train}, {t.name for t in tasks}, path)
    return Study(name=name, path=path, description=description, settings=settings, resources=resources,
                 metrics=metrics, tasks=tasks, train=train, models=models)


def _no_unknown(ctx: _Ctx, where: str, obj: Mapping[str, Any], allowed: set[str]) -> None:
    for key in obj:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            raise ctx.error(f"{prefix}{key}", f"unknown field (allowed: {', '.join(sorted(allowed))})")


def _name(ctx: _Ctx, where: str, value: Any) -> str:
    if value is None:
        raise ctx.error(where, "is required")
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ctx.error(where, f"must be a name of letters, digits, '.', '_', '+' or '-', got {value!r}")
    return value


def _opt_str(ctx: _Ctx, where: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ctx.error(where, f"must be a non-empty string, got {value!r}")
    return value


def _int(ctx: _Ctx, where: str, value: Any, *, minimum: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ctx.error(where, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _number(ctx: _Ctx, where: str, value: Any, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ctx.error(where, f"must be a number >= {minimum:g}, got {value!r}")
    return float(value)


_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def _params(ctx: _Ctx, where: str, value: Any) -> float:
    """A parameter count: a number, or text like ``1.4e9``, ``70M``, ``1.4B`` (PyYAML reads 1.0e7 as text)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMbBtT]?)\s*", value)
        if not m:
            raise ctx.error(where, f"must be a parameter count such as 7.0e7, 70M or 1.4B, got {value!r}")
        value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    return _number(ctx, where, value, minimum=1)


def _bool(ctx: _Ctx, where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ctx.error(where, f"must be true or false, got {value!r}")
    return value


def _mapping(ctx: _Ctx, where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ctx.error(where, f"must be a mapping, got {type(value).__name__}")
    return value


def _list(ctx: _Ctx, where: str, value: Any, *, required: bool) -> list[Any]:
    if value is None:
        if required:
            raise ctx.error(where, "is required (a non-empty list)")
        return []
    if not isinstance(value, list) or (required and not value):
        raise ctx.error(where, "must be a non-empty list")
    return value


def _settings(ctx: _Ctx, value: Any) -> dict[str, Any]:
    raw = _mapping(ctx, "settings", value)
    _no_unknown(ctx, "settings", raw, set(DEFAULT_SETTINGS))
    out = dict(DEFAULT_SETTINGS)
    for key, val in raw.items():
        where = f"settings.{key}"
        if key in ("seed", "num_fewshot"):
            out[key] = _int(ctx, where, val, minimum=0)
        elif key in ("n_bins", "batch_size"):
            out[key] = _int(ctx, where, val, minimum=1)
        elif key == "bootstrap":
            out[key] = _int(ctx, where, val, minimum=0)
        elif key in ("limit", "threads"):
            out[key] = _int(ctx, where, val, minimum=1, allow_none=True)
        elif key == "chat_template":
            out[key] = _bool(ctx, where, val)
        elif key == "device":
            if not isinstance(val, str) or not re.match(r"^(cpu|cuda(:\d+)?|mps|auto)$", val):
                raise ctx.error(where, f"must be cpu, cuda, cuda:N, mps or auto, got {val!r}")
            out[key] = val
    return out


def _resources(ctx: _Ctx, where: str, value: Any) -> dict[str, float]:
    raw = _mapping(ctx, where, value)
    _no_unknown(ctx, where, raw, {"num_cpus", "num_gpus", "memory"})
    return {k: _number(ctx, f"{where}.{k}", v) for k, v in raw.items()}


def _methods(ctx: _Ctx, where: str, value: Any) -> tuple[str, ...]:
    if value == "all":
        return METHOD_NAMES
    items = _list(ctx, where, value, required=True)
    seen: list[str] = []
    for i, m in enumerate(items):
        if m not in METHOD_NAMES:
            raise ctx.error(f"{where}[{i}]", f"unknown method {m!r} (known: {', '.join(METHOD_NAMES)})")
        if m in seen:
            raise ctx.error(f"{where}[{i}]", f"method {m!r} is listed twice")
        seen.append(m)
    return tuple(seen)


def _metrics(ctx: _Ctx, value: Any) -> tuple[str, ...]:
    if value is None:
        return ("accuracy", "ece", "ace", "sce", "brier", "nll", "auroc")
    items = _list(ctx, "metrics", value, required=True)
    for i, m in enumerate(items):
        if m not in METRIC_NAMES:
            raise ctx.error(f"metrics[{i}]", f"unknown metric {m!r} (known: {', '.join(METRIC_NAMES)})")
    return tuple(dict.fromkeys(items))


def _tasks(ctx: _Ctx, value: Any, default_methods: tuple[str, ...] | None) -> tuple[TaskEntry, ...]:
    out: list[TaskEntry] = []
    for i, item in enumerate(_list(ctx, "tasks", value, required=True)):
        where = f"tasks[{i}]"
        spec = {"name": item} if isinstance(item, str) else item
        if not isinstance(spec, dict):
            raise ctx.error(where, f"must be a task name or a mapping with 'name', got {item!r}")
        _no_unknown(ctx, where, spec, {"name", "methods", "limit", "items", "n_options"})
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ctx.error(f"{where}.name", f"must be a task name or path, got {name!r}")
        if "methods" in spec:
            methods = _methods(ctx, f"{where}.methods", spec["methods"])
        elif default_methods is not None:
            methods = default_methods
        else:
            raise ctx.error(f"{where}.methods", "is required when the study has no top-level 'methods'")
        if any(t.name == name for t in out):
            raise ctx.error(f"{where}.name", f"task {name!r} is listed twice")
        out.append(TaskEntry(
            name=name, methods=methods,
            limit=_int(ctx, f"{where}.limit", spec.get("limit"), minimum=1, allow_none=True),
            items=_int(ctx, f"{where}.items", spec.get("items", 200), minimum=2),
            n_options=_int(ctx, f"{where}.n_options", spec.get("n_options", 4), minimum=2),
        ))
    return tuple(out)


def _train(ctx: _Ctx, value: Any) -> tuple[TrainEntry, ...]:
    out: dict[str, TrainEntry] = {}
    for i, item in enumerate(_list(ctx, "train", value, required=False)):
        where = f"train[{i}]"
        spec = _mapping(ctx, where, item)
        _no_unknown(ctx, where, spec, {"name", "recipe", "after", "options", "resources"})
        name = _name(ctx, f"{where}.name", spec.get("name"))
        if name in out:
            raise ctx.error(f"{where}.name", f"train entry {name!r} is defined twice")
        recipe = spec.get("recipe")
        if recipe not in RECIPES:
            raise ctx.error(f"{where}.recipe", f"must be one of {', '.join(RECIPES)}, got {recipe!r}")
        after_raw = spec.get("after", [])
        after_list = [after_raw] if isinstance(after_raw, str) else after_raw
        if not isinstance(after_list, list):
            raise ctx.error(f"{where}.after", "must be a train name or a list of them")
        for j, dep in enumerate(after_list):
            if dep not in out:
                raise ctx.error(f"{where}.after[{j}]", f"{dep!r} is not a train entry defined above this one")
        options = _mapping(ctx, f"{where}.options", spec.get("options"))
        out[name] = TrainEntry(name=name, recipe=recipe, after=tuple(after_list), options=options,
                               resources=_resources(ctx, f"{where}.resources", spec.get("resources")))
    return tuple(out.values())


_MODEL_FIELDS = {
    "name", "pretrained", "train", "synthetic", "revision", "revisions", "peft", "dtype", "gguf_file",
    "params", "stage", "base", "tuning", "data", "chat_template", "tasks", "resources",
}


def _models(ctx: _Ctx, value: Any, train: Mapping[str, TrainEntry], task_names: set[str],
            path: Path) -> tuple[ModelEntry, ...]:
    out: dict[str, ModelEntry] = {}
    items = _list(ctx, "models", value, required=True)
    for i, item in enumerate(items):
        where = f"models[{i}]"
        spec = _mapping(ctx, where, item)
        _no_unknown(ctx, where, spec, _MODEL_FIELDS)
        name = _name(ctx, f"{where}.name", spec.get("name"))
        if name in out:
            raise ctx.error(f"{where}.name", f"model {name!r} is defined twice")
        sources = [k for k in ("pretrained", "train", "synthetic") if k in spec]
        if len(sources) != 1:
            raise ctx.error(where, "needs exactly one of 'pretrained', 'train' or 'synthetic'"
                            + (f" (got {', '.join(sources)})" if sources else ""))
        source = sources[0]
        pretrained = train_name = None
        synthetic: dict[str, float] | None = None
        if source == "pretrained":
            pretrained = _opt_str(ctx, f"{where}.pretrained", spec["pretrained"])
            if pretrained and pretrained.startswith((".", "/")):
                pretrained = str((path.parent / pretrained).resolve()) if pretrained.startswith(".") else pretrained
        elif source == "train":
            train_name = spec["train"]
            if train_name not in train:
                raise ctx.error(f"{where}.train", f"{train_name!r} is not a train entry "
                                f"(defined: {', '.join(train) or 'none'})")
        else:
            raw_syn = _mapping(ctx, f"{where}.synthetic", spec["synthetic"])
            _no_unknown(ctx, f"{where}.synthetic", raw_syn, {"skill", "sharpness", "seed"})
            synthetic = {"skill": 0.6, "sharpness": 1.0, "seed": 0}
            for k, v in raw_syn.items():
                synthetic[k] = _number(ctx, f"{where}.synthetic.{k}", v)
            if not 0.0 < synthetic["skill"] < 1.0:
                raise ctx.error(f"{where}.synthetic.skill", f"must be in (0, 1), got {synthetic['skill']!r}")
            if synthetic["sharpness"] <= 0:
                raise ctx.error(f"{where}.synthetic.sharpness", "must be > 0")
        if "revision" in spec and "revisions" in spec:
            raise ctx.error(f"{where}.revision", "give either 'revision' or 'revisions', not both")
        if "revisions" in spec:
            revs = _list(ctx, f"{where}.revisions", spec["revisions"], required=True)
        else:
            revs = [spec.get("revision", "")]
        for j, r in enumerate(revs):
            if not isinstance(r, (str, int)) or isinstance(r, bool):
                sub = f"{where}.revisions[{j}]" if "revisions" in spec else f"{where}.revision"
                raise ctx.error(sub, f"must be a string such as 'step1000' or 'main', got {r!r}")
        revisions = tuple(str(r) for r in revs)
        if len(set(revisions)) != len(revisions):
            raise ctx.error(f"{where}.revisions", "lists a revision twice")
        if source == "train" and revisions == ("",):
            raise ctx.error(f"{where}.revisions", "a trained model needs the checkpoint names to evaluate "
                            "(e.g. [epoch1, epoch2] or [step16, step256])")
        stage = spec.get("stage", "base")
        if stage not in STAGES:
            raise ctx.error(f"{where}.stage", f"must be one of {', '.join(STAGES)}, got {stage!r}")
        tuning = spec.get("tuning")
        if tuning is not None and tuning not in TUNINGS:
            raise ctx.error(f"{where}.tuning", f"must be one of {', '.join(TUNINGS)}, got {tuning!r}")
        base = spec.get("base")
        if base is not None and base not in out:
            raise ctx.error(f"{where}.base", f"{base!r} is not a model defined above this one")
        model_tasks = None
        if "tasks" in spec:
            tl = _list(ctx, f"{where}.tasks", spec["tasks"], required=True)
            for j, t in enumerate(tl):
                if t not in task_names:
                    raise ctx.error(f"{where}.tasks[{j}]", f"{t!r} is not one of the study's tasks")
            model_tasks = tuple(tl)
        out[name] = ModelEntry(
            name=name, source=source, pretrained=pretrained, train=train_name, synthetic=synthetic,
            revisions=revisions,
            peft=_opt_str(ctx, f"{where}.peft", spec.get("peft")),
            dtype=_opt_str(ctx, f"{where}.dtype", spec.get("dtype")),
            gguf_file=_opt_str(ctx, f"{where}.gguf_file", spec.get("gguf_file")),
            params=_params(ctx, f"{where}.params", spec["params"]) if "params" in spec else None,
            stage=stage, base=base, tuning=tuning,
            data=_opt_str(ctx, f"{where}.data", spec.get("data")),
            chat_template=_bool(ctx, f"{where}.chat_template", spec["chat_template"])
            if "chat_template" in spec else None,
            tasks=model_tasks,
            resources=_resources(ctx, f"{where}.resources", spec.get("resources")),
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
