"""Preference tuning: a reward model, online RL against it, and DPO (all TRL trainers).

* ``run_reward``: TRL ``RewardTrainer`` on {prompt, chosen, rejected}; the model is a GPT-NeoX
  ``AutoModelForSequenceClassification`` (one score) initialised from a lab model.
* ``run_rl``: TRL ``RLOOTrainer`` (REINFORCE leave-one-out, a PPO-family method without a value
  network) with the reward model as reward function; a few steps at lab scale.
* ``run_dpo``: TRL ``DPOTrainer`` with the frozen reference model passed explicitly.

Each splits the pairs with ``calibench.train.formats.split_preferences`` (seed and ``held_out``
fraction from the settings; a fact's pairs are all on one side), trains on the training side and
measures its signal on the held-out side (``calibench.train.signals``): reward-model pairwise
accuracy, the RL manipulation check, DPO's implicit-reward margin and accuracy.

Each writes the final model at ``OUT/`` (plain HF folder, tokenizer included), per-epoch folders
where the run has epochs, ``calibration_curve.json`` when a world dir is given,
``training_signal.json`` and ``train_log.json``. Zhu et al. ran PPO after SFT and found no extra calibration harm; RL and DPO
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
    steps: int = 48
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
    held_out: float = 0.25  # share of facts (or prompts) whose pairs are held out for the signal

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


def _split(rows: list[dict[str, str]], settings: PrefSettings) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    from calibench.train.formats import split_preferences

    train, held = split_preferences(rows, settings.held_out, settings.seed)
    if not train or not held:
        raise CalibenchError(f"{len(rows)} preference pairs cannot be split into training and held-out pairs "
                             "(need pairs about at least two facts or prompts)")
    return train, held


def _finish(stage: str, trainer, tokenizer, out: Path, started: float, settings: PrefSettings,
            signal: dict[str, Any], **info: Any):
    from calibench.train.callbacks import save_model_folder
    from calibench.train.signals import SIGNAL_FILE

    signal = {"stage": stage, **signal}
    summary = {
        "stage": stage,
        "settings": asdict(settings),
        "seconds": round(time.perf_counter() - started, 2),
        "signal": signal,
        "log_history": trainer.state.log_history,
        **info,
    }
    if trainer.is_world_process_zero():  # one writer under `accelerate launch`
        save_model_folder(trainer.model, tokenizer, out, merge_into=True)
        write_json(out / SIGNAL_FILE, signal)
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
    """Train a scalar reward model on the training pairs; its signal is the pairwise accuracy on the
    held-out pairs (and, for comparison, on the training pairs)."""
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    from calibench.train.signals import reward_accuracy

    out, started = begin_stage(out_dir)
    train, held = _split(rows, settings)
    with torch_threads(stage_threads(settings.threads, base)):
        set_seed(settings.seed)  # the new score head is drawn when the model loads, before the trainer seeds
        model, tokenizer = load_base(base, device=settings.device, kind="reward", allow_pickle=allow_pickle)
        args = RewardConfig(**trainer_common(out, settings, epochs=settings.epochs), max_length=settings.max_length)
        trainer = RewardTrainer(model=model, args=args, train_dataset=_dataset(train, ("prompt", "chosen", "rejected")),
                                processing_class=tokenizer)
        if not len(trainer.train_dataset):
            raise CalibenchError(f"all {len(train)} training pairs are longer than max_length "
                                 f"{settings.max_length} tokens (the reward trainer drops them)")
        quiet_trainer(trainer, settings.progress)
        trainer.train()
        model.eval()
        signal = {"held_out": reward_accuracy(model, tokenizer, held, device=settings.device, seed=settings.seed),
                  "train": reward_accuracy(model, tokenizer, train, device=settings.device, seed=settings.seed)}
    return _finish("reward", trainer, tokenizer, out, started, settings, signal, base=str(base),
                   pairwise_accuracy=signal["held_out"]["accuracy"], examples=len(train), held_out=len(held))


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
    """RLOO for ``settings.steps`` steps on the training prompts of ``rows``, rewarded by ``reward_model``;
    the manipulation check (``calibench.train.signals.MANIPULATION``) runs on the held-out prompts."""
    from trl import RLOOConfig, RLOOTrainer

    from calibench.train.signals import manipulation_check, reward_function

    out, started = begin_stage(out_dir)
    if settings.batch_size % settings.num_generations:
        raise CalibenchError(
            f"batch size {settings.batch_size} must be a multiple of num_generations {settings.num_generations}"
        )
    train, held = _split(rows, settings)
    with torch_threads(stage_threads(settings.threads, policy)):
        model, tokenizer = load_base(policy, device=settings.device, allow_pickle=allow_pickle)
        rm, rm_tokenizer = load_base(reward_model, device=settings.device, kind="scorer", allow_pickle=allow_pickle)
        rm.eval()  # scores only; never trained here
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
            reward_funcs=reward_function(rm, rm_tokenizer, device=settings.device),
            args=args,
            train_dataset=_dataset(train, ("prompt",)),
            processing_class=tokenizer,
            callbacks=_callbacks(out, world_dir, settings, eval_items, epochs=False),
        )
        quiet_trainer(trainer, settings.progress)
        trainer.train()
        start, _ = load_base(policy, device=settings.device, allow_pickle=allow_pickle)
        signal = manipulation_check(start, trainer.model, tokenizer, rm, rm_tokenizer, [r["prompt"] for r in held],
                                    max_new_tokens=settings.max_completion_length, seed=settings.seed,
                                    device=settings.device)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    return _finish("rl", trainer, tokenizer, out, started, settings, signal, policy=str(policy),
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
    """DPO against a frozen copy of ``base`` (passed explicitly as ``ref_model``) on the training pairs;
    its signal is the implicit-reward margin and accuracy on the held-out pairs."""
    from trl import DPOConfig, DPOTrainer

    from calibench.train.signals import dpo_signal

    out, started = begin_stage(out_dir)
    train, held = _split(rows, settings)
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
            train_dataset=_dataset(train, ("prompt", "chosen", "rejected")),
            processing_class=tokenizer,
            callbacks=_callbacks(out, world_dir, settings, eval_items, epochs=True),
        )
        quiet_trainer(trainer, settings.progress)
        trainer.train()
        trainer.model.eval()
        signal = {name: dpo_signal(trainer.model, ref_model, tokenizer, part, beta=settings.beta,
                                   device=settings.device, seed=settings.seed)
                  for name, part in (("held_out", held), ("train", train))}
    return _finish("dpo", trainer, tokenizer, out, started, settings, signal, base=str(base), examples=len(train),
                   held_out=len(held))
