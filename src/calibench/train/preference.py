"""Preference tuning: a reward model, online RL against it, and DPO (all TRL trainers).

* ``run_reward``: TRL ``RewardTrainer`` on {prompt, chosen, rejected}; the model is a GPT-NeoX
  ``AutoModelForSequenceClassification`` (one score) initialised from a lab model.
* ``run_rl``: TRL ``RLOOTrainer`` (REINFORCE leave-one-out, a PPO-family method without a value
  network) with the reward model as reward function; a few steps at lab scale.
* ``run_dpo``: TRL ``DPOTrainer`` with the frozen reference model passed explicitly.

Each writes the final model at ``OUT/`` (plain HF folder, tokenizer included), per-epoch folders
where the run has epochs, ``calibration_curve.json`` when a world dir is given, and
``train_log.json``. Zhu et al. ran PPO after SFT and found no extra calibration harm; RL and DPO
here let a study check that claim.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError
from calibench.io import write_json
from calibench.threads import torch_threads
from calibench.train.config import begin_stage
from calibench.train.progress import quiet_trainer
from calibench.train.sft import load_base, stage_threads, trainer_common


@dataclass(frozen=True)
class PrefSettings:
    """Settings shared by the three stages; ``steps`` applies to RL, ``epochs`` to reward and DPO."""

    epochs: int = 1
    steps: int = 8
    batch_size: int = 8
    lr: float | None = None  # None: stage default (reward 1e-3, RL 1e-4, DPO 5e-4)
    beta: float = 0.1
    num_generations: int = 4
    max_completion_length: int = 16
    max_length: int = 128
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # None: calibench.threads.resolve_threads picks (1 for lab sizes)
    progress: bool = True
    default_lr: float = 1e-3

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else self.default_lr


def _dataset(rows: list[dict[str, str]], keys: tuple[str, ...]):
    from datasets import Dataset

    if not rows:
        raise CalibenchError("no preference data")
    return Dataset.from_list([{k: r[k] for k in keys} for r in rows])


def _callbacks(out: Path, world_dir: Any, settings: PrefSettings, eval_items: int, *, epochs: bool) -> list[Any]:
    from calibench.train.callbacks import CalibrationCallback, CalibrationProbe, EpochCheckpoint

    callbacks: list[Any] = []
    if world_dir is not None:
        probe = CalibrationProbe.from_world(world_dir, out / "calibration_curve.json", n_items=eval_items,
                                            device=settings.device, seed=settings.seed)
        callbacks.append(CalibrationCallback(probe))
    if epochs:
        callbacks.append(EpochCheckpoint(out))
    return callbacks


def _finish(stage: str, trainer, tokenizer, out: Path, started: float, settings: PrefSettings, **info: Any):
    from calibench.train.callbacks import save_model_folder

    summary = {
        "stage": stage,
        "settings": asdict(settings),
        "seconds": round(time.perf_counter() - started, 2),
        "log_history": trainer.state.log_history,
        **info,
    }
    if trainer.is_world_process_zero():  # one writer under `accelerate launch`
        save_model_folder(trainer.model, tokenizer, out, merge_into=True)
        write_json(out / "train_log.json", summary)
    return summary


def run_reward(
    base: str | os.PathLike[str],
    rows: list[dict[str, str]],
    out_dir: str | os.PathLike[str],
    settings: PrefSettings = PrefSettings(),
    *,
    allow_pickle: bool = False,
) -> dict[str, Any]:
    """Train a scalar reward model; also reports its pairwise accuracy on the training pairs."""
    import torch
    from trl import RewardConfig, RewardTrainer

    out, started = begin_stage(out_dir)
    with torch_threads(stage_threads(settings.threads, base)):
        model, tokenizer = load_base(base, device=settings.device, kind="reward", allow_pickle=allow_pickle)
        args = RewardConfig(**trainer_common(out, settings, epochs=settings.epochs), max_length=settings.max_length)
        trainer = RewardTrainer(model=model, args=args, train_dataset=_dataset(rows, ("prompt", "chosen", "rejected")),
                                processing_class=tokenizer)
        quiet_trainer(trainer, settings.progress)
        trainer.train()
        model.eval()
        with torch.no_grad():
            wins = [reward_scores(model, tokenizer, [r["prompt"] + r["chosen"], r["prompt"] + r["rejected"]],
                                  device=settings.device) for r in rows[:64]]
    accuracy = sum(float(c > r) for c, r in wins) / len(wins)
    return _finish("reward", trainer, tokenizer, out, started, settings, base=str(base),
                   pairwise_accuracy=accuracy, examples=len(rows))


def reward_scores(model, tokenizer, texts: list[str], *, device: str = "cpu") -> list[float]:
    """Scalar rewards of full texts (prompt + response) under a sequence-classification model."""
    enc = tokenizer(texts, return_tensors="pt", padding=True).to(device)
    return model(**enc).logits[:, 0].tolist()


def run_rl(
    policy: str | os.PathLike[str],
    reward_model: str | os.PathLike[str],
    rows: list[dict[str, str]],
    out_dir: str | os.PathLike[str],
    settings: PrefSettings = PrefSettings(default_lr=1e-4),
    *,
    world_dir: str | os.PathLike[str] | None = None,
    eval_items: int = 100,
    allow_pickle: bool = False,
) -> dict[str, Any]:
    """RLOO for ``settings.steps`` steps on the prompts of ``rows``, rewarded by ``reward_model``."""
    from trl import RLOOConfig, RLOOTrainer

    out, started = begin_stage(out_dir)
    if settings.batch_size % settings.num_generations:
        raise CalibenchError(
            f"batch size {settings.batch_size} must be a multiple of num_generations {settings.num_generations}"
        )
    with torch_threads(stage_threads(settings.threads, policy)):
        model, tokenizer = load_base(policy, device=settings.device, allow_pickle=allow_pickle)
        rm, rm_tokenizer = load_base(reward_model, device=settings.device, kind="scorer", allow_pickle=allow_pickle)
        common = trainer_common(out, settings, epochs=1)
        common.update(max_steps=settings.steps, logging_steps=1)
        args = RLOOConfig(
            **common,
            num_generations=settings.num_generations,
            max_completion_length=settings.max_completion_length,
            beta=settings.beta,
            temperature=1.0,
        )
        trainer = RLOOTrainer(
            model=model,
            reward_funcs=rm,
            args=args,
            train_dataset=_dataset(rows, ("prompt",)),
            processing_class=tokenizer,
            reward_processing_classes=rm_tokenizer,
            callbacks=_callbacks(out, world_dir, settings, eval_items, epochs=False),
        )
        quiet_trainer(trainer, settings.progress)
        trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    return _finish("rl", trainer, tokenizer, out, started, settings, policy=str(policy),
                   reward_model=str(reward_model), mean_reward_first=rewards[0] if rewards else None,
                   mean_reward_last=rewards[-1] if rewards else None)


def run_dpo(
    base: str | os.PathLike[str],
    rows: list[dict[str, str]],
    out_dir: str | os.PathLike[str],
    settings: PrefSettings = PrefSettings(default_lr=5e-4),
    *,
    world_dir: str | os.PathLike[str] | None = None,
    eval_items: int = 100,
    allow_pickle: bool = False,
) -> dict[str, Any]:
    """DPO against a frozen copy of ``base`` (passed explicitly as ``ref_model``)."""
    from trl import DPOConfig, DPOTrainer

    out, started = begin_stage(out_dir)
    with torch_threads(stage_threads(settings.threads, base)):
        model, tokenizer = load_base(base, device=settings.device, allow_pickle=allow_pickle)
        ref_model, _ = load_base(base, device=settings.device, allow_pickle=allow_pickle)
        ref_model.eval()
        args = DPOConfig(**trainer_common(out, settings, epochs=settings.epochs), beta=settings.beta,
                         max_length=settings.max_length)
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=_dataset(rows, ("prompt", "chosen", "rejected")),
            processing_class=tokenizer,
            callbacks=_callbacks(out, world_dir, settings, eval_items, epochs=True),
        )
        quiet_trainer(trainer, settings.progress)
        trainer.train()
    return _finish("dpo", trainer, tokenizer, out, started, settings, base=str(base), examples=len(rows))
