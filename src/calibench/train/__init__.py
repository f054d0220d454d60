"""calibench.train: the lifecycle lab's training stages (see docs/lifecycle-lab.md).

Modules: ``config`` (model sizes incl. Pythia shapes, presets), ``pretrain`` (tokenizer + GPT-NeoX
family with log-spaced checkpoints), ``sft`` (full / LoRA instruction tuning), ``preference``
(reward model, RLOO, DPO), ``callbacks`` (calibration curve during training), ``formats`` (Alpaca,
OpenAssistant oasst1, HH-RLHF loaders). Heavy libraries load only when a stage runs.
"""

from calibench.train.config import DEFAULT_FAMILY, LAB_SIZES, PRESETS, PYTHIA_SIZES, SIZES, ModelSize, Preset

__all__ = ["DEFAULT_FAMILY", "LAB_SIZES", "PRESETS", "PYTHIA_SIZES", "SIZES", "ModelSize", "Preset"]
