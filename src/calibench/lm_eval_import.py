"""Turn lm-evaluation-harness ``--log_samples`` files of multiple-choice tasks into calibench records.

lm-eval (0.4.x) writes one JSON line per document to ``<out>/<model>/samples_<task>_<date>.jsonl``:
``doc_id``, ``doc``, ``target`` (str of the gold index or gold text), ``arguments``
(``{"gen_args_i": {"arg_0": context, "arg_1": " option"}}``), ``resps`` / ``filtered_resps``
(per option ``[loglikelihood, is_greedy]``, written as strings by lm-eval's sanitizer), ``filter``,
and the per-sample metrics (``acc``, ``acc_norm``). Those log-likelihoods are exactly what the
continuation-sum method needs: probs = softmax over options, so users get calibration numbers from
runs they already have. Provenance comes from the sibling ``results_<date>.json`` when present,
else from the folder and file names.

Gold-answer layouts read (every multiple-choice layout with a single gold answer): ``target`` as an
option index ("2"), as the text of an option ("Rome", leading/trailing spaces ignored), or either of
those as a one-element list ("[2]", "['Rome']", as tasks with ``multiple_target`` log them). A target
listing several different gold answers is refused. Items may have different option counts (ARC: 3-5);
class-wise metrics then use the zero-padded class set (``metrics.registry.padded_probs``). A
``results_*.json`` file holds only aggregate scores; passing one is an error that points to the
``samples_*.jsonl`` files.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calibench.errors import CalibenchError
from calibench.io import read_jsonl_lines
from calibench.records import make_records

METHOD = "continuation-sum"
_FILE_RE = re.compile(r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?)\.jsonl$")


@dataclass(frozen=True)
class Provenance:
    """Who and what a samples file is about."""

    model: str
    revision: str
    task: str


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; folders become every ``samples_*.jsonl`` below them (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("samples_*.jsonl"))
            if not found:
                raise CalibenchError(f"{p}: no lm-eval samples_*.jsonl files in this folder")
            out.extend(found)
        elif p.is_file():
            _check_not_results(p)
            out.append(p)
        else:
            raise CalibenchError(f"{p}: no such file or folder")
    return out


def _check_not_results(p: Path) -> None:
    """An lm-eval results file (aggregate scores) is not a samples file: say which files to pass."""
    if p.suffix.lower() != ".json":
        return
    samples = sorted(p.parent.glob("samples_*.jsonl"))
    hint = (f"; beside it: {', '.join(s.name for s in samples[:3])}{' ...' if len(samples) > 3 else ''}"
            if samples else "; run lm-eval with --log_samples to write them")
    raise CalibenchError(f"{p}: this is an lm-eval results file (aggregate scores, no per-item log-likelihoods); "
                         f"pass the samples_<task>_<date>.jsonl files or their folder instead{hint}")


def provenance(path: Path, *, model: str | None = None, revision: str | None = None,
               task: str | None = None) -> Provenance:
    """Task from ``samples_<task>_<date>.jsonl``; model/revision from ``results_<date>.json`` beside it."""
    m = _FILE_RE.match(path.name)
    file_task = m.group("task") if m else path.stem.removeprefix("samples_")
    found_model, found_rev = "", ""
    results = path.parent / f"results_{m.group('date')}.json" if m else None
    if results is not None and results.is_file():
        try:
            info = json.loads(results.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            info = {}
        config = info.get("config") or {}
        found_model = str(info.get("model_name") or _arg(config.get("model_args"), "pretrained") or "")
        found_rev = str(config.get("model_revision") or _arg(config.get("model_args"), "revision") or "")
    if not found_model:
        found_model = path.parent.name  # lm-eval's sanitized model name ("/" became "__")
    return Provenance(model=model or found_model, revision=revision if revision is not None else found_rev,
                      task=task or file_task)


def _arg(model_args: Any, key: str) -> str | None:
    if isinstance(model_args, dict):
        value = model_args.get(key)
        return None if value is None else str(value)
    if isinstance(model_args, str):
        for part in model_args.split(","):
            k, _, v = part.partition("=")
            if k.strip() == key:
                return v.strip()
    return None


def _pair(raw: Any, where: str, what: str) -> tuple[float, bool]:
    """One [loglikelihood, is_greedy] response (strings as lm-eval writes them, or raw numbers)."""
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        raise CalibenchError(f"{where}: {what} is {raw!r}, not a [loglikelihood, is_greedy] pair; "
                             "only loglikelihood multiple-choice tasks can be converted")
    try:
        ll = float(raw[0])
    except (TypeError, ValueError) as exc:
        raise CalibenchError(f"{where}: {what} log-likelihood {raw[0]!r} is not a number") from exc
    if np.isnan(ll) or ll > 1e-6:
        raise CalibenchError(f"{where}: {what} log-likelihood {raw[0]!r} must be a number <= 0")
    greedy = raw[1] if isinstance(raw[1], bool) else str(raw[1]).strip() == "True"
    return min(ll, 0.0), greedy


def _responses(sample: dict[str, Any], where: str) -> list[tuple[float, bool]]:
    if isinstance(sample.get("filtered_resps"), list):
        return [_pair(r, where, f"filtered_resps[{i}]") for i, r in enumerate(sample["filtered_resps"])]
    if isinstance(sample.get("resps"), list):
        out = []
        for i, r in enumerate(sample["resps"]):
            if not isinstance(r, list) or not r:
                raise CalibenchError(f"{where}: resps[{i}] is {r!r}, expected a list of responses")
            out.append(_pair(r[0], where, f"resps[{i}][0]"))
        return out
    raise CalibenchError(f"{where}: missing 'filtered_resps' and 'resps' (not an lm-eval samples line?)")


def _arguments(sample: dict[str, Any], where: str) -> list[tuple[str, str]]:
    args = sample.get("arguments")
    if isinstance(args, dict):  # lm-eval's saved form: {"gen_args_0": {"arg_0": ctx, "arg_1": cont}}
        keys = sorted(args, key=lambda k: int(k.rsplit("_", 1)[-1]) if k.rsplit("_", 1)[-1].isdigit() else 0)
        return [(str(args[k].get("arg_0", "")), str(args[k].get("arg_1", ""))) for k in keys if isinstance(args[k], dict)]
    if isinstance(args, list):  # in-memory form: [[ctx, cont], ...]
        return [(str(a[0]), str(a[1])) for a in args if isinstance(a, (list, tuple)) and len(a) >= 2]
    return []


def _gold(target: Any, options: Sequence[str], pred: int, acc: Any, where: str) -> int:
    """The gold index from lm-eval's ``str(target)``: an index, or the gold option's text.

    ``str()`` loses the type, so "2" may be index 2 or the option "2"; the logged ``acc`` (1 iff
    argmax == gold) decides between readings that disagree, and the index reading wins a tie (it is
    what most lm-eval multiple-choice tasks log).
    """
    s = _single_target(target, where)
    by_index = [int(s)] if re.fullmatch(r"-?\d+", s) and 0 <= int(s) < len(options) else []
    by_text = [i for i, o in enumerate(options) if o.strip() == s and i not in by_index]
    candidates = by_index + by_text
    if not candidates:
        raise CalibenchError(f"{where}: target {s!r} is neither an option index (0..{len(options) - 1}) "
                             "nor the text of an option")
    if len(candidates) > 1 and acc is not None:
        try:
            hit = float(acc) == 1.0
        except (TypeError, ValueError):
            return candidates[0]
        consistent = [c for c in candidates if (c == pred) == hit]
        if consistent:
            return consistent[0]
    return candidates[0]


def _single_target(target: Any, where: str) -> str:
    """The one gold answer as a string: a one-element list (or a list repeating one answer) is unwrapped."""
    values = target if isinstance(target, list) else None
    s = str(target).strip()
    if values is None and s.startswith("["):
        try:
            parsed = ast.literal_eval(s)
        except (ValueError, SyntaxError):
            parsed = None
        values = parsed if isinstance(parsed, list) else None
        if values is None:
            raise CalibenchError(f"{where}: target {s} is not a readable list of gold answers")
    if values is None:
        return s
    distinct = list(dict.fromkeys(str(v).strip() for v in values))
    if len(distinct) != 1:
        raise CalibenchError(f"{where}: target {s} lists several gold answers ({len(distinct)}); only tasks with "
                             "one gold answer per item are supported")
    return distinct[0]


def _softmax(lls: np.ndarray) -> np.ndarray:
    z = lls - lls.max()
    p = np.exp(z)
    return p / p.sum()


def convert_file(path: str | os.PathLike[str], *, model: str | None = None, revision: str | None = None,
                 task: str | None = None) -> list[dict[str, Any]]:
    """Record rows (dicts of the contract) for one samples file; errors name file:line."""
    path = Path(path)
    prov = provenance(path, model=model, revision=revision, task=task)
    samples = read_jsonl_lines(path)
    # A task with several filters logs each document once per filter; keep one ("none" if present).
    filters = [str(s.get("filter", "none")) for _, s in samples]
    keep = "none" if "none" in filters or not filters else filters[0]
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for (lineno, sample), filt in zip(samples, filters, strict=True):
        if filt != keep:
            continue
        where = f"{path}:{lineno}"
        for key in ("doc_id", "target"):
            if key not in sample:
                raise CalibenchError(f"{where}: missing field '{key}' (not an lm-eval samples line?)")
        item = str(sample["doc_id"])
        if item in seen:
            raise CalibenchError(f"{where}: doc_id {item} already seen on line {seen[item]}")
        seen[item] = lineno
        rows.append(_convert_sample(sample, prov, where))
    if not rows:
        raise CalibenchError(f"{path}: no samples")
    return rows


def _convert_sample(sample: dict[str, Any], prov: Provenance, where: str) -> dict[str, Any]:
    pairs = _responses(sample, where)
    args = _arguments(sample, where)
    if args and len(args) != len(pairs):
        raise CalibenchError(f"{where}: {len(args)} arguments but {len(pairs)} responses")
    # acc_mutual_info appends unconditional ("", option) requests after the real ones.
    n = len(pairs)
    if args and n % 2 == 0 and n >= 4 and all(a[0] == "" for a in args[n // 2:]) and any(a[0] for a in args[: n // 2]):
        pairs, args = pairs[: n // 2], args[: n // 2]
    if len(pairs) < 2:
        raise CalibenchError(f"{where}: {len(pairs)} option(s); a multiple-choice sample needs at least two")
    if args and len({a[1] for a in args}) == 1 and len({a[0] for a in args}) > 1:
        raise CalibenchError(f"{where}: options are in the context (a multiple-input task such as winogrande); "
                             "not supported")
    lls = np.array([p[0] for p in pairs], dtype=float)
    if np.isneginf(lls).all():
        raise CalibenchError(f"{where}: every option has log-likelihood -inf")
    probs = _softmax(lls)
    pred = int(np.argmax(lls))
    options = [a[1] for a in args] if args else [str(i) for i in range(len(pairs))]
    acc = sample.get("acc")
    label = _gold(sample["target"], options, pred, acc, where)
    extra: dict[str, Any] = {"loglikelihoods": lls.tolist(), "is_greedy": [p[1] for p in pairs],
                             "n_options": len(pairs), "source": "lm-eval"}
    if acc is not None:
        extra["lm_eval_acc"] = float(acc)
    if sample.get("acc_norm") is not None:
        extra["lm_eval_acc_norm"] = float(sample["acc_norm"])
    return {"model": prov.model, "revision": prov.revision, "task": prov.task, "method": METHOD,
            "item_id": str(sample["doc_id"]), "probs": probs.tolist(), "label": label, "pred": str(pred),
            "confidence": float(probs[pred]), "correct": pred == label, "extra": extra}


def convert(paths: Iterable[str | os.PathLike[str]], *, model: str | None = None, revision: str | None = None,
            task: str | None = None) -> pd.DataFrame:
    """Records (the calibench contract) for every samples file in ``paths`` (files or folders)."""
    files = expand_paths(paths)
    if task is not None and len(files) > 1:
        raise CalibenchError("--task names one task; it cannot be used with several samples files")
    rows: list[dict[str, Any]] = []
    owner: dict[tuple[str, str, str], Path] = {}
    for f in files:
        file_rows = convert_file(f, model=model, revision=revision, task=task)
        for r in file_rows:
            key = (r["model"], r["task"], r["item_id"])
            if key in owner and owner[key] != f:
                raise CalibenchError(f"{f}: task {r['task']} of model {r['model']} is also in {owner[key]}; "
                                     "pass one samples file per model and task")
            owner[key] = f
        rows.extend(file_rows)
    return make_records(rows)
