"""Model sizes: the lab's CPU-sized GPT-NeoX family and the real Pythia shapes for GPU users.

Every size is a GPT-NeoX with Pythia's choices (see ``calibench.models.tiny.neox_config``); only
width, depth, heads and context change. Lab names state the parameter count with the lab's default
512-token vocabulary; ``count_parameters`` gives the exact number for any vocabulary.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from calibench.errors import CalibenchError


@dataclass(frozen=True)
class ModelSize:
    """Shape of one GPT-NeoX model."""

    name: str
    hidden: int
    layers: int
    heads: int
    context: int = 128

    def config(self, vocab_size: int):
        """The transformers ``GPTNeoXConfig`` for this shape and a tokenizer's vocabulary."""
        from calibench.models.tiny import neox_config

        return neox_config(vocab_size, hidden=self.hidden, layers=self.layers, heads=self.heads, context=self.context)


def count_parameters(size: ModelSize, vocab_size: int) -> int:
    """Exact parameter count of GPT-NeoX with untied embeddings (input + output matrices)."""
    h, v = size.hidden, vocab_size
    per_layer = (
        2 * 2 * h          # two layer norms (weight + bias)
        + 3 * h * h + 3 * h  # fused QKV projection
        + h * h + h        # attention output
        + 4 * h * h + 4 * h  # MLP up
        + 4 * h * h + h    # MLP down
    )
    return v * h + size.layers * per_layer + 2 * h + v * h


LAB_SIZES: dict[str, ModelSize] = {
    s.name: s
    for s in [
        ModelSize("lab-20k", hidden=16, layers=1, heads=2),    # test size
        ModelSize("lab-70k", hidden=32, layers=3, heads=4),
        ModelSize("lab-300k", hidden=64, layers=4, heads=4),
        ModelSize("lab-1m", hidden=128, layers=4, heads=4),
        ModelSize("lab-3m", hidden=192, layers=6, heads=6),
    ]
}

# Pythia (Biderman et al. 2023, Table 1). With the Pythia tokenizer (vocab 50304 padded) the counts
# match the published sizes; with a world tokenizer the embedding share is smaller.
PYTHIA_SIZES: dict[str, ModelSize] = {
    s.name: s
    for s in [
        ModelSize("pythia-70m", hidden=512, layers=6, heads=8, context=2048),
        ModelSize("pythia-160m", hidden=768, layers=12, heads=12, context=2048),
        ModelSize("pythia-410m", hidden=1024, layers=24, heads=16, context=2048),
        ModelSize("pythia-1b", hidden=2048, layers=16, heads=8, context=2048),
        ModelSize("pythia-1.4b", hidden=2048, layers=24, heads=16, context=2048),
        ModelSize("pythia-2.8b", hidden=2560, layers=32, heads=32, context=2048),
        ModelSize("pythia-6.9b", hidden=4096, layers=32, heads=32, context=2048),
        ModelSize("pythia-12b", hidden=5120, layers=36, heads=40, context=2048),
    ]
}

SIZES: dict[str, ModelSize] = {**LAB_SIZES, **PYTHIA_SIZES}
DEFAULT_FAMILY = ["lab-70k", "lab-300k", "lab-1m"]  # >= 3 sizes, ~13x parameters apart


def get_size(name: str) -> ModelSize:
    """Look a size up by name; the error lists the valid names."""
    try:
        return SIZES[name]
    except KeyError:
        raise CalibenchError(f"unknown model size {name!r}; choose from {', '.join(SIZES)}") from None


def checkpoint_steps(total: int, first: int = 16) -> list[int]:
    """Log-spaced checkpoint steps like Pythia's early revisions: 0, first, 2*first, 4*first, ..., total."""
    if total < 1:
        raise CalibenchError(f"steps must be >= 1, got {total}")
    steps = [0]
    s = first
    while s < total:
        steps.append(s)
        s *= 2
    steps.append(total)
    return steps


def begin_stage(out_dir: str | os.PathLike[str]) -> tuple[Path, float]:
    """What every training stage does first: quiet logs, create ``out_dir``, start the clock."""
    quiet_transformers()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out, time.perf_counter()


def quiet_transformers() -> None:
    """Silence per-save progress bars and info logs that would drown the stage's own progress bar."""
    from calibench.quiet import quiet_libraries

    quiet_libraries()


@dataclass(frozen=True)
class Preset:
    """Sizes of every lab stage for one run length (used by ``calibench lifecycle``).

    ``probe_items``: facts and MC items the in-training calibration probe scores at each checkpoint
    (``calibration_curve.json``); the study itself scores every revision on all items of each task.
    """

    people: int
    sizes: tuple[str, ...]
    pretrain_steps: int
    sft_epochs: int
    sft_examples: int
    pref_examples: int
    reward_epochs: int
    rl_steps: int
    dpo_epochs: int
    probe_items: int
    batch_size: int = 16
    lr: float = 3e-3
    first_checkpoint: int = 16


# Default: lab-1m at 500 steps x 16 windows x 128 tokens (1.02M tokens, about 7 passes over the
# 147k-token corpus) reaches facts first-token 0.74 and MC continuation-sum 0.80 on seen people
# (lab-300k 0.34 / 0.56, lab-70k 0.13 / 0.27; docs/lifecycle-lab.md, "Learning the world"). Quick is a
# smoke run (its models learn almost nothing).
PRESETS: dict[str, Preset] = {
    "default": Preset(people=120, sizes=("lab-70k", "lab-300k", "lab-1m"), pretrain_steps=500, sft_epochs=3,
                      sft_examples=400, pref_examples=400, reward_epochs=2, rl_steps=48, dpo_epochs=2,
                      probe_items=100, batch_size=16, lr=6e-3),
    "quick": Preset(people=30, sizes=("lab-20k", "lab-70k", "lab-300k"), pretrain_steps=32, sft_epochs=2,
                    sft_examples=64, pref_examples=64, reward_epochs=2, rl_steps=16, dpo_epochs=1,
                    probe_items=40, batch_size=16, lr=6e-3),
}
