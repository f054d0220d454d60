"""The study file's schema as pydantic models: field types, ranges and unknown keys (``extra="forbid"``).

Each constrained type is ``Annotated[..., BeforeValidator]`` whose check raises the one-line complaint
the CLI prints (``must be an integer >= 0, got -1``); ``schema_error`` turns pydantic's first error into
``study.yaml: settings.seed: must be an integer >= 0, got -1``. Cross-references (``base:`` names a model
above, ``after:`` a train entry above, ...) are resolved in ``calibench.study.config``. Method and
metric names come from their registries, the device rule from ``calibench.models.devices``.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from calibench.errors import CalibenchError, quote
from calibench.limits import MAX_BINS, MAX_RESAMPLES
from calibench.methods import FAMILY_OPTIONS, METHODS, MethodOptions
from calibench.metrics import METRICS
from calibench.models.devices import device_problem

METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
METRIC_NAMES: tuple[str, ...] = tuple(METRICS)
RECIPES: tuple[str, ...] = ("world", "pretrain", "sft", "reward", "rl", "dpo", "synthetic")
STAGES: tuple[str, ...] = ("pretrained", "base", "sft", "rl", "dpo")
TUNINGS: tuple[str, ...] = ("full", "lora")
DEFAULT_REPORT_METRICS: tuple[str, ...] = ("accuracy", "ece", "ace", "sce", "brier", "nll", "auroc")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def fail(message: str, sub: str = "") -> PydanticCustomError:
    """A schema complaint; ``sub`` extends the field path (``[2]`` for the third list item)."""
    return PydanticCustomError("calibench", "{message}", {"message": message, "sub": sub})


# -- constrained values -------------------------------------------------------------------------------------


def _int(minimum: int, *, allow_none: bool = False, maximum: int | None = None) -> Callable[[Any], int | None]:
    def check(value: Any) -> int | None:
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise fail(f"must be an integer >= {minimum}, got {quote(value)}")
        if maximum is not None and value > maximum:
            raise fail(f"must be an integer <= {maximum}, got {value}")
        return value
    return check


def _number(minimum: float = 0.0) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            raise fail(f"must be a number >= {minimum:g}, got {quote(value)}")
        return float(value)
    return check


def _params(value: Any) -> float:
    """A parameter count: a number, or text like ``1.4e9``, ``70M``, ``1.4B`` (PyYAML reads 1.0e7 as text)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMbBtT]?)\s*", value)
        if not m:
            raise fail(f"must be a parameter count such as 7.0e7, 70M or 1.4B, got {quote(value)}")
        value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    return _number(1)(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(f"must be true or false, got {quote(value)}")
    return value


def _name(value: Any) -> str:
    if value is None:
        raise fail("is required")
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise fail(f"must be a name of letters, digits, '.', '_', '+' or '-', got {quote(value)}")
    return value


def _opt_str(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise fail(f"must be a non-empty string, got {quote(value)}")
    return value


def _choice(options: tuple[str, ...], *, allow_none: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if (value is None and allow_none) or value in options:
            return value
        raise fail(f"must be one of {', '.join(options)}, got {quote(value)}")
    return check


def _device(value: Any) -> str:
    if (problem := device_problem(value)) is not None:
        raise fail(problem)
    return value


def _list(*, required: bool) -> Callable[[Any], list[Any]]:
    def check(value: Any) -> list[Any]:
        if value is None:
            if required:
                raise fail("is required (a non-empty list)")
            return []
        if not isinstance(value, list) or (required and not value):
            raise fail("must be a non-empty list")
        return value
    return check


def _names(kind: str, known: tuple[str, ...], *, unique: bool,
           default: tuple[str, ...] | None = None) -> Callable[[Any], tuple[str, ...]]:
    """A non-empty list of registry names (``all`` for methods: every one; ``null``: ``default`` if any)."""
    def check(value: Any) -> tuple[str, ...]:
        if kind == "method" and value == "all":
            return known
        if value is None and default is not None:
            return default
        seen: list[str] = []
        for i, name in enumerate(_list(required=True)(value)):
            if name not in known:
                raise fail(f"unknown {kind} {quote(name)} (known: {', '.join(known)})", f"[{i}]")
            if name in seen and unique:
                raise fail(f"{kind} {quote(name)} is listed twice", f"[{i}]")
            seen.append(name)
        return tuple(dict.fromkeys(seen))
    return check


def _revision(value: Any, sub: str = "") -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise fail(f"must be a string such as 'step1000' or 'main', got {quote(value)}", sub)
    return str(value)


def _revisions(value: Any) -> tuple[str, ...]:
    return tuple(_revision(r, f"[{j}]") for j, r in enumerate(_list(required=True)(value)))


def _after(value: Any) -> tuple[Any, ...]:
    after = [value] if isinstance(value, str) else value
    if not isinstance(after, list):
        raise fail("must be a train name or a list of them")
    return tuple(after)


def _mapping(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(f"must be a mapping, got {type(value).__name__}")
    return value


def _method_options(value: Any) -> dict[str, Any] | None:
    """The confidence families' knobs (``calibench.methods.FAMILY_OPTIONS``), checked by ``MethodOptions``."""
    if value is None:
        return None
    opts = _mapping(value)
    unknown = sorted(set(opts) - set(FAMILY_OPTIONS))
    if unknown:
        raise fail(f"unknown option(s) {unknown} (known: {', '.join(FAMILY_OPTIONS)})")
    try:
        MethodOptions.from_mapping(opts)
    except (CalibenchError, TypeError) as err:
        raise fail(str(err)) from None
    return dict(sorted(opts.items()))


def _v(fn: Callable[[Any], Any]) -> BeforeValidator:
    return BeforeValidator(fn)


Int0 = Annotated[int, _v(_int(0))]
Int1 = Annotated[int, _v(_int(1))]
Int2 = Annotated[int, _v(_int(2))]
OptInt1 = Annotated[int | None, _v(_int(1, allow_none=True))]
Number = Annotated[float, _v(_number())]
OptNumber = Annotated[float | None, _v(_number())]   # optional key, but an explicit null is an error
Bool = Annotated[bool, _v(_bool)]
Name = Annotated[str, _v(_name)]
OptStr = Annotated[str | None, _v(_opt_str)]
# ``X | None`` inside Annotated: an explicit ``null`` still reaches the check (and fails there), while a
# missing key keeps the default without validation.
Methods = Annotated[tuple[str, ...] | None, _v(_names("method", METHOD_NAMES, unique=True))]
Metrics = Annotated[tuple[str, ...], _v(_names("metric", METRIC_NAMES, unique=False,
                                               default=DEFAULT_REPORT_METRICS))]
AnyMapping = Annotated[dict[str, Any], _v(_mapping)]


# -- the file's sections ------------------------------------------------------------------------------------


class Spec(BaseModel):
    """A mapping of known keys; ``null`` reads as an empty mapping, anything else that is no mapping fails."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, value: Any) -> Any:
        return _mapping(value)


class SettingsSpec(Spec):
    seed: Int0 = 0
    limit: OptInt1 = None
    num_fewshot: Int0 = 0
    chat_template: Bool = False
    n_bins: Annotated[int, _v(_int(1, maximum=MAX_BINS))] = 10
    bootstrap: Annotated[int, _v(_int(0, maximum=MAX_RESAMPLES))] = 1000
    batch_size: Int1 = 8
    device: Annotated[str, _v(_device)] = "cpu"
    threads: OptInt1 = None
    method_options: Annotated[dict[str, Any] | None, _v(_method_options)] = None
    allow_pickle: Bool = False  # load pickle (.bin) weights; pickles can run code when loaded


class ResourcesSpec(Spec):
    num_cpus: OptNumber = None
    num_gpus: OptNumber = None
    memory: OptNumber = None

    def given(self) -> dict[str, float]:
        """Only the keys the file sets (per-unit resources override the study's)."""
        return self.model_dump(exclude_unset=True)


class TaskSpec(Spec):
    name: Any = None
    methods: Methods = None
    limit: OptInt1 = None
    items: Int2 = 200           # synthetic models only: number of items
    n_options: Int2 = 4         # synthetic models only: options per item

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if not isinstance(value, dict):
            raise fail(f"must be a task name or a mapping with 'name', got {quote(value)}")
        name = value.get("name")
        if not isinstance(name, str) or not name.strip():
            raise fail(f"must be a task name or path, got {quote(name)}", ".name")
        return value


class TrainSpec(Spec):
    name: Annotated[str, _v(_name)] = Field(None, validate_default=True)
    recipe: Annotated[str, _v(_choice(RECIPES))] = Field(None, validate_default=True)
    after: Annotated[tuple[Any, ...], _v(_after)] = ()
    options: AnyMapping = Field(default_factory=dict)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)


class SyntheticSpec(Spec):
    skill: Number = 0.6
    sharpness: Number = 1.0
    seed: Number = 0           # an int unless the file gives one (unit keys hash the value)

    @model_validator(mode="after")
    def _in_range(self) -> SyntheticSpec:
        if not 0.0 < self.skill < 1.0:
            raise fail(f"must be in (0, 1), got {quote(self.skill)}", ".skill")
        if self.sharpness <= 0:
            raise fail("must be > 0", ".sharpness")
        return self


class ModelSpec(Spec):
    name: Annotated[str, _v(_name)] = Field(None, validate_default=True)
    pretrained: OptStr = None
    train: Any = None
    synthetic: SyntheticSpec | None = None
    revision: Annotated[str, _v(_revision)] = ""
    revisions: Annotated[tuple[str, ...] | None, _v(_revisions)] = None
    peft: OptStr = None
    dtype: OptStr = None
    gguf_file: OptStr = None
    params: Annotated[float | None, _v(_params)] = None
    stage: Annotated[str, _v(_choice(STAGES))] = "base"
    base: Any = None
    tuning: Annotated[str | None, _v(_choice(TUNINGS, allow_none=True))] = None
    data: OptStr = None
    chat_template: Annotated[bool | None, _v(_bool)] = None
    tasks: Annotated[tuple[Any, ...] | None, _v(_list(required=True))] = None
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)


class StudySpec(Spec):
    name: Annotated[str, _v(_name)] = Field(None, validate_default=True)
    description: OptStr = None
    settings: SettingsSpec = Field(default_factory=SettingsSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    methods: Methods = None
    metrics: Metrics = DEFAULT_REPORT_METRICS   # which metrics the report's tables show
    tasks: Annotated[list[TaskSpec], _v(_list(required=True))] = Field(None, validate_default=True)
    train: Annotated[list[TrainSpec], _v(_list(required=False))] = Field(default_factory=list)
    models: Annotated[list[ModelSpec], _v(_list(required=True))] = Field(None, validate_default=True)


DEFAULT_SETTINGS: dict[str, Any] = SettingsSpec().model_dump()


# -- pydantic's error -> one line -----------------------------------------------------------------------------


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        part = part if isinstance(part, int) else quote(str(part), 40).strip("'\"")
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _spec_at(loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The schema class that validates the mapping at ``loc`` (to list its allowed keys)."""
    cls: type[BaseModel] = StudySpec
    for part in loc:
        if isinstance(part, int):
            continue
        stack = [cls.model_fields[part].annotation]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                cls = t
                break
            stack.extend(typing.get_args(t))
    return cls


def schema_error(err: ValidationError) -> tuple[str, str]:
    """(field path, message) of the first problem; unknown keys first, as they are usually typos."""
    errors = err.errors(include_url=False)
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(first["loc"])
    if first["type"] == "extra_forbidden":
        allowed = sorted(_spec_at(loc[:-1]).model_fields)
        return _path(loc), f"unknown field (allowed: {', '.join(allowed)})"
    ctx = first.get("ctx") or {}
    if first["type"] == "calibench":
        return _path(loc) + ctx.get("sub", ""), str(ctx["message"])
    return _path(loc), first["msg"]
