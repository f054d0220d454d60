"""The study files that ship inside the package (``calibench/data/studies/*.yaml``).

A newcomer copies commands such as ``calibench study run studies/real-small.yaml`` from the README,
often not from the repository root; so a study argument that is not an existing file is looked up
among the shipped studies by name (``real-small``, ``real-small.yaml`` or ``studies/real-small.yaml``).
"""

from __future__ import annotations

from pathlib import Path

from calibench.errors import CalibenchError


def shipped_dir() -> Path:
    """The folder of shipped study files (package data)."""
    return Path(__file__).resolve().parent.parent / "data" / "studies"


def shipped_studies() -> dict[str, Path]:
    """Shipped study name -> file, sorted by name."""
    return {p.stem: p for p in sorted(shipped_dir().glob("*.yaml"))}


def find_study(arg: str | Path) -> Path:
    """An existing study file, else the shipped study ``arg`` names; else one error listing the names."""
    path = Path(arg).expanduser()
    if path.is_file():
        return path
    shipped = shipped_studies()
    name = path.name[: -len(path.suffix)] if path.suffix in (".yaml", ".yml") else path.name
    if name in shipped and (path.parent == Path(".") or path.parent.name == "studies"):
        return shipped[name]
    raise CalibenchError(f"{arg}: no such study file, and not a shipped study "
                         f"(shipped: {', '.join(shipped) or 'none'})")
