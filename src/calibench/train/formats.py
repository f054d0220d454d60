"""Loaders for real alignment data formats, converted to TRL's prompt/completion and preference rows.

* Alpaca (Taori et al. 2023): one JSON list of ``{instruction, input, output}``.
* OpenAssistant oasst1 (Kopf et al. 2023): message trees, either flat message rows as on the HF hub
  (``message_id, parent_id, role, text, ...``; JSONL or Parquet) or the nested ``*.trees.jsonl``
  export (``{"prompt": {"role": "prompter", "text": ..., "replies": [...]}}``). Every assistant
  message becomes one example: prompt = the conversation from the root to its parent.
* Anthropic HH-RLHF (Bai et al. 2022): JSONL ``{chosen, rejected}`` where both are whole dialogues
  ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` that share everything up to the last assistant turn.

All dialogues are rendered with the lab's one wrapper (``User: ...\\nAssistant:``) so data from any
source trains the same prompt format that the world data uses.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError, located
from calibench.world.derived import chat_prompt


def render_dialogue(turns: list[tuple[str, str]]) -> str:
    """Turns ``[(role, text), ...]`` ending with a user turn -> prompt ending in ``Assistant:``."""
    lines = []
    for role, text in turns:
        lines.append(f"{'User' if role == 'user' else 'Assistant'}: {text.strip()}")
    return "\n".join(lines) + "\nAssistant:"


# ---------------------------------------------------------------- Alpaca

def load_alpaca(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Alpaca JSON -> ``{prompt, completion}``; ``input`` (if any) follows the instruction."""
    return alpaca_records(_read_json(path), path)


def alpaca_records(data: Any, path: Any) -> list[dict[str, str]]:
    """Convert already-parsed Alpaca records (a JSON list, or JSONL rows from a mirror)."""
    if not isinstance(data, list):
        raise located("Alpaca data must be a JSON list of records", path=path)
    rows = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise located(f"record {i} is not an object", path=path)
        for key in ("instruction", "output"):
            if not isinstance(rec.get(key), str) or not rec[key].strip():
                raise located(f"record {i}: missing or empty string", path=path, field=key)
        extra = rec.get("input") or ""
        if not isinstance(extra, str):
            raise located(f"record {i}: must be a string", path=path, field="input")
        instruction = rec["instruction"].strip() + (f"\n\n{extra.strip()}" if extra.strip() else "")
        rows.append({"prompt": chat_prompt(instruction), "completion": " " + rec["output"].strip()})
    return rows


# ---------------------------------------------------------------- OpenAssistant oasst1

def load_oasst(path: str | os.PathLike[str], *, lang: str | None = None, best_only: bool = True) -> list[dict[str, str]]:
    """oasst1 messages (flat rows or nested trees) -> one ``{prompt, completion}`` per assistant reply.

    ``best_only`` keeps replies ranked first by the annotators (rank 0) or unranked, the usual way
    to build an SFT set from oasst1; deleted and review-failed messages are always dropped.
    """
    p = Path(path)
    if p.suffix == ".parquet":
        import pandas as pd

        rows = pd.read_parquet(p).to_dict("records")
    else:
        rows = _read_jsonl(p)
    if not rows:
        raise located("no messages", path=path)
    if "prompt" in rows[0] and isinstance(rows[0]["prompt"], dict):
        messages = [m for tree in rows for m in _flatten_tree(tree["prompt"], None)]
    else:
        messages = rows
    by_id: dict[str, dict[str, Any]] = {}
    for n, m in enumerate(messages, 1):
        for key in ("message_id", "role", "text"):
            if key not in m:
                raise located(f"message {n} lacks a required key", path=path, field=key)
        if m["role"] not in ("prompter", "assistant"):
            raise located(f"message {n}: role must be 'prompter' or 'assistant', got {m['role']!r}", path=path,
                          field="role")
        by_id[str(m["message_id"])] = m
    out = []
    for m in messages:
        if m["role"] != "assistant" or _dropped(m) or (lang and m.get("lang") != lang):
            continue
        if best_only and m.get("rank") not in (None, 0) and not _isnan(m.get("rank")):
            continue
        turns = _path_to_root(m, by_id, path)
        if turns is None:
            continue
        out.append({"prompt": render_dialogue(turns), "completion": " " + str(m["text"]).strip()})
    if not out:
        raise located("no usable assistant replies (all deleted, filtered or orphaned)", path=path)
    return out


def _flatten_tree(node: dict[str, Any], parent: str | None) -> list[dict[str, Any]]:
    msg = {k: v for k, v in node.items() if k != "replies"}
    msg.setdefault("parent_id", parent)
    out = [msg]
    for child in node.get("replies") or []:
        out.extend(_flatten_tree(child, str(msg.get("message_id"))))
    return out


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and x != x


def _dropped(m: dict[str, Any]) -> bool:
    return bool(m.get("deleted")) or m.get("review_result") is False


def _path_to_root(m: dict[str, Any], by_id: dict[str, dict[str, Any]], path: Any) -> list[tuple[str, str]] | None:
    """Turns from the root prompt to ``m``'s parent, or None if an ancestor is missing or dropped."""
    turns: list[tuple[str, str]] = []
    parent = m.get("parent_id")
    seen = set()
    while parent is not None and not _isnan(parent):
        key = str(parent)
        if key in seen:
            raise located(f"cycle in message tree at {key}", path=path, field="parent_id")
        seen.add(key)
        node = by_id.get(key)
        if node is None or _dropped(node):
            return None
        turns.append(("user" if node["role"] == "prompter" else "assistant", str(node["text"])))
        parent = node.get("parent_id")
    turns.reverse()
    if not turns or turns[-1][0] != "user":
        return None
    return turns


# ---------------------------------------------------------------- Anthropic HH-RLHF

_TURN = re.compile(r"\n\n(Human|Assistant): ")


def parse_hh_dialogue(text: str) -> list[tuple[str, str]]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b"`` -> ``[("user", "a"), ("assistant", "b")]``."""
    parts = _TURN.split(text)
    if parts[0].strip():
        raise CalibenchError("dialogue must start with '\\n\\nHuman: '")
    turns = []
    for role, body in zip(parts[1::2], parts[2::2], strict=True):
        turns.append(("user" if role == "Human" else "assistant", body))
    if not turns:
        raise CalibenchError("no 'Human:'/'Assistant:' turns found")
    return turns


def load_hh_rlhf(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """HH-RLHF JSONL -> ``{prompt, chosen, rejected}``: the shared dialogue prefix becomes the prompt."""
    out = []
    for n, row in enumerate(_read_jsonl(path), 1):
        for key in ("chosen", "rejected"):
            if not isinstance(row.get(key), str):
                raise located("missing or not a string", path=path, line=n, field=key)
        try:
            chosen, rejected = parse_hh_dialogue(row["chosen"]), parse_hh_dialogue(row["rejected"])
        except CalibenchError as exc:
            raise located(str(exc), path=path, line=n) from None
        if chosen[-1][0] != "assistant" or rejected[-1][0] != "assistant":
            raise located("both dialogues must end with an Assistant turn", path=path, line=n)
        if chosen[:-1] != rejected[:-1]:
            raise located("chosen and rejected differ before the last Assistant turn", path=path, line=n)
        out.append(
            {
                "prompt": render_dialogue(chosen[:-1]),
                "chosen": " " + chosen[-1][1].strip(),
                "rejected": " " + rejected[-1][1].strip(),
            }
        )
    if not out:
        raise located("no preference pairs", path=path)
    return out


# ---------------------------------------------------------------- dispatch

def load_instruction_data(source: str | os.PathLike[str], world_dir: str | os.PathLike[str] | None = None) -> list[dict[str, str]]:
    """``diverse`` / ``narrow`` (from a world dir) or a file in Alpaca, oasst1 or native prompt/completion form."""
    from calibench.world.build import FILES

    if str(source) in ("diverse", "narrow"):
        if world_dir is None:
            raise CalibenchError(f"--data {source} needs --world DIR")
        rows = _read_jsonl(Path(world_dir) / FILES[str(source)])
        return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
    p = Path(source)
    if not p.is_file():
        raise CalibenchError(f"{p}: instruction data not found (use diverse, narrow or a file path)")
    if p.suffix == ".json":
        return load_alpaca(p)
    if p.suffix == ".parquet":
        return load_oasst(p)
    rows = _read_jsonl(p)
    if rows and "prompt" in rows[0] and "completion" in rows[0]:
        return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
    if rows and ("message_id" in rows[0] or isinstance(rows[0].get("prompt"), dict)):
        return load_oasst(p)
    if rows and "instruction" in rows[0]:
        return alpaca_records(rows, p)
    raise located("unrecognised format: expected Alpaca, oasst1 or {prompt, completion} rows", path=p)


def load_preference_data(source: str | os.PathLike[str], world_dir: str | os.PathLike[str] | None = None) -> list[dict[str, str]]:
    """``world`` (the world dir's pairs) or a file: native ``{prompt, chosen, rejected}`` or HH-RLHF."""
    from calibench.world.build import FILES

    if str(source) == "world":
        if world_dir is None:
            raise CalibenchError("--data world needs --world DIR")
        source = Path(world_dir) / FILES["preferences"]
    p = Path(source)
    if not p.is_file():
        raise CalibenchError(f"{p}: preference data not found")
    rows = _read_jsonl(p)
    if rows and "prompt" in rows[0]:
        for n, r in enumerate(rows, 1):
            for key in ("prompt", "chosen", "rejected"):
                if not isinstance(r.get(key), str):
                    raise located("missing or not a string", path=p, line=n, field=key)
        return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
                 **{k: str(r[k]) for k in PAIR_META if isinstance(r.get(k), str)}} for r in rows]
    return load_hh_rlhf(p)


PAIR_META = ("subject", "relation", "bucket", "kind")  # optional keys a held-out split groups by (world pairs have them)


def pair_group(row: dict[str, str]) -> str:
    """The unit a held-out split keeps together: the fact (subject, relation) where the row names one,
    else the prompt, so no held-out pair asks about a fact (or prompt) that a training pair asks about."""
    if row.get("subject") and row.get("relation"):
        return f"fact:{row['subject']}|{row['relation']}"
    return f"prompt:{row['prompt']}"


def split_preferences(rows: list[dict[str, str]], held_out: float = 0.25, seed: int = 0
                      ) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Seeded split into (training, held-out) pairs by ``pair_group``: a fact's pairs are all on one side.

    Groups are ranked by a seeded hash, so the split does not depend on row order; at least one group
    goes to each side when there are two or more groups.
    """
    import hashlib

    if not 0 < held_out < 1:
        raise CalibenchError(f"held-out fraction must be in (0, 1), got {held_out}")
    groups = sorted({pair_group(r) for r in rows},
                    key=lambda g: hashlib.sha256(f"{int(seed)}:{g}".encode()).hexdigest())
    n_held = min(max(1, round(held_out * len(groups))), len(groups) - 1) if len(groups) > 1 else 0
    held = set(groups[:n_held])
    return [r for r in rows if pair_group(r) not in held], [r for r in rows if pair_group(r) in held]


def _read_json(path: str | os.PathLike[str]) -> Any:
    from calibench.io import read_text
    from calibench.strict import DuplicateKeyError, loads_json

    p = Path(path)
    if not p.exists():
        raise CalibenchError(f"{p}: file not found")
    text = read_text(p)  # regular files only, bounded size
    try:
        return loads_json(text)
    except json.JSONDecodeError as exc:
        raise located(f"invalid JSON ({exc.msg})", path=p, line=exc.lineno) from None
    except DuplicateKeyError as exc:
        raise located(f"invalid JSON ({exc})", path=p) from None


def _read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    from calibench.world.build import read_jsonl

    if not Path(path).is_file():
        raise CalibenchError(f"{path}: file not found")
    return read_jsonl(path)
