"""Shared fixtures: a tiny GPT-NeoX model and a real lm-evaluation-harness run on it.

Not auto-loaded (it is not ``conftest.py``); a test module opts in with
``from conftest_lm_eval import tiny_model_dir, lm_eval_run  # noqa: F401``.
``lm_eval_run`` runs the real ``lm_eval`` CLI once per session on a local multiple-choice task and
returns the paths of its ``--log_samples`` output, so other tests (e.g. ``from-lm-eval``) can reuse it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

TEXTS = [
    "The capital of France is Paris. The capital of Spain is Madrid. The capital of Italy is Rome.",
    "Question: Which river flows through Cairo?\nAnswer: the Nile, the longest river in Africa.",
    "Water boils at one hundred degrees. Ice melts at zero degrees. Steam rises from the kettle.",
    "A cat sat on the mat while the dog slept near the door, and the bird sang in the garden.",
    "Numbers: 1 2 3 4 5 6 7 8 9 10; letters: A B C D E F G; symbols: , . ; : ! ? ( ) [ ]",
]

MC_ITEMS = [
    ("What is the capital of France?", ["Paris", "Madrid", "Rome", "the Nile river"], 0),
    ("Which animal sat on the mat?", ["a dog", "a cat", "a bird in the garden", "Cairo"], 1),
    ("At what temperature does water boil?", ["zero degrees", "one hundred degrees", "ten", "steam"], 1),
    ("Which river flows through Cairo?", ["the Nile", "the Seine", "the longest river", "Rome"], 0),
    ("What comes after 4?", ["5", "3 2 1", "seven", "the letter A"], 0),
    ("Where did the dog sleep?", ["near the door", "on the mat", "in the kettle", "in Africa"], 0),
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny GPT-NeoX (context 64) with a byte-level BPE tokenizer, no pad token."""
    from calibench.models.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("tiny-model")
    return build_tiny_model(out, TEXTS * 4, vocab_size=400, hidden=32, layers=2, heads=4, context=64, seed=0)


@dataclass
class LmEvalRun:
    """Where a real lm-eval run left its outputs."""

    samples: Path  # the --log_samples JSONL of the task
    results: Path  # the aggregated results JSON
    task: str
    data: Path  # the task's JSONL data
    model_dir: Path


def write_mc_task(task_dir: Path, name: str = "calibench_tiny_mc") -> Path:
    """A local lm-eval multiple-choice task (json dataset, options scored as ' ' + option)."""
    task_dir.mkdir(parents=True, exist_ok=True)
    data = task_dir / "data.jsonl"
    with open(data, "w", encoding="utf-8") as fh:
        for i, (q, options, label) in enumerate(MC_ITEMS):
            fh.write(json.dumps({"id": f"q{i}", "question": q, "choices": options, "label": label}) + "\n")
    (task_dir / f"{name}.yaml").write_text(
        "\n".join(
            [
                f"task: {name}",
                "dataset_path: json",
                "dataset_kwargs:",
                "  data_files:",
                f"    test: {data}",
                "test_split: test",
                "output_type: multiple_choice",
                'doc_to_text: "Question: {{question}}\\nAnswer:"',
                "doc_to_choice: '{{choices}}'",
                "doc_to_target: label",
                'target_delimiter: " "',
                "metric_list:",
                "  - metric: acc",
                "    aggregation: mean",
                "    higher_is_better: true",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return data


@pytest.fixture(scope="session")
def lm_eval_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LmEvalRun:
    """Run the real ``lm_eval`` CLI (HF backend, batch size 4) on the tiny model and a local MC task."""
    root = tmp_path_factory.mktemp("lm-eval")
    task = "calibench_tiny_mc"
    data = write_mc_task(root / "tasks", task)
    out = root / "out"
    exe = Path(sys.executable).parent / "lm_eval"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "lm_eval"]
    cmd += [
        "--model", "hf",
        "--model_args", f"pretrained={tiny_model_dir},dtype=float32",
        "--tasks", task,
        "--include_path", str(root / "tasks"),
        "--batch_size", "4",
        "--device", "cpu",
        "--log_samples",
        "--output_path", str(out),
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_CACHE=str(root / "hf-datasets"), TOKENIZERS_PARALLELISM="false")  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"lm_eval failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    samples = sorted(out.rglob(f"samples_{task}_*.jsonl"))
    results = sorted(out.rglob("results_*.json"))
    assert samples and results, f"lm_eval wrote no samples/results under {out}: {list(out.rglob('*'))}"
    return LmEvalRun(samples=samples[-1], results=results[-1], task=task, data=data, model_dir=tiny_model_dir)
