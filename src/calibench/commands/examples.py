"""CLI: ``calibench example-records OUT`` writes a small records file to try ``calibench metrics`` on.

The records come from a simulated 4-option multiple-choice model with a known, real miscalibration
(overconfident: its accuracy at confidence c is below c; see ``calibench.study.synthetic``), seeded, so
the same command always writes the same file. It is a demo input, not a measurement of any model.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from calibench.errors import CalibenchError

# The simulated model: skill 0.6, sharpness 1.6 (> 1: overconfident), two extraction methods.
EXAMPLE_MODEL = {"skill": 0.6, "sharpness": 1.6, "seed": 0}
EXAMPLE_METHODS = ("choice", "continuation-sum")
COLUMNS = ("model", "task", "method", "item_id", "confidence", "correct", "pred", "label", "probs")


def example_records(items: int = 500, seed: int = 0):
    """The example records table (``items`` per method) of the simulated model."""
    from calibench.study.synthetic import synthetic_records

    spec = {"model": "example-overconfident", "revision": "", "task": "example-mc", "n_options": 4,
            "items": items, "limit": None, "methods": list(EXAMPLE_METHODS), "settings": {"seed": seed}}
    return synthetic_records(spec, EXAMPLE_MODEL)


def write_example_records(out: Path, *, items: int = 500, seed: int = 0) -> int:
    """Write the example records as JSONL (or CSV/Parquet by suffix); returns the number of rows."""
    records = example_records(items, seed)[list(COLUMNS)]
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix == ".parquet":
        records.to_parquet(out, index=False)
    elif suffix == ".csv":
        records.assign(probs=records["probs"].map(json.dumps)).to_csv(out, index=False)
    elif suffix in (".jsonl", ".json", ""):
        with open(out, "w", encoding="utf-8") as fh:
            for row in records.to_dict("records"):
                row["probs"] = [round(float(p), 6) for p in row["probs"]]
                row["confidence"] = round(float(row["confidence"]), 6)
                row["correct"] = bool(row["correct"])
                row["label"] = int(row["label"])
                fh.write(json.dumps(row) + "\n")
    else:
        raise CalibenchError(f"{out}: use a .jsonl, .csv or .parquet file name")
    return len(records)


def example_records_cmd(
    out: Path = typer.Argument(Path("records.jsonl"), help="File to write (.jsonl, .csv or .parquet)."),
    items: int = typer.Option(500, "--items", min=2, help="Items per method."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write example per-item records of a simulated, overconfident model (try `calibench metrics` on it)."""
    n = write_example_records(out, items=items, seed=seed)
    typer.echo(f"wrote {out} ({n} records: a simulated overconfident model, methods {', '.join(EXAMPLE_METHODS)})")


def register(app: typer.Typer) -> None:
    """Add ``example-records`` to ``app``."""
    app.command("example-records")(example_records_cmd)
