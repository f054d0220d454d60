"""Calibration during training: score held-out facts and MC items at every checkpoint.

A training run alone then shows its calibration curve (``calibration_curve.json``: step or epoch ->
accuracy and ECE, per frequency bucket too), without a separate evaluation pass. The numbers follow
calibench's conventions on a fixed, seeded subset of items:

* facts, first-token: confidence = max next-token probability after the prompt; correct = that
  token is the first token of the gold object (as the ``first-token`` method).
* MC, continuation-sum: each option scored as a continuation of ``Question: ...\\nAnswer:``;
  softmax over the options' summed log-probabilities (as the ``continuation-sum`` method).
* ECE: ``calibench.metrics.ece`` (10 equal-width, right-closed bins; docs/design.md).

It computes directly with the model (two batched passes) because a checkpoint hook must be cheap;
``calibench eval`` remains the full evaluation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibench.io import write_json

try:  # transformers is a hard dependency; the guard only keeps `import calibench.train` light.
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover
    TrainerCallback = object  # type: ignore[misc,assignment]


def fact_prompt(item: dict[str, Any]) -> str:
    """Template with the subject filled, cut before the object (the facts-task prompt)."""
    template = item["template"]
    return template[: template.index("[Y]")].replace("[X]", item["subject"]).rstrip()


def mc_context(item: dict[str, Any]) -> str:
    return f"Question: {item['question']}\nAnswer:"


def _summary(conf: np.ndarray, correct: np.ndarray, buckets: list[str]) -> dict[str, Any]:
    from calibench.metrics import ece

    out: dict[str, Any] = {
        "n": int(conf.size),
        "accuracy": float(correct.mean()),
        "confidence": float(conf.mean()),
        "ece": float(ece(conf, correct)),
    }
    b = np.asarray(buckets)
    out["accuracy_by_bucket"] = {k: float(correct[b == k].mean()) for k in sorted(set(buckets))}
    return out


@dataclass
class CalibrationProbe:
    """Callable ``probe(model, tokenizer, step) -> metrics`` that also appends to a curve file."""

    facts: list[dict[str, Any]]
    mc: list[dict[str, Any]]
    path: Path | None = None
    device: str = "cpu"
    batch_size: int = 64
    points: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_world(
        cls,
        world_dir: str | os.PathLike[str],
        path: str | os.PathLike[str] | None,
        *,
        n_items: int = 120,
        device: str = "cpu",
        seed: int = 0,
    ) -> CalibrationProbe:
        """A seeded subset of ``n_items`` facts and ``n_items`` MC items from a world dir."""
        from calibench.world.build import FILES, read_jsonl

        rng = np.random.default_rng(seed)
        facts = read_jsonl(Path(world_dir) / FILES["facts"])
        mc = read_jsonl(Path(world_dir) / FILES["mc"])
        pick = lambda rows: [rows[i] for i in sorted(rng.permutation(len(rows))[: min(n_items, len(rows))])]  # noqa: E731
        return cls(facts=pick(facts), mc=pick(mc), path=Path(path) if path else None, device=device)

    def __call__(self, model, tokenizer, step: int, **extra: Any) -> dict[str, Any]:
        import torch

        was_training = model.training
        model.eval()
        with torch.no_grad():
            metrics = {"facts": self.score_facts(model, tokenizer), "mc": self.score_mc(model, tokenizer)}
        if was_training:
            model.train()
        self.points.append({"step": int(step), **extra, **metrics})
        if self.path is not None:
            write_json(self.path, {"points": self.points})
        return metrics

    def _forward(self, model, tokenizer, sequences: list[list[int]]):
        """Log-softmax over the vocabulary for right-padded sequences, batch by batch."""
        import torch

        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        for start in range(0, len(sequences), self.batch_size):
            chunk = sequences[start : start + self.batch_size]
            ids, mask = right_padded(chunk, pad)
            with torch.no_grad():
                logits = model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            yield chunk, torch.log_softmax(logits.float(), dim=-1).cpu()

    def score_facts(self, model, tokenizer) -> dict[str, Any]:
        prompts = [fact_prompt(it) for it in self.facts]
        ctx = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        gold = []
        for p, c, it in zip(prompts, ctx, self.facts, strict=True):
            whole = tokenizer(p + " " + it["object"], add_special_tokens=False)["input_ids"]
            gold.append(whole[len(c)])
        conf, correct = [], []
        i = 0
        for chunk, logp in self._forward(model, tokenizer, ctx):
            for row, seq in enumerate(chunk):
                last = logp[row, len(seq) - 1]
                top = int(last.argmax())
                conf.append(float(last[top].exp()))
                correct.append(top == gold[i])
                i += 1
        return _summary(np.array(conf), np.array(correct, dtype=float), [it["bucket"] for it in self.facts])

    def score_mc(self, model, tokenizer) -> dict[str, Any]:
        seqs, spans, owners = [], [], []
        for k, it in enumerate(self.mc):
            c = tokenizer(mc_context(it), add_special_tokens=False)["input_ids"]
            for opt in it["options"]:
                whole = tokenizer(mc_context(it) + " " + opt, add_special_tokens=False)["input_ids"]
                seqs.append(whole)
                spans.append(len(c))
                owners.append(k)
        sums = np.zeros(len(seqs))
        i = 0
        for chunk, logp in self._forward(model, tokenizer, seqs):
            for row, seq in enumerate(chunk):
                targets = seq[spans[i]:]
                positions = range(spans[i] - 1, len(seq) - 1)
                sums[i] = sum(float(logp[row, p, t]) for p, t in zip(positions, targets, strict=True))
                i += 1
        conf, correct = [], []
        owners_arr = np.array(owners)
        for k, it in enumerate(self.mc):
            s = sums[owners_arr == k]
            probs = np.exp(s - s.max())
            probs /= probs.sum()
            conf.append(float(probs.max()))
            correct.append(int(probs.argmax()) == int(it["label"]))
        return _summary(np.array(conf), np.array(correct, dtype=float), [it["bucket"] for it in self.mc])


class CalibrationCallback(TrainerCallback):
    """transformers/TRL callback: run a ``CalibrationProbe`` at the start, after every epoch and at the end."""

    def __init__(self, probe: CalibrationProbe, *, at_start: bool = True) -> None:
        self.probe = probe
        self.at_start = at_start

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.at_start and model is not None and state.is_world_process_zero:
            self.probe(model, _tokenizer(processing_class), state.global_step, epoch=0)

    def on_epoch_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if model is not None and state.is_world_process_zero:
            self.probe(model, _tokenizer(processing_class), state.global_step, epoch=round(state.epoch or 0))

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        # Step-limited runs (RL) may stop mid-epoch: make sure the final model is on the curve.
        done = {p["step"] for p in self.probe.points}
        if model is not None and state.is_world_process_zero and state.global_step not in done:
            self.probe(model, _tokenizer(processing_class), state.global_step, epoch=state.epoch)


class EpochCheckpoint(TrainerCallback):
    """Save ``OUT/epochN/`` at the end of each epoch: a plain HF folder (LoRA merged into a copy of
    the weights) so ``load_model(pretrained=OUT/epochN)`` works; LoRA runs also keep the adapter in
    ``OUT/epochN/adapter/`` for ``peft=``."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out = Path(out_dir)
        self.saved: list[Path] = []

    def on_epoch_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if model is None or not state.is_world_process_zero:  # one writer under `accelerate launch`
            return
        folder = self.out / f"epoch{round(state.epoch or 0)}"
        save_model_folder(model, _tokenizer(processing_class), folder)
        self.saved.append(folder)


def save_model_folder(model, tokenizer, folder: Path, *, merge_into: bool = False) -> None:
    """Save a (possibly PEFT) model as a plain HF folder; PEFT adapters also go to ``folder/adapter``.

    The folder is built beside the target and renamed into place, so a crash never leaves half a
    checkpoint. With ``merge_into`` the files are moved one by one into an existing folder (the
    run's top level, which also holds epoch folders and logs) instead of replacing it.
    """
    import copy
    import shutil

    tmp = folder.with_name(f".{folder.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if hasattr(model, "peft_config"):
        model.save_pretrained(tmp / "adapter", safe_serialization=True)
        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(tmp, safe_serialization=True)
    else:
        model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if merge_into:
        folder.mkdir(parents=True, exist_ok=True)
        for item in tmp.iterdir():
            target = folder / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
        tmp.rmdir()
        return
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def _tokenizer(processing_class):
    """TRL passes the tokenizer as ``processing_class`` (a processor would wrap it)."""
    return getattr(processing_class, "tokenizer", processing_class)


def right_padded(sequences: list[list[int]], pad: int):
    """``(ids, mask)`` long tensors of right-padded token sequences (the training probes' batches)."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask
