"""Synthetic units: simulated models with a KNOWN calibration curve, for tests and demos.

A synthetic model needs no weights and runs in milliseconds, so the study machinery (store, crash
recovery, Ray, report, findings) can be exercised end to end. It is not a measurement of anything.

The simulation: every item of a synthetic task has a gold label fixed by the task (shared by all
models, so paired comparisons match items). A model has a ``skill`` in (0, 1) and a ``sharpness``
s > 0. Per item it draws u ~ Beta(skill * 4, (1 - skill) * 4); its true chance of being right is
p = 1/K + (1 - 1/K) * u, and it is right with probability p. It reports confidence
c = 1/K + (1 - 1/K) * u ** (1 / s) on its prediction, so its reliability curve is exactly
accuracy(c) = 1/K + (1 - 1/K) * ((c - 1/K) / (1 - 1/K)) ** s: calibrated for s = 1, overconfident for
s > 1, underconfident for s < 1. Each method scales s by a fixed factor (see ``METHOD_SHARPNESS``).

``CALIBENCH_SYNTHETIC_SLEEP`` (seconds, default 0) makes every synthetic unit sleep first; the crash
tests use it to have time to kill a run mid-way.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calibench.errors import CalibenchError
from calibench.records import make_records

METHOD_SHARPNESS: dict[str, float] = {
    "choice": 1.0, "continuation-sum": 0.9, "continuation-mean": 0.85, "continuation-min": 0.75,
    "first-token": 1.1, "sequence": 1.2, "p-true": 0.8, "token": 1.0,
}
CHECKPOINT_FILE = "synthetic.json"


def _seed(*parts: Any) -> int:
    """A stable 63-bit seed from any JSON-able parts (Python's hash() is salted per process)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def sleep_if_asked() -> None:
    delay = float(os.environ.get("CALIBENCH_SYNTHETIC_SLEEP", "0") or 0)
    if delay > 0:
        time.sleep(delay)


def synthetic_records(spec: dict[str, Any], params: dict[str, Any]) -> pd.DataFrame:
    """Deterministic records of a simulated model (``params``: skill, sharpness, seed) on a synthetic task."""
    sleep_if_asked()
    settings = spec["settings"]
    k = int(spec["n_options"])
    n = int(spec["items"]) if not spec.get("limit") else min(int(spec["items"]), int(spec["limit"]))
    task_rng = np.random.default_rng(_seed("task", spec["task"], n, k, settings["seed"]))
    labels = task_rng.integers(0, k, size=n)
    skill = float(params["skill"])
    base_sharpness = float(params["sharpness"])
    rows: list[dict[str, Any]] = []
    for method in spec["methods"]:
        rng = np.random.default_rng(_seed("model", spec["model"], spec.get("revision", ""), params.get("seed", 0),
                                          spec["task"], method, settings["seed"]))
        s = base_sharpness * METHOD_SHARPNESS.get(method, 1.0)
        u = rng.beta(skill * 4.0, (1.0 - skill) * 4.0, size=n)
        p_true = 1.0 / k + (1.0 - 1.0 / k) * u
        correct = rng.random(n) < p_true
        conf = 1.0 / k + (1.0 - 1.0 / k) * u ** (1.0 / s)
        for i in range(n):
            probs, pred = _probs_row(rng, k, int(labels[i]), bool(correct[i]), float(conf[i]))
            rows.append({
                "model": spec["model"], "revision": spec.get("revision", ""), "task": spec["task"],
                "method": method, "item_id": f"{spec['task']}-{i:05d}", "probs": probs.tolist(),
                "label": int(labels[i]), "pred": str(pred), "confidence": float(probs[pred]),
                "correct": pred == int(labels[i]),
                "extra": {"p_true": round(float(p_true[i]), 6), "sharpness": s},
            })
    return make_records(rows)


def _probs_row(rng: np.random.Generator, k: int, label: int, correct: bool, conf: float) -> tuple[np.ndarray, int]:
    """Probabilities with ``conf`` on the prediction and the rest spread below it (so pred is the argmax)."""
    pred = label if correct else int((label + 1 + rng.integers(0, k - 1)) % k)
    rest = (1.0 - conf) / (k - 1)
    z = rng.uniform(-1.0, 1.0, size=k - 1)
    z -= z.mean()
    spread = 0.25 * min(rest, conf - rest)
    others = rest + spread * z
    probs = np.empty(k)
    probs[pred] = conf
    probs[np.arange(k) != pred] = others
    probs = np.clip(probs, 0.0, 1.0)
    return probs / probs.sum(), pred


def synthetic_train(spec: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """The ``synthetic`` train recipe: write checkpoint folders holding simulated-model parameters.

    ``options.checkpoints`` maps checkpoint names (``epoch1``, ``step16``, ...) to ``{skill, sharpness}``.
    """
    sleep_if_asked()
    checkpoints = spec["options"].get("checkpoints")
    if not isinstance(checkpoints, dict) or not checkpoints:
        raise CalibenchError(f"train {spec['name']}: options.checkpoints must map checkpoint names to "
                             "{skill, sharpness}")
    manifest: dict[str, str] = {}
    for name, params in checkpoints.items():
        if not isinstance(params, dict) or not {"skill", "sharpness"} <= set(params):
            raise CalibenchError(f"train {spec['name']}: options.checkpoints.{name} needs skill and sharpness")
        folder = out_dir / str(name)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CHECKPOINT_FILE).write_text(json.dumps({"skill": float(params["skill"]),
                                                          "sharpness": float(params["sharpness"]),
                                                          "seed": params.get("seed", 0)}, sort_keys=True))
        manifest[str(name)] = str(name)
    return {"checkpoints": manifest}


def read_checkpoint(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CHECKPOINT_FILE
    if not path.exists():
        raise CalibenchError(f"{folder}: not a synthetic checkpoint (no {CHECKPOINT_FILE})")
    return json.loads(path.read_text())
