"""Write lm-eval ``--log_samples`` files with lm-eval's own writer (EvaluationTracker), for tests.

The sample dicts are built exactly as ``lm_eval.evaluator.evaluate`` builds them (doc_id, doc,
target, arguments, resps, filtered_resps, filter, metrics, hashes, per-sample metric values), and
the files are written by lm-eval's ``save_results_aggregated`` / ``save_results_samples``, so the
on-disk format (stringified responses, gen_args dicts, results_<date>.json) is lm-eval's real one.
Also run as a script to regenerate tests/fixtures/lm_eval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def lm_eval_sample(doc_id: int, doc: dict[str, Any], target: Any, context: str, options: list[str],
                   lls: list[float], greedy: list[bool], *, filter_key: str = "none") -> dict[str, Any]:
    """One multiple-choice sample as evaluator.evaluate logs it (acc computed as lm-eval does)."""
    from lm_eval.utils import hash_string

    args = [(context, " " + o) for o in options]
    gold = target if isinstance(target, int) else options.index(target)
    acc = 1.0 if int(np.argmax(lls)) == gold else 0.0
    lens = np.array([float(len(o)) for o in options])
    acc_norm = 1.0 if int(np.argmax(np.array(lls) / lens)) == gold else 0.0
    return {
        "doc_id": doc_id,
        "doc": doc,
        "target": target,
        "arguments": args,
        "resps": [[(ll, g)] for ll, g in zip(lls, greedy, strict=True)],
        "filtered_resps": [(ll, g) for ll, g in zip(lls, greedy, strict=True)],
        "filter": filter_key,
        "metrics": ["acc", "acc_norm"],
        "doc_hash": hash_string(str(doc)),
        "prompt_hash": hash_string(context),
        "target_hash": hash_string(str(target)),
        "acc": acc,
        "acc_norm": acc_norm,
    }


def write_with_lm_eval(out: Path, model_name: str, model_args: str, revision: str,
                       tasks: dict[str, list[dict[str, Any]]]) -> list[Path]:
    """Write results_<date>.json and samples_<task>_<date>.jsonl under out/<sanitized model>/."""
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.utils import sanitize_model_name

    tracker = EvaluationTracker(output_path=str(out))
    tracker.general_config_tracker.model_source = "hf"
    tracker.general_config_tracker.model_name = model_name
    tracker.general_config_tracker.model_name_sanitized = sanitize_model_name(model_name)
    results = {"results": {}, "config": {"model": "hf", "model_args": model_args, "model_revision": revision}}
    tracker.save_results_aggregated(results=results, samples=tasks)
    for task, samples in tasks.items():
        tracker.save_results_samples(task_name=task, samples=samples)
    folder = out / sanitize_model_name(model_name)
    return sorted(folder.glob("samples_*.jsonl"))


def fixture_tasks() -> dict[str, list[dict[str, Any]]]:
    """An ARC-like task with index targets, and a task whose targets are option texts."""
    arc = [
        lm_eval_sample(0, {"id": "a0", "question": "Which gas do plants take in?"}, 1,
                       "Question: Which gas do plants take in?\nAnswer:", ["oxygen", "carbon dioxide", "helium"],
                       [-4.25, -1.5, -6.0], [False, True, False]),
        lm_eval_sample(1, {"id": "a1", "question": "What melts ice?"}, 0, "Question: What melts ice?\nAnswer:",
                       ["heat", "cold", "darkness", "silence"], [-2.0, -1.75, -5.5, -7.125], [False, True, False, False]),
        lm_eval_sample(2, {"id": "a2", "question": "How many legs has a spider?"}, 3,
                       "Question: How many legs has a spider?\nAnswer:", ["2", "4", "6", "8"],
                       [-3.0, -2.5, -2.0, -0.5], [False, False, False, True]),
    ]
    text = [
        lm_eval_sample(0, {"q": "Capital of Italy?"}, "Rome", "Capital of Italy?", ["Milan", "Rome"], [-3.0, -0.25],
                       [False, True]),
        lm_eval_sample(1, {"q": "Capital of Spain?"}, "Madrid", "Capital of Spain?", ["Madrid", "Seville"],
                       [-2.0, -1.0], [False, True]),
    ]
    return {"arc_easy": arc, "textgold": text}


if __name__ == "__main__":  # regenerate the committed fixture
    import shutil

    dest = Path(__file__).parent / "fixtures" / "lm_eval"
    shutil.rmtree(dest, ignore_errors=True)
    write_with_lm_eval(dest, "EleutherAI/pythia-70m", "pretrained=EleutherAI/pythia-70m,revision=step1000",
                       "step1000", fixture_tasks())
