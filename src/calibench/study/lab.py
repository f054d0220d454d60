"""Train-unit adapters: one small function per lifecycle-lab recipe (``calibench.world``, ``calibench.train``).

Each adapter gets the unit spec and a staging folder and returns a manifest
``{"checkpoints": {name: relative folder}}``; the store moves the folder into place only after the
adapter returns, so a killed training run leaves nothing that looks finished.

Recipe options are passed through to the lab's settings dataclasses. Option values of the form
``"@NAME"`` or ``"@NAME:CHECKPOINT"`` refer to the output of an earlier train unit listed in ``after``
(e.g. ``base: "@pretrain:lab-70k/step300"``, ``reward_model: "@reward"``); recipes that need the world
(``pretrain``, ``sft`` on ``diverse``/``narrow``, the preference stages, lab tasks) find it by the
``world`` option or the first ``world`` recipe among their ``after`` units.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError


def find_checkpoints(root: Path) -> dict[str, str]:
    """Every model folder (a folder with config.json) under ``root``, by relative name (``.`` for root)."""
    found = {}
    for cfg in sorted(root.rglob("config.json")):
        rel = cfg.parent.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):  # trainer scratch folders
            continue
        found[rel.as_posix() if rel.parts else "final"] = rel.as_posix() if rel.parts else "."
    return found


def resolve_ref(spec: dict[str, Any], value: Any) -> Any:
    """Replace ``@NAME[:CHECKPOINT]`` by the path of that train unit's output (or checkpoint)."""
    if not (isinstance(value, str) and value.startswith("@")):
        return value
    name, _, ckpt = value[1:].partition(":")
    inputs = spec.get("inputs", {})
    if name not in inputs:
        raise CalibenchError(f"train {spec['name']}: {value!r} refers to {name!r}, which is not in its 'after' list")
    path = Path(inputs[name]) / ckpt if ckpt else Path(inputs[name])
    if not path.exists():
        raise CalibenchError(f"train {spec['name']}: {value!r}: no such checkpoint ({path})")
    return str(path)


def _world_dir(spec: dict[str, Any], options: dict[str, Any]) -> str | None:
    if "world" in options:
        return str(resolve_ref(spec, options.pop("world")))
    for name in spec.get("after", []):
        if spec.get("after_recipes", {}).get(name) == "world":
            return spec["inputs"][name]
    return None


def _settings(cls: type, options: dict[str, Any], spec: dict[str, Any], where: str) -> Any:
    """Build a lab settings dataclass from options (unknown keys are an error naming the recipe)."""
    names = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(options) - names)
    if extra:
        raise CalibenchError(f"train {spec['name']}: options {extra} are not {where} settings "
                             f"(known: {', '.join(sorted(names))})")
    values = {k: v for k, v in options.items()}
    if "seed" in names:
        values.setdefault("seed", spec["seed"])
    if "device" in names:
        values.setdefault("device", spec["device"])
    if "threads" in names:
        values.setdefault("threads", spec.get("threads"))  # the study's threads (None: the automatic default)
    if "progress" in names:
        values.setdefault("progress", False)  # the study's own progress bar reports units
    return cls(**values)


def train_world(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    from calibench.world.build import build_world
    from calibench.world.entities import WorldConfig

    opts = dict(spec["options"])
    n_instructions = int(opts.pop("n_instructions", 400))
    n_preferences = int(opts.pop("n_preferences", 300))
    build_world(out, _settings(WorldConfig, opts, spec, "world"), n_instructions=n_instructions,
                n_preferences=n_preferences)
    return {"checkpoints": {}, "world": "."}


def train_pretrain(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    from calibench.train.pretrain import PretrainConfig, pretrain_family

    opts = dict(spec["options"])
    world = _world_dir(spec, opts)
    if world is None:
        raise CalibenchError(f"train {spec['name']}: pretrain needs a world (after: [a world unit])")
    sizes = opts.pop("sizes", None)
    if not sizes:
        raise CalibenchError(f"train {spec['name']}: options.sizes is required (e.g. [lab-70k])")
    extra = {k: opts.pop(k) for k in ("vocab_size", "eval_items") if k in opts}
    pretrain_family(world, out, list(sizes), _settings(PretrainConfig, opts, spec, "pretrain"), progress=False,
                    **extra)
    return {"checkpoints": find_checkpoints(out)}


def train_sft(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    from calibench.train.formats import load_instruction_data
    from calibench.train.sft import SFTSettings, run_sft

    opts = dict(spec["options"])
    world = _world_dir(spec, opts)
    base = resolve_ref(spec, opts.pop("base", None))
    if not base:
        raise CalibenchError(f"train {spec['name']}: options.base is required (e.g. '@pretrain:lab-70k/step300')")
    data = load_instruction_data(str(resolve_ref(spec, opts.pop("data", "diverse"))), world)
    eval_items = int(opts.pop("eval_items", 100))
    run_sft(base, data, out, _settings(SFTSettings, opts, spec, "SFT"), world_dir=world, eval_items=eval_items,
            allow_pickle=_allow_pickle(spec))
    return {"checkpoints": find_checkpoints(out)}


def _pref(spec: dict[str, Any], stage: str, out: Path) -> dict[str, Any]:
    """Reward model, RL or DPO. The manifest carries the stage's held-out training signal
    (``calibench.train.signals``) and, for RL whose manipulation check failed, ``not_testable``: the
    reason the study gives that model's claim cells (``calibench.study.findings``)."""
    from calibench.train import preference as pref
    from calibench.train.formats import load_preference_data

    opts = dict(spec["options"])
    world = _world_dir(spec, opts)
    base = resolve_ref(spec, opts.pop("base", None))
    if not base:
        raise CalibenchError(f"train {spec['name']}: options.base is required")
    rows = load_preference_data(str(resolve_ref(spec, opts.pop("data", "world"))), world)
    eval_items = int(opts.pop("eval_items", 100))
    if stage == "reward":
        result = pref.run_reward(base, rows, out, _settings(pref.PrefSettings, opts, spec, "reward"),
                                 allow_pickle=_allow_pickle(spec))
    elif stage == "rl":
        reward = resolve_ref(spec, opts.pop("reward_model", None))
        if not reward:
            raise CalibenchError(f"train {spec['name']}: options.reward_model is required (e.g. '@reward')")
        opts.setdefault("default_lr", 1e-4)
        result = pref.run_rl(base, reward, rows, out, _settings(pref.PrefSettings, opts, spec, "RL"),
                             world_dir=world, eval_items=eval_items, allow_pickle=_allow_pickle(spec))
    else:
        opts.setdefault("default_lr", 5e-4)
        result = pref.run_dpo(base, rows, out, _settings(pref.PrefSettings, opts, spec, "DPO"), world_dir=world,
                              eval_items=eval_items, allow_pickle=_allow_pickle(spec))
    signal = result["signal"]
    manifest: dict[str, Any] = {"checkpoints": find_checkpoints(out), "training_signal": signal}
    if signal.get("not_testable"):
        manifest["not_testable"] = signal["not_testable"]
    return manifest


def _allow_pickle(spec: dict[str, Any]) -> bool:
    """The study's ``settings.allow_pickle`` (train specs carry it since the weights policy applies to
    every loader)."""
    return bool(spec.get("allow_pickle", False))


def train_reward(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    return _pref(spec, "reward", out)


def train_rl(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    return _pref(spec, "rl", out)


def train_dpo(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    return _pref(spec, "dpo", out)


LAB_ADAPTERS = {"world": train_world, "pretrain": train_pretrain, "sft": train_sft, "reward": train_reward,
                "rl": train_rl, "dpo": train_dpo}
