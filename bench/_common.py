"""Shared pieces of the engine benchmarks: the models, the tasks, timing and memory helpers.

Everything here is deterministic: the ~10M-parameter GPT-NeoX is built from a fixed corpus and seed
(random weights; benchmarks compare numbers and speed, not accuracy), the tasks come from calibench's
built-in world facts, and the MMLU-format task is written in the original MMLU CSV layout
(``dev/<subject>_dev.csv`` with 5 solved examples per subject, ``test/<subject>_test.csv``).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
LETTERS = "ABCD"

# ~10M parameters: 2 x vocab x hidden (untied embeddings) + 12 x layers x hidden^2 (see model_info()).
TINY10M = {"vocab_size": 1024, "hidden": 256, "layers": 12, "heads": 4, "context": 1024, "seed": 0}
# world relation -> a real MMLU subject name, so the prompt gets lm-eval's MMLU description line
MMLU_SUBJECT_OF = {"capital": "high_school_geography", "currency": "global_facts", "language": "world_religions"}


def cache_dir() -> Path:
    return Path(os.environ.get("CALIBENCH_CACHE", Path.home() / ".cache" / "calibench")) / "bench"


def set_threads(n: int) -> int:
    """Fix torch's intra-op threads (both sides of every comparison run under the same setting)."""
    import torch

    torch.set_num_threads(int(n))
    return torch.get_num_threads()


# ------------------------------------------------------------------------------------------ models


def _tokenizer_corpus() -> list[str]:
    """World prose plus MMLU-style prompts, so " A".." D" and the option words are real BPE tokens."""
    from calibench.tasks import load_task
    from calibench.tasks.prompts import mc_choice_prompt, mc_continuation_context

    texts = [d.text for d in load_task("world-clm").items]
    for item in load_task("world-mc").items:
        texts.append(mc_choice_prompt(item) + f" {LETTERS[item.label]}")
        texts.append(mc_continuation_context(item) + " " + item.options[item.label])
    return texts


def build_tiny10m(out_dir: str | os.PathLike[str] | None = None, **overrides: Any) -> Path:
    """Build (once, cached) the ~10M GPT-NeoX folder; written to a temp folder, then renamed into place."""
    from calibench.models.tiny import build_tiny_model

    cfg = {**TINY10M, **overrides}
    key = "-".join(f"{k}{v}" for k, v in sorted(cfg.items()))
    out = Path(out_dir) if out_dir else cache_dir() / f"tiny-neox-{key}"
    if (out / "model.safetensors").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=out.parent))
    try:
        build_tiny_model(tmp, _tokenizer_corpus(), **cfg)
        if out.exists():  # another process won the race
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_bench_model(name: str, *, model_dir: str | None = None, device: str = "cpu",
                     dtype: str | None = None) -> tuple[Any, Any, str]:
    """(model, tokenizer, description) for ``tiny10m`` or ``smollm2`` (the built-in SmolLM2-135M-Instruct).

    ``device`` and ``dtype`` (e.g. ``bfloat16``; default float32) go to ``load_model`` unchanged.
    """
    from calibench.models.loading import load_model

    extra = f",dtype={dtype}" if dtype else ""
    if name == "tiny10m":
        path = build_tiny10m(model_dir)
        loaded = load_model(f"pretrained={path}{extra}", device=device)
        return loaded.model, loaded.tokenizer, "tiny GPT-NeoX (random init)"
    if name == "smollm2":
        loaded = load_model(f"pretrained=smollm2-135m-instruct{extra}", device=device)
        return loaded.model, loaded.tokenizer, "SmolLM2-135M-Instruct (GGUF Q4_1 dequantised to float32)"
    raise SystemExit(f"unknown --model {name!r}; choose tiny10m or smollm2")


def model_info(model: Any) -> dict[str, Any]:
    cfg = model.config
    return {"params": int(sum(p.numel() for p in model.parameters())), "type": cfg.model_type,
            "hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers, "vocab": cfg.vocab_size}


# ------------------------------------------------------------------------------------------- tasks


def mc_task(limit: int) -> Any:
    """The built-in world-mc task: 4 options of capitals, languages, currencies, regions (multi-token)."""
    from calibench.tasks import load_task

    return load_task("world-mc", limit=limit)


def write_mmlu_csv(root: str | os.PathLike[str], *, per_subject: int, seed: int = 0) -> Path:
    """World facts in the original MMLU layout: ``root/dev/<s>_dev.csv`` (5 rows), ``root/test/<s>_test.csv``.

    Rows are ``question,A,B,C,D,answer`` without a header, as in the MMLU release. Test items are taken
    round-robin over the subjects, so ``limit`` keeps every subject represented.
    """
    from calibench.tasks.world import world_mc

    root = Path(root)
    by_rel: dict[str, list[Any]] = {r: [] for r in MMLU_SUBJECT_OF}
    for item in world_mc(seed=seed):
        if item.subject in by_rel:
            by_rel[item.subject].append(item)
    for rel, subject in MMLU_SUBJECT_OF.items():
        items = by_rel[rel]
        for split, rows in (("dev", items[:5]), ("test", items[5 : 5 + per_subject])):
            (root / split).mkdir(parents=True, exist_ok=True)
            with open(root / split / f"{subject}_{split}.csv", "w", encoding="utf-8", newline="") as fh:
                w = csv.writer(fh)
                for it in rows:
                    w.writerow([it.question, *it.options, LETTERS[it.label]])
    return root


def mmlu_task(limit: int, root: str | os.PathLike[str]) -> Any:
    """The MMLU-format task (loaded by calibench's MMLU CSV reader); 5-shot prompts come from dev/."""
    from calibench.tasks import load_task
    from calibench.tasks.base import make_task

    per_subject = -(-limit // len(MMLU_SUBJECT_OF))
    task = load_task(str(write_mmlu_csv(root, per_subject=per_subject)))
    # interleave subjects so a small limit still covers all of them
    groups: dict[str, list[Any]] = {}
    for it in task.items:
        groups.setdefault(it.subject, []).append(it)
    mixed = [g[i] for i in range(per_subject) for g in groups.values() if i < len(g)][:limit]
    return make_task("mmlu-world", mixed, fewshot=task.fewshot, options={"limit": limit})


def prompts_for(task: Any, num_fewshot: int) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The strings both sides score: choice prompts ("...Answer:") and continuation (context, options)."""
    from calibench.tasks.prompts import (
        mc_choice_prompt,
        mc_continuation_context,
        mc_continuation_options,
        select_fewshot,
    )

    choice, cont = [], []
    for item in task.items:
        shots = select_fewshot(task, item, num_fewshot) if num_fewshot else []
        choice.append(mc_choice_prompt(item, fewshot=shots))
        cont.append((mc_continuation_context(item, fewshot=shots), mc_continuation_options(item)))
    return choice, cont


# ------------------------------------------------------------------------------------------ timing


def best_of(fn: Callable[[], Any], repeats: int, *, before: Callable[[], None] | None = None) -> tuple[float, Any]:
    """(fastest wall time over ``repeats`` calls, last value); ``before`` runs untimed before each call."""
    times, value = [], None
    for _ in range(max(1, repeats)):
        if before is not None:
            before()
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_json_subprocess(args: list[str], *, timeout: float | None = None) -> dict[str, Any]:
    """Run ``python args...`` in a fresh process (clean peak RSS) and parse the last stdout line as JSON."""
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def environment(threads: int) -> dict[str, Any]:
    """What the numbers depend on: versions, threads, CPU count and the load average while measuring."""
    import torch
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "threads": threads, "cpus": os.cpu_count(), "loadavg_start": [round(x, 2) for x in os.getloadavg()],
           "machine": platform.machine()}
    try:
        import lm_eval

        out["lm_eval"] = getattr(lm_eval, "__version__", "?")
    except ImportError:
        pass
    return out


def finish(result: dict[str, Any], out: str | os.PathLike[str] | None) -> None:
    """Add the closing load average, print the JSON and write it atomically."""
    from calibench.io import write_json

    result.setdefault("environment", {})["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
    if out:
        write_json(out, result)


class TreeMemory:
    """Peak memory of a process and all its descendants (the command's forked chunk workers too),
    sampled every ``interval`` seconds as the sum of their PSS (shared pages split between the
    processes that share them, so copy-on-write inputs count once). GNU time's peak RSS is the largest
    single process only."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._root: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def watch(self, pid: int) -> None:
        self._root = pid
        self._thread.start()

    def _tree(self) -> list[int]:
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        tree, frontier = [], [self._root]
        while frontier:
            pid = frontier.pop()
            tree.append(pid)
            frontier += [child for child, parent in parents.items() if parent == pid]
        return tree

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            total_kb = 0
            for pid in self._tree():
                try:
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                        if line.startswith("Pss:"):
                            total_kb += int(line.split()[1])
                except OSError:
                    continue
            self.peak_mb = max(self.peak_mb, round(total_kb / 1024, 1))

    def __enter__(self) -> TreeMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def time_cli(args: list[str], env: dict[str, str], timeout: float) -> tuple[dict[str, Any], str]:
    """Run ``calibench ARGS`` in a child process under GNU time and ``TreeMemory``: (wall seconds, CPU
    seconds, the largest process's peak RSS, the tree's peak PSS) and its stdout, or ({"error": ...}, "")."""
    cmd = ["/usr/bin/time", "-f", "BENCH %e %U %S %M", sys.executable, "-c",
           "from calibench.cli import main; raise SystemExit(main())", *args]
    with TreeMemory() as memory:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        memory.watch(proc.pid)
        stdout, stderr = proc.communicate(timeout=timeout)
    stats = [line.split() for line in stderr.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not stats:
        return {"error": (stderr or stdout)[-2000:]}, ""
    wall, user, system, rss_kb = (float(x) for x in stats[-1][1:])
    return {"seconds": wall, "cpu_seconds": round(user + system, 2), "peak_rss_mb": round(rss_kb / 1024, 1),
            "peak_tree_pss_mb": memory.peak_mb}, stdout
