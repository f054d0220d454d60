"""Training progress for the TRL stages: one rich bar with the latest logged numbers, never raw dicts.

transformers' own callbacks print every log as a Python dict (``{'loss': 2.1, 'grad_norm': ...}``):
its tqdm bar writes them under the bar and, without a bar, ``PrinterCallback`` prints them. The lab's
stages replace both with ``LossProgress`` (or nothing, when progress is off); the full log history is
still saved in ``train_log.json``.
"""

from __future__ import annotations

from typing import Any

try:  # transformers is a hard dependency; the guard only keeps `import calibench.train` light.
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover
    TrainerCallback = object  # type: ignore[misc,assignment]

# Logged values worth showing on the bar, in this order (others, e.g. grad_norm, stay in the log history).
SHOWN = ("loss", "train_loss", "reward", "rewards/accuracies", "rewards/margins", "accuracy", "learning_rate")


def log_summary(logs: dict[str, Any]) -> str:
    """``loss=2.134 learning_rate=0.0005`` from a trainer log dict ("" when it holds none of SHOWN)."""
    parts = []
    for k in SHOWN:
        v = logs.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            parts.append(f"{k}={v:.4g}" if k == "learning_rate" else f"{k}={v:.3f}")
    return " ".join(parts)


class LossProgress(TrainerCallback):
    """A rich progress bar over the optimizer steps, its text the latest logged loss."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.task: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=False)
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=state.max_steps or None, info="")

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        text = log_summary(logs or {})
        if self.bar is not None and text:
            self.bar.update(self.task, info=text)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(self.task, completed=state.global_step)
            self.bar.stop()
            self.bar = None


def quiet_trainer(trainer: Any, progress: bool, label: str = "train") -> None:
    """Replace transformers' dict-printing progress and log callbacks with ``LossProgress`` (or nothing)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if progress:
        trainer.add_callback(LossProgress(label))
