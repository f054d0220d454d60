"""CLI: ``calibench train world|pretrain|sft|reward|rl|dpo|diversity`` (the lifecycle lab).

Heavy libraries load inside each command so ``calibench --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from calibench.errors import CalibenchError

train_app = typer.Typer(
    help="Lifecycle lab: a synthetic world, pretraining with checkpoints, SFT, reward model, RL, DPO.",
    no_args_is_help=True,
)

DEVICE = typer.Option("cpu", "--device", help="cpu or cuda.")
SEED = typer.Option(0, "--seed", help="Seed for data order, initialisation and sampling.")
THREADS = typer.Option(None, "--threads", min=1,
                       help="torch intra-op threads (default: 1 for lab sizes or a busy CPU, else torch's).")
QUIET = typer.Option(False, "--quiet", help="No progress bars, library logs or warnings.")
WORLD = typer.Option(None, "--world", help="World dir (for world data and the calibration curve).")
EVAL_ITEMS = typer.Option(100, "--eval-items", min=0, help="Facts and MC items scored at every checkpoint.")
ALLOW_PICKLE = typer.Option(False, "--allow-pickle",
                            help="Allow non-safetensors (pickle) weights; pickles can run code when loaded.")


def _check_model(path: Path, allow_pickle: bool, *, kind: str = "causal") -> None:
    """The weights policy (and, for a reward model, its score head) before any data is read or written."""
    from calibench.models.loading import check_folder_policy

    if not (Path(path) / "config.json").is_file():
        raise CalibenchError(f"{path}: not a model folder (no config.json)")
    check_folder_policy(path, allow_pickle=allow_pickle, trust_remote_code=False)
    if kind == "scorer":
        from calibench.train.sft import require_score_head

        require_score_head(path)


def _positive_lr(value: float | None) -> float | None:
    """``--lr`` must be a finite number > 0 (a negative rate trains away from the data, silently)."""
    import math

    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a number > 0, got {value}", param_hint="'--lr'")
    return value


def _quiet(quiet: bool) -> bool:
    """Apply ``--quiet`` (library bars, logs and warnings off); returns whether progress is shown."""
    if quiet:
        from calibench.quiet import quiet_libraries

        quiet_libraries(warnings_too=True)
    return not quiet


def _device(device: str) -> str:
    if device not in ("cpu", "cuda"):
        raise CalibenchError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CalibenchError("--device cuda requested but no CUDA device is available")
    return device


def _table(title: str, rows: list[tuple[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from calibench.train.pretrain import is_main_process

    if not is_main_process():  # one summary under `accelerate launch`
        return
    table = Table(title=title)
    table.add_column("")
    table.add_column("value", justify="right")
    for key, value in rows:
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    Console().print(table)


def _curve_rows(out: Path) -> list[tuple[str, Any]]:
    import json

    path = out / "calibration_curve.json"
    if not path.is_file():
        return []
    rows = []
    points = json.loads(path.read_text())["points"]
    by_epoch = len({p.get("epoch") for p in points}) == len(points)  # RL's points share epoch 0: label by step
    for p in points:
        label = f"epoch {p['epoch']}" if by_epoch and "epoch" in p else f"step {p['step']}"
        rows.append((f"{label}: facts acc / ECE", f"{p['facts']['accuracy']:.3f} / {p['facts']['ece']:.3f}"))
        rows.append((f"{label}: MC acc / ECE", f"{p['mc']['accuracy']:.3f} / {p['mc']['ece']:.3f}"))
    return rows


@train_app.command("world")
def world_cmd(
    out: Path = typer.Option(..., "--out", help="World dir to write."),
    seed: int = SEED,
    people: int = typer.Option(120, "--people", help="Number of fictional people."),
    instructions: int = typer.Option(400, "--instructions", help="Examples per instruction flavour."),
    preferences: int = typer.Option(300, "--preferences", help="Preference pairs."),
) -> None:
    """Generate a seeded synthetic world and its corpus, tasks, instruction and preference data."""
    import json

    from calibench.world import WorldConfig, build_world

    paths = build_world(out, WorldConfig(seed=seed, people=people), n_instructions=instructions,
                        n_preferences=preferences)
    manifest = json.loads(paths.manifest.read_text())
    rows: list[tuple[str, Any]] = [("people " + k, v) for k, v in manifest["people_per_bucket"].items()]
    rows += [(name, info["lines"]) for name, info in manifest["files"].items() if name.endswith(".jsonl")]
    rows.append(("corpus characters", manifest["corpus_characters"]))
    _table(f"world written to {out}", rows)


@train_app.command("pretrain")
def pretrain_cmd(
    world: Path = typer.Option(..., "--world", help="World dir (uses its corpus.txt)."),
    out: Path = typer.Option(..., "--out", help="Output dir: OUT/<size>/stepN/ and OUT/<size>/."),
    sizes: str = typer.Option("lab-70k,lab-300k,lab-1m", "--sizes", help="Comma-separated size names."),
    steps: int = typer.Option(300, "--steps", min=1, help="Optimizer steps per size."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    lr: float = typer.Option(3e-3, "--lr", callback=_positive_lr),
    vocab_size: int = typer.Option(512, "--vocab-size", help="BPE vocabulary size."),
    first_checkpoint: int = typer.Option(16, "--first-checkpoint", help="Checkpoints at 0, F, 2F, 4F, ..., steps."),
    calibration: bool = typer.Option(True, "--calibration/--no-calibration", help="Score every checkpoint."),
    eval_items: int = EVAL_ITEMS,
    device: str = DEVICE,
    seed: int = SEED,
    threads: int | None = THREADS,
    quiet: bool = QUIET,
) -> None:
    """Train the BPE tokenizer and a GPT-NeoX family on the world corpus, with log-spaced checkpoints."""
    from calibench.train.config import get_size
    from calibench.train.pretrain import PretrainConfig, pretrain_family

    names = [s.strip() for s in sizes.split(",") if s.strip()]
    for name in names:
        get_size(name)
    cfg = PretrainConfig(steps=steps, batch_size=batch_size, lr=lr, first_checkpoint=first_checkpoint, seed=seed,
                         device=_device(device), threads=threads)
    results = pretrain_family(world, out, names, cfg, vocab_size=vocab_size, calibration=calibration,
                              eval_items=eval_items, progress=_quiet(quiet))
    rows: list[tuple[str, Any]] = []
    for name, r in results.items():
        rows += [(f"{name} parameters", r["parameters"]), (f"{name} final loss", r["final_loss"]),
                 (f"{name} seconds", r["seconds"])]
        rows += [(f"{name} {k}", v) for k, v in _curve_rows(out / name)[-2:]]
    _table(f"pretrained into {out}", rows)


@train_app.command("sft")
def sft_cmd(
    base: Path = typer.Option(..., "--base", help="Model folder to fine-tune (e.g. OUT/lab-1m)."),
    out: Path = typer.Option(..., "--out", help="Output dir: OUT/epochN/ and OUT/."),
    data: str = typer.Option("diverse", "--data", help="diverse, narrow, or a file (Alpaca JSON, oasst1, JSONL)."),
    world: Path = WORLD,
    method: str = typer.Option("full", "--method", help="full or lora."),
    epochs: int = typer.Option(3, "--epochs", min=1),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    lr: float = typer.Option(None, "--lr", callback=_positive_lr, help="Default 5e-4 (full) or 5e-3 (lora)."),
    allow_pickle: bool = ALLOW_PICKLE,
    lora_r: int = typer.Option(8, "--lora-r"),
    eval_items: int = EVAL_ITEMS,
    device: str = DEVICE,
    seed: int = SEED,
    threads: int | None = THREADS,
    quiet: bool = QUIET,
) -> None:
    """Instruction-tune with TRL SFTTrainer (full or LoRA), saving a checkpoint per epoch."""
    from calibench.train.formats import load_instruction_data
    from calibench.train.sft import SFTSettings, run_sft

    _check_model(base, allow_pickle)
    rows = load_instruction_data(data, world)
    settings = SFTSettings(method=method, epochs=epochs, batch_size=batch_size, lr=lr, lora_r=lora_r, seed=seed,
                           device=_device(device), threads=threads, progress=_quiet(quiet))
    r = run_sft(base, rows, out, settings, world_dir=world, eval_items=eval_items, allow_pickle=allow_pickle)
    _table(f"SFT ({method}) into {out}", [("examples", r["examples"]), ("trainable parameters",
           r["trainable_parameters"]), ("seconds", r["seconds"]), *_curve_rows(out)])


def _pref_settings(**kw: Any):
    from calibench.train.preference import PrefSettings

    kw["device"] = _device(kw["device"])
    return PrefSettings(**kw)


@train_app.command("reward")
def reward_cmd(
    base: Path = typer.Option(..., "--base", help="Model folder to start the reward model from."),
    out: Path = typer.Option(..., "--out"),
    data: str = typer.Option("world", "--data", help="world, or a file ({prompt, chosen, rejected} or HH-RLHF)."),
    world: Path = WORLD,
    epochs: int = typer.Option(2, "--epochs", min=1),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr", callback=_positive_lr),
    allow_pickle: bool = ALLOW_PICKLE,
    device: str = DEVICE,
    seed: int = SEED,
    threads: int | None = THREADS,
    quiet: bool = QUIET,
) -> None:
    """Train a reward model (TRL RewardTrainer, GPT-NeoX sequence classifier)."""
    from calibench.train.formats import load_preference_data
    from calibench.train.preference import run_reward

    _check_model(base, allow_pickle)
    rows = load_preference_data(data, world)
    s = _pref_settings(epochs=epochs, batch_size=batch_size, lr=lr, device=device, seed=seed, threads=threads,
                       progress=_quiet(quiet))
    r = run_reward(base, rows, out, s, allow_pickle=allow_pickle)
    held, train = r["signal"]["held_out"], r["signal"]["train"]
    _table(f"reward model in {out}", [("pairs (training / held-out)", f"{r['examples']} / {r['held_out']}"),
                                      ("pairwise accuracy, held-out", f"{held['accuracy']:.3f} "
                                       f"[{held['low']:.3f}, {held['high']:.3f}]"),
                                      ("pairwise accuracy, training", train["accuracy"]),
                                      ("seconds", r["seconds"])])


@train_app.command("rl")
def rl_cmd(
    policy: Path = typer.Option(..., "--policy", help="Model folder to improve (e.g. an SFT output)."),
    reward_model: Path = typer.Option(..., "--reward-model", help="Output of `calibench train reward`."),
    out: Path = typer.Option(..., "--out"),
    data: str = typer.Option("world", "--data", help="Prompts: world, or a preference file."),
    world: Path = WORLD,
    steps: int = typer.Option(48, "--steps", min=1),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    num_generations: int = typer.Option(4, "--num-generations", help="Completions per prompt (RLOO baseline)."),
    max_completion_length: int = typer.Option(16, "--max-completion-length"),
    lr: float = typer.Option(1e-4, "--lr", callback=_positive_lr),
    beta: float = typer.Option(0.1, "--beta", help="KL penalty to the initial policy."),
    eval_items: int = EVAL_ITEMS,
    allow_pickle: bool = ALLOW_PICKLE,
    device: str = DEVICE,
    seed: int = SEED,
    threads: int | None = THREADS,
    quiet: bool = QUIET,
) -> None:
    """Online RL against the reward model (TRL RLOOTrainer)."""
    from calibench.train.formats import load_preference_data
    from calibench.train.preference import run_rl

    _check_model(policy, allow_pickle)
    _check_model(reward_model, allow_pickle, kind="scorer")
    rows = load_preference_data(data, world)
    s = _pref_settings(steps=steps, batch_size=batch_size, num_generations=num_generations,
                       max_completion_length=max_completion_length, lr=lr, beta=beta, device=device, seed=seed,
                       threads=threads, progress=_quiet(quiet))
    r = run_rl(policy, reward_model, rows, out, s, world_dir=world, eval_items=eval_items, allow_pickle=allow_pickle)
    c = r["signal"]
    _table(f"RL policy in {out}", [("mean reward, first step", r["mean_reward_first"]),
                                  ("mean reward, last step", r["mean_reward_last"]),
                                  ("held-out reward gain", f"{c['reward_gain']:+.3f} "
                                   f"[{c['reward_gain_low']:+.3f}, {c['reward_gain_high']:+.3f}]"),
                                  ("KL to start (nats per completion)", c["kl"]),
                                  ("manipulation check", "passed" if c["passed"] else c["not_testable"]),
                                  ("seconds", r["seconds"]), *_curve_rows(out)])


@train_app.command("dpo")
def dpo_cmd(
    base: Path = typer.Option(..., "--base", help="Model folder (also the frozen reference)."),
    out: Path = typer.Option(..., "--out"),
    data: str = typer.Option("world", "--data", help="world, or a file ({prompt, chosen, rejected} or HH-RLHF)."),
    world: Path = WORLD,
    epochs: int = typer.Option(1, "--epochs", min=1),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    lr: float = typer.Option(5e-4, "--lr", callback=_positive_lr),
    beta: float = typer.Option(0.1, "--beta"),
    eval_items: int = EVAL_ITEMS,
    allow_pickle: bool = ALLOW_PICKLE,
    device: str = DEVICE,
    seed: int = SEED,
    threads: int | None = THREADS,
    quiet: bool = QUIET,
) -> None:
    """Direct preference optimisation (TRL DPOTrainer, reference model passed explicitly)."""
    from calibench.train.formats import load_preference_data
    from calibench.train.preference import run_dpo

    _check_model(base, allow_pickle)
    rows = load_preference_data(data, world)
    s = _pref_settings(epochs=epochs, batch_size=batch_size, lr=lr, beta=beta, device=device, seed=seed,
                       threads=threads, progress=_quiet(quiet))
    r = run_dpo(base, rows, out, s, world_dir=world, eval_items=eval_items, allow_pickle=allow_pickle)
    held = r["signal"]["held_out"]
    _table(f"DPO model in {out}", [("pairs (training / held-out)", f"{r['examples']} / {r['held_out']}"),
                                   ("held-out implicit-reward accuracy", f"{held['accuracy']:.3f} "
                                    f"[{held['accuracy_low']:.3f}, {held['accuracy_high']:.3f}]"),
                                   ("held-out implicit-reward margin", f"{held['margin']:+.3f} "
                                    f"[{held['margin_low']:+.3f}, {held['margin_high']:+.3f}]"),
                                   ("seconds", r["seconds"]), *_curve_rows(out)])


@train_app.command("diversity")
def diversity_cmd(
    data: list[str] = typer.Option(None, "--data", help="Instruction sets: diverse, narrow or files (repeatable)."),
    world: Path = WORLD,
    plot: Path = typer.Option(None, "--plot", help="Write a t-SNE plot (PNG or SVG)."),
    embedding: str = typer.Option("auto", "--embedding", help="auto, minilm or tfidf."),
    max_items: int = typer.Option(400, "--max-items", help="Texts per set (sampled)."),
    seed: int = SEED,
) -> None:
    """Diversity of instruction sets (distinct-n, embedding distance) and an optional t-SNE plot."""
    from calibench.train.formats import load_instruction_data
    from calibench.world.diversity import compare_diversity, example_text, tsne_plot

    names = list(data) if data else ["diverse", "narrow"]
    sets = {n: [example_text(r) for r in load_instruction_data(n, world)] for n in names}
    if plot is not None:
        stats = tsne_plot(sets, plot, method=embedding, max_items=max_items, seed=seed)
    else:
        stats, _, _ = compare_diversity(sets, method=embedding, max_items=max_items, seed=seed)
    rows: list[tuple[str, Any]] = []
    for n, d in stats.items():
        rows += [(f"{n} distinct-1", d.distinct_1), (f"{n} distinct-2", d.distinct_2),
                 (f"{n} embedding distance ({d.embedding})", d.embedding_distance)]
    _table("instruction diversity" + (f" (plot: {plot})" if plot else ""), rows)


def register(app: typer.Typer) -> None:
    """Add the ``train`` sub-app to ``app``."""
    app.add_typer(train_app, name="train")
