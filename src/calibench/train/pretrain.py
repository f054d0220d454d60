"""Pretraining: a byte-level BPE tokenizer and a family of GPT-NeoX models on the world corpus.

The loop is deliberately nanoGPT-style (one function a reader can follow): the corpus is tokenised
once into a single stream (documents separated by ``<|endoftext|>``), each step samples random
windows, AdamW with linear warm-up and cosine decay. Checkpoints are written at log-spaced steps
as ordinary HF folders named like Pythia's revisions::

    OUT/<size>/step0/ step16/ step32/ ... step<final>/   (safetensors + tokenizer)
    OUT/<size>/                                           the final model again, top level
    OUT/<size>/train_log.json                            loss per step, params, seconds
    OUT/<size>/calibration_curve.json                    accuracy and ECE per checkpoint

so ``load_model("pretrained=OUT/<size>,revision=step16")`` finds every checkpoint.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError
from calibench.io import write_json
from calibench.threads import resolve_threads, torch_threads
from calibench.train.config import (
    ModelSize,
    checkpoint_steps,
    count_parameters,
    get_size,
    quiet_transformers,
)

# A hook called at every checkpoint with (model, tokenizer, step); returns metrics to log.
CheckpointHook = Callable[[Any, Any, int], dict[str, Any]]


@dataclass(frozen=True)
class PretrainConfig:
    """Optimisation settings; the defaults fit one lab model in well under a minute on 2 CPU cores."""

    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 20
    weight_decay: float = 0.01
    first_checkpoint: int = 16
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # torch intra-op threads; None: calibench.threads.resolve_threads picks


def load_corpus(path: str | os.PathLike[str]) -> list[str]:
    """One document per line (the world dir's ``corpus.txt``, ``\\n`` = a newline inside a document);
    empty lines are skipped."""
    from calibench.world.corpus import corpus_doc

    p = Path(path)
    if not p.is_file():
        raise CalibenchError(f"{p}: corpus file not found")
    docs = [corpus_doc(line.strip()) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not docs:
        raise CalibenchError(f"{p}: corpus is empty")
    return docs


def build_tokenizer(docs: Sequence[str], out_dir: str | os.PathLike[str], *, vocab_size: int = 512,
                    whole: Sequence[str] = ()):
    """Train the world's byte-level BPE tokenizer once and save it (all sizes share it, as Pythia's do).

    ``whole``: strings kept as one token each (``calibench.world.drills.whole_tokens``: entity values,
    option letters, True/False; see ``calibench.train.tokenizer``). Training is deterministic, so under
    ``accelerate launch`` every process builds the same one; only the main process writes it.
    """
    if whole:
        from calibench.train.tokenizer import train_lab_tokenizer

        tokenizer = train_lab_tokenizer(docs, vocab_size=vocab_size, whole=whole)
    else:
        from calibench.models.tiny import train_tokenizer

        tokenizer = train_tokenizer(docs, vocab_size=vocab_size)
    tokenizer.pad_token = "<|padding|>"
    tokenizer.model_max_length = 2048
    if is_main_process():
        tokenizer.save_pretrained(out_dir)
    return tokenizer


def is_main_process() -> bool:
    """True outside distributed runs and on rank 0 inside them (accelerate / torchrun set RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def token_stream(docs: Sequence[str], tokenizer) -> Any:
    """All documents as one 1-D LongTensor, each followed by the end-of-text token."""
    import torch

    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for enc in tokenizer(list(docs), add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr`` at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(model, tokenizer, folder: Path) -> None:
    """Write one HF folder atomically: build it beside the target, then rename."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def pretrain_one(
    size: ModelSize | str,
    docs: Sequence[str],
    tokenizer,
    out_dir: str | os.PathLike[str],
    cfg: PretrainConfig = PretrainConfig(),
    *,
    hook: CheckpointHook | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one size from scratch and write its checkpoints; returns the training summary."""
    shape = get_size(size) if isinstance(size, str) else size
    with torch_threads(resolve_threads(cfg.threads, count_parameters(shape, len(tokenizer)))):
        return _pretrain_one(size, docs, tokenizer, out_dir, cfg, hook=hook, progress=progress)


def _pretrain_one(size, docs, tokenizer, out_dir, cfg, *, hook, progress) -> dict[str, Any]:
    import torch
    from accelerate import Accelerator
    from transformers import GPTNeoXForCausalLM

    quiet_transformers()
    # Accelerate makes the same loop run data-parallel under `accelerate launch` (one process per
    # GPU, each drawing its own windows); in a plain run it is a single process on cfg.device.
    acc = Accelerator(cpu=cfg.device == "cpu")
    size = get_size(size) if isinstance(size, str) else size
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = GPTNeoXForCausalLM(size.config(len(tokenizer)))
    n_params = sum(p.numel() for p in model.parameters())
    data = token_stream(docs, tokenizer)
    window = size.context + 1
    if len(data) <= window:
        raise CalibenchError(f"corpus has {len(data)} tokens, fewer than one {window}-token window")
    gen = torch.Generator().manual_seed(cfg.seed + acc.process_index)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    model, opt = acc.prepare(model, opt)
    saves = set(checkpoint_steps(cfg.steps, cfg.first_checkpoint))
    log: list[dict[str, float]] = []
    started = time.perf_counter()

    def checkpoint(step: int) -> None:
        acc.wait_for_everyone()
        if acc.is_main_process:
            plain = acc.unwrap_model(model)
            plain.eval()
            save_checkpoint(plain, tokenizer, out / f"step{step}")
            if hook is not None:
                hook(plain, tokenizer, step)
        model.train()

    bar = _progress(progress and acc.is_main_process, f"pretrain {size.name}", cfg.steps)
    model.train()
    if 0 in saves:
        checkpoint(0)
    for step in range(1, cfg.steps + 1):
        starts = torch.randint(0, len(data) - window, (cfg.batch_size,), generator=gen)
        batch = torch.stack([data[s : s + window] for s in starts.tolist()]).to(acc.device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step - 1, cfg)
        loss = _lm_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        acc.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        log.append({"step": step, "loss": float(loss.detach())})
        bar.advance(loss=float(loss.detach()))
        if step in saves:
            checkpoint(step)
    bar.close()
    summary = {
        "size": asdict(size),
        "parameters": n_params,
        "parameters_formula": count_parameters(size, len(tokenizer)),
        "tokens": int(len(data)),
        "checkpoints": sorted(saves),
        "config": asdict(cfg),
        "processes": acc.num_processes,
        "seconds": round(time.perf_counter() - started, 2),
        "final_loss": log[-1]["loss"],
        "loss": log,
    }
    if acc.is_main_process:
        # The final model also at the top level, so `pretrained=OUT/<size>` alone means "final".
        plain = acc.unwrap_model(model)
        plain.eval()
        plain.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        write_json(out / "train_log.json", summary)
    acc.wait_for_everyone()  # no process moves on before the final model is on disk
    return summary


def _lm_loss(model, batch):
    """Next-token cross-entropy on a batch of windows (inputs = all but last, targets = all but first)."""
    import torch.nn.functional as F

    logits = model(input_ids=batch[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))


class _progress:
    """A rich progress bar that can be switched off (tests, library use)."""

    def __init__(self, enabled: bool, label: str, total: int) -> None:
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                TimeElapsedColumn(), transient=False)
            self.bar.start()
            self.task = self.bar.add_task(label, total=total, info="")

    def advance(self, **info: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, info=" ".join(f"{k}={v:.3f}" for k, v in info.items()))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def pretrain_family(
    world_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    sizes: Sequence[str],
    cfg: PretrainConfig = PretrainConfig(),
    *,
    vocab_size: int = 512,
    calibration: bool = True,
    eval_items: int = 120,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Tokenizer + every size on ``world_dir/corpus.txt``; with ``calibration`` each checkpoint is scored."""
    from calibench.world.build import FILES

    world = Path(world_dir)
    docs = load_corpus(world / FILES["corpus"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    whole: list[str] = []
    if (world / FILES["world"]).is_file():
        from calibench.world.build import load_world
        from calibench.world.drills import whole_tokens

        whole = whole_tokens(load_world(world))
    tokenizer = build_tokenizer(docs, out / "tokenizer", vocab_size=vocab_size, whole=whole)
    results = {}
    for name in sizes:
        hook = None
        if calibration:
            from calibench.train.callbacks import CalibrationProbe

            hook = CalibrationProbe.from_world(world, out / name / "calibration_curve.json",
                                               n_items=eval_items, device=cfg.device, seed=cfg.seed)
        results[name] = pretrain_one(name, docs, tokenizer, out / name, cfg, hook=hook, progress=progress)
    if is_main_process():
        write_json(out / "family.json", {n: {k: v for k, v in r.items() if k != "loss"} for n, r in results.items()})
    return results
