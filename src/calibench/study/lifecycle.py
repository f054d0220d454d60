"""The built-in lifecycle study: a synthetic world, a pretrained family, its aligned variants, evaluated.

``lifecycle_study(preset)`` writes the whole life of a model family as an ordinary study (so it is
resumable, crash-safe and Ray-ready like any other): world -> pretraining of the preset's sizes with
log-spaced checkpoints -> SFT full and LoRA on diverse and narrow data -> reward model, RL and DPO
from the full/diverse SFT model -> every stage evaluated on lab CLM, facts and MC with every method.
Sizes come from ``calibench.train.config.PRESETS`` (``default`` and ``quick``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from calibench.io import write_text

TASKS = [
    {"name": "lab-clm", "methods": ["token"]},
    {"name": "lab-facts", "methods": ["first-token", "sequence", "p-true"]},
    {"name": "lab-mc", "methods": ["choice", "continuation-sum", "continuation-mean", "continuation-min"]},
]


def lifecycle_study(preset_name: str = "default", *, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """The lifecycle study as a study-file mapping (see docs/study.md for the schema)."""
    from calibench.train.config import PRESETS, checkpoint_steps, count_parameters, get_size

    p = PRESETS[preset_name]
    largest = p.sizes[-1]
    final = f"{largest}/step{p.pretrain_steps}"
    epochs = [f"epoch{e}" for e in range(1, p.sft_epochs + 1)]
    train: list[dict[str, Any]] = [
        {"name": "world", "recipe": "world",
         "options": {"people": p.people, "n_instructions": p.sft_examples, "n_preferences": p.pref_examples}},
    ]
    # One pretraining unit per size, largest first: it is the start of every alignment stage, and
    # separate units let two workers (``--executor ray``) train the sizes side by side. Each unit
    # builds the same deterministic tokenizer from the world's corpus.
    models: list[dict[str, Any]] = []
    pretrain_options = {"steps": p.pretrain_steps, "batch_size": p.batch_size, "lr": p.lr,
                        "first_checkpoint": p.first_checkpoint, "eval_items": p.probe_items}
    for size in reversed(p.sizes):
        train.append({"name": f"pretrain-{size}", "recipe": "pretrain", "after": ["world"],
                      "options": {"sizes": [size], **pretrain_options}})
    for size in p.sizes:
        steps = checkpoint_steps(p.pretrain_steps, p.first_checkpoint) if size == largest else [p.pretrain_steps]
        models.append({"name": size, "train": f"pretrain-{size}", "revisions": [f"{size}/step{s}" for s in steps],
                       "params": count_parameters(get_size(size), 512), "stage": "pretrained"})
    for tuning in ("full", "lora"):
        for data in ("diverse", "narrow"):
            name = f"sft-{tuning}-{data}"
            train.append({"name": name, "recipe": "sft", "after": ["world", f"pretrain-{largest}"],
                          "options": {"base": f"@pretrain-{largest}:{final}", "data": data, "method": tuning,
                                      "epochs": p.sft_epochs, "eval_items": p.probe_items}})
            models.append({"name": name, "train": name, "revisions": epochs, "stage": "sft", "tuning": tuning,
                           "data": data, "base": largest})
    sft = f"@sft-full-diverse:epoch{p.sft_epochs}"
    train += [
        {"name": "reward", "recipe": "reward", "after": ["world", "sft-full-diverse"],
         "options": {"base": sft, "epochs": p.reward_epochs}},
        {"name": "rl", "recipe": "rl", "after": ["world", "sft-full-diverse", "reward"],
         "options": {"base": sft, "reward_model": "@reward", "steps": p.rl_steps, "eval_items": p.probe_items}},
        {"name": "dpo", "recipe": "dpo", "after": ["world", "sft-full-diverse"],
         "options": {"base": sft, "epochs": p.dpo_epochs, "eval_items": p.probe_items}},
    ]
    for stage in ("rl", "dpo"):
        models.append({"name": stage, "train": stage, "revisions": ["final"], "stage": stage, "tuning": "full",
                       "data": "diverse", "base": "sft-full-diverse"})
    return {
        "name": f"lifecycle-{preset_name}",
        "description": f"Built-in lifecycle study ({preset_name} preset): world, pretraining of "
                       f"{', '.join(p.sizes)}, SFT full/LoRA on diverse/narrow data, reward + RL and DPO.",
        # Lab models are tiny: one torch thread is as fast as two on an idle machine and far faster on a
        # busy one (OpenMP threads spin-wait for cores).
        # Every evaluated revision is scored on all items of each lab task (no limit); unit CIs and claim
        # cells use 1000 bootstrap resamples.
        "settings": {"seed": seed, "limit": None, "bootstrap": 1000, "device": device,
                     "threads": 1 if device == "cpu" else None},
        "metrics": ["accuracy", "ece", "ace", "sce", "brier", "nll", "auroc"],
        "tasks": TASKS,
        "train": train,
        "models": models,
    }


def write_lifecycle_study(out_dir: str | Path, preset_name: str = "default", **kwargs: Any) -> Path:
    """Write the lifecycle study file into ``out_dir`` (so `calibench study run` can resume it too)."""
    path = Path(out_dir) / "lifecycle.yaml"
    write_text(path, yaml.safe_dump(lifecycle_study(preset_name, **kwargs), sort_keys=False))
    return path
