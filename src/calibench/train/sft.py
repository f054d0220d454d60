"""Instruction tuning (SFT): full fine-tuning or LoRA with TRL's SFTTrainer, a checkpoint per epoch.

Output layout::

    OUT/epoch1/ epoch2/ ...        plain HF folders (LoRA merged into the weights) + tokenizer;
                                   LoRA runs also keep OUT/epochN/adapter/ (load with peft=)
    OUT/                           the last epoch again, top level
    OUT/calibration_curve.json     accuracy and ECE at epoch 0 (the base model) and after each epoch
    OUT/train_log.json             TRL's log history, settings and seconds

Zhu et al. compare full tuning and LoRA on narrow (Alpaca) and diverse (OpenAssistant) data over
epochs; this is that experiment at lab scale, and the same code runs LLaMA-size models on a GPU.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError
from calibench.io import write_json
from calibench.threads import resolve_threads, torch_threads
from calibench.train.config import begin_stage
from calibench.train.progress import quiet_trainer

# GPT-NeoX module names; LoRA on every linear layer (QLoRA's recommendation) works best on tiny models.
NEOX_LORA_TARGETS = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]


@dataclass(frozen=True)
class SFTSettings:
    """Training settings; learning rates suit lab-size models (LoRA needs a larger one)."""

    method: str = "full"  # full | lora
    epochs: int = 3
    batch_size: int = 16
    lr: float | None = None  # None: 5e-4 for full, 5e-3 for LoRA
    lora_r: int = 8
    lora_alpha: int = 16
    max_length: int = 128
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # None: calibench.threads.resolve_threads picks (1 for lab sizes)
    progress: bool = True  # a tqdm bar with the losses; False prints nothing

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 5e-3 if self.method == "lora" else 5e-4


def stage_threads(explicit: int | None, base: str | os.PathLike[str]) -> int | None:
    """The thread count of a stage that trains the model in folder ``base`` (explicit wins)."""
    from calibench.models.size import folder_parameters

    return resolve_threads(explicit, folder_parameters(Path(base)))


def load_base(path: str | os.PathLike[str], *, device: str = "cpu", kind: str = "causal",
              allow_pickle: bool = False, trust_remote_code: bool = False):
    """Load a local HF model folder and its tokenizer, with a pad token set (TRL needs one).

    The weights policy of every loader applies (``calibench.models.loading.check_folder_policy``):
    safetensors only unless ``allow_pickle``, no custom code (``auto_map``) unless ``trust_remote_code``.
    ``kind``: ``causal`` (a causal LM), ``reward`` (a sequence classifier started from any model; a new
    score head is expected) or ``scorer`` (an already trained reward model: it must have a score head,
    a causal LM would get a randomly initialised one and score noise).
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from calibench.models.loading import check_folder_policy, load_error_line

    p = Path(path)
    if not (p / "config.json").is_file():
        raise CalibenchError(f"{p}: not a model folder (no config.json)")
    check_folder_policy(p, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    if kind == "scorer":
        require_score_head(p)
    common: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(p, **common)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        weights = {**common, "use_safetensors": None if allow_pickle else True}
        if kind == "causal":
            model = AutoModelForCausalLM.from_pretrained(p, **weights)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(p, num_labels=1, **weights)
            model.config.pad_token_id = tokenizer.pad_token_id
    except Exception as err:
        if (line := load_error_line(err)) is None:
            raise
        raise CalibenchError(f"{p}: could not load the model: {line}") from None
    return model.to(device), tokenizer


def require_score_head(folder: Path) -> None:
    """A reward model must be a sequence classifier (``*ForSequenceClassification`` in its config)."""
    import json

    from calibench.io import read_text

    try:
        archs = json.loads(read_text(folder / "config.json")).get("architectures") or []
    except (ValueError, AttributeError):
        archs = []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise CalibenchError(f"{folder}: not a reward model (architectures {archs or 'unknown'}, no score head); "
                             "train one with `calibench train reward` and pass its output folder")


def trainer_common(out: Path, settings: Any, *, epochs: int) -> dict[str, Any]:
    """TrainingArguments fields every lab stage shares: no hub, no reports, no intermediate saves."""
    return {
        "output_dir": str(out / ".trainer"),
        "num_train_epochs": epochs,
        "per_device_train_batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "logging_steps": 5,
        "save_strategy": "no",
        "report_to": "none",
        "seed": settings.seed,
        "data_seed": settings.seed,
        "use_cpu": settings.device == "cpu",
        "disable_tqdm": True,  # transformers' bar prints raw log dicts; quiet_trainer adds our own
        "dataloader_num_workers": 0,
    }


def run_sft(
    base: str | os.PathLike[str],
    data: list[dict[str, str]],
    out_dir: str | os.PathLike[str],
    settings: SFTSettings = SFTSettings(),
    *,
    world_dir: str | os.PathLike[str] | None = None,
    eval_items: int = 100,
    allow_pickle: bool = False,
) -> dict[str, Any]:
    """Fine-tune ``base`` on prompt/completion rows; returns the training summary."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from calibench.train.callbacks import (
        CalibrationCallback,
        CalibrationProbe,
        EpochCheckpoint,
        save_model_folder,
    )

    if settings.method not in ("full", "lora"):
        raise CalibenchError(f"--method must be full or lora, got {settings.method!r}")
    if settings.epochs < 1:
        raise CalibenchError(f"--epochs must be >= 1, got {settings.epochs}")
    if not data:
        raise CalibenchError("no instruction data")
    out, started = begin_stage(out_dir)
    with torch_threads(stage_threads(settings.threads, base)):
        model, tokenizer = load_base(base, device=settings.device, allow_pickle=allow_pickle)
        peft_config = None
        if settings.method == "lora":
            from peft import LoraConfig

            peft_config = LoraConfig(
                r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=0.0,
                target_modules=NEOX_LORA_TARGETS, task_type="CAUSAL_LM",
            )
        args = SFTConfig(
            **trainer_common(out, settings, epochs=settings.epochs),
            max_length=settings.max_length,
            completion_only_loss=True,
            packing=False,
        )
        saver = EpochCheckpoint(out)
        callbacks: list[Any] = [saver]
        probe = None
        if world_dir is not None:
            probe = CalibrationProbe.from_world(world_dir, out / "calibration_curve.json", n_items=eval_items,
                                                device=settings.device, seed=settings.seed)
            callbacks.insert(0, CalibrationCallback(probe))
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(data),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
        quiet_trainer(trainer, settings.progress, f"sft ({settings.method})")
        trainer.train()
        if trainer.is_world_process_zero():
            save_model_folder(trainer.model, tokenizer, out, merge_into=True)  # final = last epoch, top level
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    summary = {
        "stage": "sft",
        "base": str(base),
        "settings": asdict(settings),
        "examples": len(data),
        "trainable_parameters": trainable,
        "epochs": [p.name for p in saver.saved],
        "seconds": round(time.perf_counter() - started, 2),
        "log_history": trainer.state.log_history,
    }
    if trainer.is_world_process_zero():
        write_json(out / "train_log.json", summary)
    return summary
