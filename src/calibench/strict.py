"""Strict, bounded parsing of user files: JSON and YAML with duplicate keys refused, YAML aliases
bounded, and files read only when they are regular files of a bounded size.

Why: ``json.loads`` and ``yaml.safe_load`` keep the last of two equal keys (a typo silently wins),
YAML aliases let a few hundred bytes expand into gigabytes (the "billion laughs"), and reading a FIFO
or a symlink to ``/dev/zero`` blocks or grows memory without bound.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError, quote

MAX_INPUT_BYTES = 2 * 1024**3  # the largest records/task/study/log file calibench reads (2 GiB)
MAX_CONFIG_BYTES = 16 * 1024**2  # study files and other small configs


def check_regular_file(path: str | os.PathLike[str], *, max_bytes: int = MAX_INPUT_BYTES, what: str = "file") -> int:
    """The size of ``path`` after checking it is a regular file (after symlinks) no larger than ``max_bytes``."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise CalibenchError(f"{p}: no such file") from None
    except OSError as exc:
        raise CalibenchError(f"{p}: cannot read ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise CalibenchError(f"{p}: is a folder, expected a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise CalibenchError(f"{p}: not a regular file (a FIFO, device or socket); give a {what}")
    if st.st_size > max_bytes:
        raise CalibenchError(f"{p}: {st.st_size} bytes is larger than the {max_bytes}-byte limit for a {what}")
    return st.st_size


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {quote(key)}")
        out[key] = value
    return out


class DuplicateKeyError(ValueError):
    """A JSON object has the same key twice."""


def loads_json(text: str) -> Any:
    """``json.loads`` that refuses duplicate keys (``ValueError`` naming the key; JSONDecodeError otherwise)."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError:
        raise
    except ValueError as exc:
        raise DuplicateKeyError(str(exc)) from None


def _yaml_loader() -> type:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader with bounded alias expansion (no "billion laughs") and without duplicate keys."""

        def get_single_node(self) -> Any:  # type: ignore[override]
            node = super().get_single_node()
            if node is not None:
                _check_expansion(node)
            return node

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:  # type: ignore[override]
            if isinstance(node, yaml.MappingNode):
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=True)
                    try:
                        dup = key in seen
                    except TypeError:
                        continue
                    if dup:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {quote(key)}", key_node.start_mark)
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


MAX_YAML_NODES = 100_000  # nodes of a YAML document with every alias expanded


def _check_expansion(root: Any) -> None:
    """Refuse a document whose aliases expand to more than ``MAX_YAML_NODES`` nodes (a "billion laughs"
    bomb is a few hundred bytes): aliases are shared nodes, so the count is memoised per node."""
    import yaml

    sizes: dict[int, int] = {}  # id(node) -> expanded size; -1 while its children are counted
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        kids: list[Any] = []
        if isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        if not children_done:
            if id(node) in sizes:
                if sizes[id(node)] == -1:
                    raise yaml.constructor.ConstructorError(None, None, "recursive YAML alias", node.start_mark)
                continue
            sizes[id(node)] = -1
            stack.append((node, True))
            stack.extend((k, False) for k in kids if sizes.get(id(k)) != -2)
            continue
        total = 1 + sum(max(sizes.get(id(k), 1), 1) for k in kids)
        if total > MAX_YAML_NODES:
            raise yaml.constructor.ConstructorError(
                None, None, f"YAML aliases expand to more than {MAX_YAML_NODES} nodes", node.start_mark)
        sizes[id(node)] = total


def load_yaml(text: str) -> Any:
    """Parse YAML safely: no Python tags, bounded aliases, no duplicate keys (raises ``yaml.YAMLError``)."""
    import yaml

    return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader subclass)


def read_yaml_file(path: str | os.PathLike[str], *, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """A YAML file parsed with ``load_yaml``; every problem is one CalibenchError naming ``file:line``."""
    import yaml

    p = Path(path)
    check_regular_file(p, max_bytes=max_bytes, what="YAML file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CalibenchError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise CalibenchError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CalibenchError(f"{p.name}{where}: invalid YAML: {problem}") from None
