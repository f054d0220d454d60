"""Layering: no import circle anywhere in the package (function-level imports count), no package
importing one above it in the data flow, and no module-level cache."""

from __future__ import annotations

import ast
from pathlib import Path

import calibench

ROOT = Path(calibench.__file__).parent
DATA_FLOW = ("calibench.records", "calibench.evaluate", "calibench.io", "calibench.scoring", "calibench.compare",
             "calibench.models.loading", "calibench.models.weights", "calibench.study")


def _module_name(path: Path) -> str:
    parts = ["calibench", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """module -> calibench modules it imports anywhere (module level or inside functions), skipping
    ``if TYPE_CHECKING:`` blocks, which never run."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = {id(sub) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for sub in ast.walk(node)}
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("calibench"):
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                deps.update(subs)
                if len(subs) < len(node.names):  # names from the module itself, not only its submodules
                    deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("calibench"))
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_function_level_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]


def test_no_import_circle_through_the_data_flow_modules() -> None:
    graph = _graph()
    assert "calibench.study.work" in graph["calibench.study.executors"]
    bad = [sorted(c) for c in _cycles(graph) if any(m.startswith(DATA_FLOW) for m in c)]
    assert bad == []


def test_no_import_circle_anywhere() -> None:
    assert [sorted(c) for c in _cycles(_graph())] == []


# The data flow, bottom to top (docs/design.md): a module may import its own layer or a lower one.
# Every top-level module or package must be listed, so a new one has to declare where it sits.
LAYERS: dict[str, int] = {
    "__init__": 0, "errors": 0, "io": 0, "threads": 0, "quiet": 0, "limits": 0, "strict": 0,  # plumbing
    "records": 0, "columnar": 0, "runfolder": 0,  # the record contract and its files
    "models": 1, "tasks": 1, "world": 1,   # weights and data
    "methods": 2,                          # engine numbers -> records
    "scoring": 3,                          # tasks x methods -> record chunks
    "metrics": 4, "validity": 4,           # records -> numbers
    "recalibrate": 5,
    "report": 6,                           # numbers -> pictures
    "evaluate": 7, "compare": 7, "lm_eval_import": 7,  # run folders
    "train": 8,                            # the lab's training (evaluates at checkpoints)
    "study": 9,                            # grids of units, the study report
    "commands": 10, "cli": 11, "__main__": 12,
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_top_level_module_declares_its_layer() -> None:
    assert sorted({_layer(m) for m in _graph()} - set(LAYERS)) == []


def test_no_module_imports_a_layer_above_it() -> None:
    upward = sorted((a, b) for a, deps in _graph().items() for b in deps
                    if LAYERS.get(_layer(b), 99) > LAYERS.get(_layer(a), 99))
    assert upward == []


# Memoised pure functions of constants (their results are read-only), not state: each named with why.
PURE_MEMOS = {
    ("calibench.tasks.world", "countries"),          # the countryinfo facts, a frozen tuple
    ("calibench.metrics.smooth", "gaussian_samples"),  # kernel samples, write-protected arrays
    ("calibench.metrics.binning", "_width_kernel"),  # binning constants for n_bins
}
_CACHE_CALLS = ("WeakKeyDictionary", "WeakValueDictionary", "dict", "OrderedDict", "defaultdict")


def test_no_module_level_cache() -> None:
    """Module-level mutable containers named like caches, and memoising decorators outside PURE_MEMOS."""
    found = []
    for path in ROOT.rglob("*.py"):
        name = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                value = node.value
                empty = isinstance(value, (ast.Dict, ast.List, ast.Set)) and not getattr(
                    value, "keys", getattr(value, "elts", None))
                call = isinstance(value, ast.Call) and ast.unparse(value.func).split(".")[-1] in _CACHE_CALLS
                for t in targets:
                    tname = ast.unparse(t)
                    if (empty or call) and any(w in tname.upper() for w in ("CACHE", "LOADED", "MEMO")):
                        found.append(f"{name}.{tname}")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for dec in node.decorator_list:
                    text = ast.unparse(dec)
                    if ("lru_cache" in text or text.endswith("cache")) and (name, node.name) not in PURE_MEMOS:
                        found.append(f"{name}.{node.name} (@{text})")
    assert found == []
