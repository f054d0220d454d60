"""Expand a study into units with content-hash keys, in dependency order.

A unit is the smallest piece of work the store remembers: a *train* unit runs one lifecycle-lab
recipe; an *eval* unit scores one model revision on one task with a set of methods. Its key is a
sha256 over everything that determines its output (the weights hash of a local folder or the hub id
and revision, the task's content hash, the methods, the result-changing settings and the calibench
version), so a re-run finds finished work by key, and changing any input gives a new key instead of
reusing stale results. Report labels (stage, params, epoch, ...) are kept in the spec but not in the
key: relabelling a model does not re-run it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibench import __version__
from calibench.errors import CalibenchError, quote
from calibench.models.weights import WeightsHasher
from calibench.study.config import (
    DEFAULT_RESOURCES,
    EXECUTION_ONLY,
    ModelEntry,
    Study,
    TaskEntry,
    revision_epoch,
    revision_step,
)


@dataclass(frozen=True)
class Unit:
    """One unit of work: ``spec`` is everything its function needs (JSON-able); ``deps`` are unit keys."""

    key: str
    kind: str                       # "train" | "eval"
    label: str                      # short human-readable name (model@revision / task)
    spec: dict[str, Any]
    deps: tuple[str, ...] = ()
    resources: dict[str, float] = field(default_factory=dict)


TaskResolver = Callable[[TaskEntry, dict[str, Any]], "str | None"]


def content_key(payload: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``payload`` (sorted keys, no whitespace)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_task_resolver(task: TaskEntry, settings: dict[str, Any]) -> str | None:
    """Content hash of a real task via calibench.tasks.load_task; None if it cannot be loaded here.

    Lab tasks (``lab-*``) are generated from a trained world, whose identity is already in the model's
    key (the train unit key), so their name is their identity.
    """
    if task.name.startswith("lab-"):
        return f"lab:{task.name}"
    try:
        from calibench.tasks import load_task

        loaded = load_task(task.name, limit=task.limit or settings.get("limit"), seed=settings.get("seed", 0))
    except Exception:  # offline hub names, tasks module not installed yet: resolved when run
        return None
    return str(loaded.content_hash)


def synthetic_task_hash(task: TaskEntry, settings: dict[str, Any]) -> str:
    """Identity of a synthetic task: its name, size and seed define every item."""
    limit = task.limit or settings.get("limit")
    n = min(task.items, limit) if limit else task.items
    return "synthetic:" + content_key({"name": task.name, "items": n, "n_options": task.n_options,
                                       "seed": settings.get("seed", 0)})


def expand(study: Study, *, task_resolver: TaskResolver | None = default_task_resolver,
           strict: bool = False, hasher: WeightsHasher | None = None) -> list[Unit]:
    """All units of ``study`` in dependency order (train units first, each after its ``after``).

    A task whose content hash cannot be computed here (e.g. a hub dataset while offline) gets key
    ``"?"`` unless ``strict``, in which case it is an error: a unit must never run under a key that
    does not pin its inputs. ``hasher`` hashes local weights (``calibench.models.weights``, the same
    hash a run's config.json records); one is made for this call when none is given.
    """
    hasher = hasher if hasher is not None else WeightsHasher()
    settings = dict(study.settings)
    keyed_settings = {k: v for k, v in settings.items() if k not in EXECUTION_ONLY}
    units: list[Unit] = []
    train_keys: dict[str, str] = {}
    train_recipes: dict[str, str] = {}
    world_of: dict[str, str | None] = {}
    for t in study.train:
        deps = tuple(train_keys[a] for a in t.after)
        spec = {"kind": "train", "name": t.name, "recipe": t.recipe, "options": dict(t.options),
                "after": list(t.after), "after_keys": list(deps), "seed": settings["seed"],
                "device": settings["device"], "threads": settings["threads"],
                "allow_pickle": settings.get("allow_pickle", False),
                "after_recipes": {a: train_recipes[a] for a in t.after}}
        key = content_key({"kind": "train", "recipe": t.recipe, "options": dict(t.options), "deps": list(deps),
                           "seed": settings["seed"], "version": __version__})
        train_keys[t.name] = key
        train_recipes[t.name] = t.recipe
        # the world a unit's models live in: itself, or the first world among its ancestors
        world_of[t.name] = t.name if t.recipe == "world" else next(
            (world_of[a] for a in t.after if world_of.get(a)), None)
        units.append(Unit(key=key, kind="train", label=f"train {t.name} ({t.recipe})", spec=spec, deps=deps,
                          resources={**study.resources, **t.resources}))

    resolved: dict[tuple[str, bool], str | None] = {}
    seen: dict[str, str] = {}
    tasks_by_name = {t.name: t for t in study.tasks}
    for m in study.models:
        synthetic = m.source == "synthetic" or (m.source == "train" and train_recipes[m.train or ""] == "synthetic")
        for rev in m.revisions:
            weights_id = _model_identity(m, rev, train_keys, hasher)
            for tname in (m.tasks or tuple(tasks_by_name)):
                task = tasks_by_name[tname]
                cache = (tname, synthetic)
                if cache not in resolved:
                    if synthetic:
                        resolved[cache] = synthetic_task_hash(task, settings)
                    else:
                        resolved[cache] = task_resolver(task, settings) if task_resolver else None
                task_hash = resolved[cache]
                if task_hash is None and strict:
                    raise CalibenchError(f"{study.path.name}: tasks: cannot load task {quote(tname)} to hash its "
                                         "content (offline, or not a known task name)")
                chat = settings["chat_template"] if m.chat_template is None else m.chat_template
                spec = _eval_spec(m, rev, task, task_hash, settings, chat, train_keys)
                spec["train_recipe"] = train_recipes[m.train] if m.train else None
                spec["study_dir"] = str(study.path.parent.resolve())  # records keep paths relative to it
                world = world_of.get(m.train or "")
                spec["world_key"] = train_keys[world] if world else None
                deps = (train_keys[m.train],) if m.source == "train" and m.train else ()
                if task_hash is None:
                    key = "?"
                else:
                    key = content_key({"kind": "eval", "model": {**weights_id, "revision": rev},
                                       "task": task_hash, "methods": sorted(task.methods),
                                       "settings": {**keyed_settings, "limit": task.limit or settings["limit"],
                                                    "chat_template": chat},
                                       "version": __version__})
                    label = f"{m.name}@{rev}/{tname}" if rev else f"{m.name}/{tname}"
                    if key in seen:
                        raise CalibenchError(f"{study.path.name}: models: {label} and {seen[key]} are the same "
                                             "model, revision and task; list it once")
                    seen[key] = label
                units.append(Unit(key=key, kind="eval", label=spec["label"], spec=spec, deps=deps,
                                  resources={**DEFAULT_RESOURCES, **study.resources, **m.resources}))
    return units


def _model_identity(m: ModelEntry, rev: str, train_keys: dict[str, str], hasher: WeightsHasher) -> dict[str, Any]:
    """What pins a model revision's weights: the local folder's weights hash (the revision's sub-folder
    where it is one), hub id (+ revision added later), train key, or params."""
    ident: dict[str, Any] = {"peft": m.peft, "dtype": m.dtype, "gguf_file": m.gguf_file}
    if m.peft and Path(m.peft).is_dir():
        ident["peft"] = "sha256:" + hasher.folder(m.peft)
    if m.source == "synthetic":
        ident["synthetic"] = {**(m.synthetic or {}), "name": m.name}
    elif m.source == "train":
        ident["train"] = train_keys[m.train or ""]
        ident["name"] = m.name
    elif m.pretrained and Path(m.pretrained).is_dir():
        folder = Path(m.pretrained)
        if rev and (folder / rev).is_dir():
            folder = folder / rev  # the loader reads this revision from its sub-folder
        ident["weights"] = "sha256:" + hasher.folder(folder, gguf_file=m.gguf_file)
    else:
        ident["hub"] = m.pretrained
    return ident


def _eval_spec(m: ModelEntry, rev: str, task: TaskEntry, task_hash: str | None, settings: dict[str, Any],
               chat: bool, train_keys: dict[str, str]) -> dict[str, Any]:
    label = f"{m.name}@{rev}" if rev else m.name
    step = revision_step(rev)
    epoch = revision_epoch(rev)
    if epoch is None and m.stage in ("base", "pretrained") and m.base is None:
        epoch = 0
    return {
        "kind": "eval", "label": f"{label} / {task.name}", "model": m.name, "revision": rev,
        "source": m.source, "pretrained": m.pretrained, "train": m.train,
        "train_key": train_keys.get(m.train or ""), "synthetic": dict(m.synthetic) if m.synthetic else None,
        "peft": m.peft, "dtype": m.dtype, "gguf_file": m.gguf_file, "chat_template": chat,
        "task": task.name, "task_hash": task_hash, "limit": task.limit or settings["limit"],
        "items": task.items, "n_options": task.n_options, "methods": list(task.methods),
        "settings": dict(settings),
        "labels": {"stage": m.stage, "params": m.params, "step": step, "epoch": epoch, "tuning": m.tuning,
                   "data": m.data, "base": m.base, "model": m.name, "revision": rev},
    }


def model_args(spec: dict[str, Any], path: str | None = None) -> str:
    """lm-eval style ``--model-args`` for an eval unit (``path`` overrides ``pretrained`` for trained models)."""
    parts = [f"pretrained={path or spec['pretrained']}"]
    if spec.get("revision") and path is None:
        parts.append(f"revision={spec['revision']}")
    for k in ("peft", "dtype", "gguf_file"):
        if spec.get(k):
            parts.append(f"{k}={spec[k]}")
    return ",".join(parts)
