"""The per-item record table: the data contract between every producer and every consumer.

One row per item x method. Columns (docs/design.md):

====================  =========================================================================
model, revision       provenance (strings; revision may be empty)
task, method          provenance (strings)
item_id               stable id of the item within the task (string)
probs                 normalised probabilities over the item's classes, or null (open class set)
label                 index of the gold class in probs, or null
pred                  predicted class or token (string)
confidence            the model's confidence in pred, in [0, 1]
correct               bool: pred equals the gold answer
extra                 method-specific raw numbers, stored as a JSON string
====================  =========================================================================

Readers accept JSONL, CSV (``probs``/``extra`` as JSON text) and Parquet. Only ``confidence`` and
``correct`` are required to compute metrics; missing provenance columns are filled with defaults.

This module also owns the on-disk form of records: the Arrow schema of ``records.parquet``
(``arrow_schema``), the streaming writer that producers use (``RecordWriter``: chunks go to a
temporary file that is renamed into place only when the writer is closed) and the reader of a run
folder (``load_run_records``, which checks the folder against its manifest: ``calibench.runfolder``).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd

from calibench.errors import CalibenchError, located, quote
from calibench.io import atomic_path, read_jsonl_lines, write_with
from calibench.strict import check_regular_file

RECORDS_FILE = "records.parquet"

COLUMNS: tuple[str, ...] = (
    "model",
    "revision",
    "task",
    "method",
    "item_id",
    "probs",
    "label",
    "pred",
    "confidence",
    "correct",
    "extra",
)
REQUIRED: tuple[str, ...] = ("confidence", "correct")
_DEFAULTS: dict[str, Any] = {
    "model": "",
    "revision": "",
    "task": "task",
    "method": "method",
    "probs": None,
    "label": None,
    "pred": "",
    "extra": "{}",
}
PROB_TOL = 1e-4


def make_records(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build a contract-shaped DataFrame from dict rows (missing optional columns get defaults)."""
    df = pd.DataFrame(list(rows))
    return normalize(df, source="<records>")


def normalize(df: pd.DataFrame, *, source: str = "<records>", text_source: bool = False) -> pd.DataFrame:
    """Fill defaults, coerce dtypes and validate every row; errors name ``source`` and the row.

    Strict on purpose: ``confidence`` must be a number (a string or a bool is refused unless the source is
    CSV text, ``text_source``), ``probs`` a list (JSON text only from CSV), one class count per task x
    method, ``confidence == max(probs)`` and ``correct`` agreeing with ``probs``/``label`` where both
    are given, and each ``item_id`` once per model x task x method. Mixed class counts within a task x method
    (variable-choice tasks) are allowed, with a ``MixedClassesWarning``.
    """
    if len(df) == 0:
        raise CalibenchError(f"{source}: no records")
    for col in REQUIRED:
        if col not in df.columns:
            raise CalibenchError(f"{source}: missing required column '{col}'")
    df = df.copy()
    if "item_id" not in df.columns:
        df["item_id"] = [str(i) for i in range(len(df))]
    for col, default in _DEFAULTS.items():
        if col not in df.columns:
            df[col] = [default] * len(df)
    for col in ("model", "revision", "task", "method", "item_id", "pred"):
        df[col] = df[col].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    df["extra"] = df["extra"].map(_extra_to_json)
    if not text_source and not pd.api.types.is_float_dtype(df["confidence"]) \
            and not pd.api.types.is_integer_dtype(df["confidence"]):
        for i, v in enumerate(df["confidence"]):
            if not _is_number(v) and v is not None:
                raise located(f"confidence must be a number, got {_show(v)} ({type(v).__name__})",
                              path=source, line=_row_line(df, i), field="confidence")
    conf = pd.to_numeric(df["confidence"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(conf) | (conf < 0) | (conf > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise located(f"confidence must be a finite number in [0, 1], got {_show(df['confidence'].iloc[i])}",
                      path=source, line=_row_line(df, i), field="confidence")
    df["confidence"] = conf
    if pd.api.types.is_bool_dtype(df["correct"]):
        df["correct"] = df["correct"].to_numpy(dtype=bool)
    else:
        df["correct"] = [_as_bool(v, source, _row_line(df, i)) for i, v in enumerate(df["correct"])]
    if df["probs"].map(_is_null).all() and df["label"].map(_is_null).all():
        # Open class sets (CLM tokens, open facts): nothing per row to check; keep big tables fast.
        df["probs"] = [None] * len(df)
        df["label"] = pd.array([None] * len(df), dtype="Int64")
    else:
        probs = [_as_probs(v, source, _row_line(df, i), text_source) for i, v in enumerate(df["probs"])]
        labels = [_as_label(v, p, source, _row_line(df, i)) for i, (v, p) in enumerate(zip(df["label"], probs, strict=True))]
        _check_class_rows(df, probs, labels, source)
        df["probs"] = probs
        df["label"] = pd.array(labels, dtype="Int64")
    _check_unique_items(df, source)
    return df[list(COLUMNS)].reset_index(drop=True)


CONF_TOL = 1e-6  # |confidence - max(probs)| allowed where both are given


def check_contract(df: pd.DataFrame, source: str = "<records>") -> None:
    """The cross-column rules of ``normalize`` on an already contract-shaped frame (probs as lists or
    None, label as ints or NA): confidence is max(probs), correct agrees with probs and label, each
    item once per model x task x method. Any other reader that builds records (a columnar fast path)
    calls this so it accepts exactly what the row reader accepts."""
    probs = [None if _is_null(p) else list(p) for p in df["probs"]]
    labels = [None if _is_null(v) else int(v) for v in df["label"]]
    if any(p is not None for p in probs):
        _check_class_rows(df, probs, labels, source)
    _check_unique_items(df, source)


def _check_class_rows(df: pd.DataFrame, probs: list[list[float] | None], labels: list[int | None],
                      source: str) -> None:
    """Per row: confidence is max(probs), correct agrees with probs and label; per task x method: a
    warning where class counts differ (every class-wise metric is then skipped for that group)."""
    conf = df["confidence"].to_numpy(dtype=float).tolist()
    correct = df["correct"].to_numpy(dtype=bool).tolist()
    tasks, methods = df["task"].tolist(), df["method"].tolist()
    sizes: dict[tuple[str, str], tuple[int, int]] = {}
    mixed: set[tuple[str, str]] = set()
    for i, p in enumerate(probs):
        if p is None:
            continue
        top = max(p)
        if abs(conf[i] - top) > CONF_TOL:
            raise located(f"confidence {conf[i]!r} is not max(probs) = {top!r} (tolerance {CONF_TOL})",
                          path=source, line=_row_line(df, i), field="confidence")
        lab = labels[i]
        if lab is not None:
            gold = p[lab]
            others = max(p[:lab] + p[lab + 1:], default=-1.0)
            says = correct[i]
            if says and gold < top - CONF_TOL:
                raise located(f"correct is true but label {lab} is not the most probable class",
                              path=source, line=_row_line(df, i), field="correct")
            if not says and gold > others + CONF_TOL:
                raise located(f"correct is false but label {lab} is the most probable class",
                              path=source, line=_row_line(df, i), field="correct")
        key = (tasks[i], methods[i])
        first = sizes.setdefault(key, (len(p), i))
        if first[0] != len(p) and key not in mixed:
            mixed.add(key)
            warnings.warn(f"{source}: {_where(df, i)}: {len(p)} classes, but task {quote(key[0])} method "
                          f"{quote(key[1])} has {first[0]}-class rows (first at {_where(df, first[1])}); "
                          "class-wise metrics (multi-class Brier, SCE, ...) are skipped for it",
                          MixedClassesWarning, stacklevel=2)


class MixedClassesWarning(UserWarning):
    """A task x method mixes class counts (legitimate for variable-choice tasks), so class-wise metrics
    are skipped: said out loud rather than dropped silently."""


def _check_unique_items(df: pd.DataFrame, source: str) -> None:
    """Each item_id at most once per model x revision x task x method (a duplicate would count one item
    twice; one file may hold several models, as ``from-lm-eval A B`` writes)."""
    dup = df.duplicated(["model", "revision", "task", "method", "item_id"], keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise located(f"item_id {quote(df['item_id'].iat[i])} appears twice for task {quote(df['task'].iat[i])} "
                      f"method {quote(df['method'].iat[i])}; drop the duplicate rows",
                      path=source, line=_row_line(df, i), field="item_id")


def _where(df: pd.DataFrame, i: int) -> str:
    line = _row_line(df, i)
    return f"line {line}" if line is not None else f"row {i}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def read_records(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a records file (.jsonl/.json, .csv, .parquet)."""
    path = Path(path)
    check_regular_file(path, what="records file")  # no FIFOs (they block), no /dev/zero, bounded size
    suffix = path.suffix.lower()
    if suffix == ".parquet" and path.name == RECORDS_FILE and (path.parent / "manifest.json").is_file():
        from calibench.runfolder import verify_folder

        verify_folder(path.parent)  # a run folder's records must be the ones its manifest names
    fast = _read_columnar(path, suffix)
    if fast is not None:
        return fast
    if suffix in (".jsonl", ".json", ".ndjson"):
        df = _read_jsonl(path)
    elif suffix == ".csv":
        try:
            df = pd.read_csv(path)
        except Exception as exc:  # pandas raises many types for broken CSV
            raise CalibenchError(f"{path}: cannot parse CSV: {exc}") from exc
        df["_line"] = np.arange(len(df)) + 2  # header is line 1
    elif suffix == ".parquet":
        try:
            df = pd.read_parquet(path)
        except Exception as exc:
            raise CalibenchError(f"{path}: cannot read Parquet: {exc}") from exc
    else:
        raise CalibenchError(f"{path}: unknown records format '{suffix}' (use .jsonl, .csv or .parquet)")
    return with_arrow_probs(normalize(df, source=str(path), text_source=suffix == ".csv"))


def with_arrow_probs(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its probs column as one Arrow ``list<double>`` array where every row has probs (as
    the columnar reader gives it), so both paths of ``read_records`` return the same frame; rows
    without probs keep the column as lists and None."""
    import pyarrow as pa

    probs = df["probs"]
    if isinstance(probs.dtype, pd.ArrowDtype) or any(p is None for p in probs):
        return df
    arrow = pa.array(list(probs), type=pa.list_(pa.float64()))
    return df.assign(probs=pd.arrays.ArrowExtensionArray(arrow))


def arrow_probs(probs: pd.Series) -> Any | None:
    """The probs column as one ``pyarrow.ListArray`` where it is stored in Arrow with a list in every
    row (what ``read_records`` gives for such files), else None (lists and None per row)."""
    import pyarrow as pa

    if not isinstance(probs.dtype, pd.ArrowDtype):
        return None
    arrow = probs.array.__arrow_array__()
    if isinstance(arrow, pa.ChunkedArray):
        arrow = arrow.combine_chunks()
    if arrow.null_count or not (pa.types.is_list(arrow.type) or pa.types.is_large_list(arrow.type)):
        return None
    return arrow


def class_sizes(probs: pd.Series) -> np.ndarray | None:
    """Class count of every row (int64), or None if some row has no probs. From the Arrow offsets
    where the column is Arrow-backed: no Python object per row."""
    arrow = arrow_probs(probs)
    if arrow is not None:
        return np.diff(arrow.offsets.to_numpy()).astype(np.int64, copy=False)
    if any(p is None for p in probs):
        return None
    return np.fromiter((len(p) for p in probs), dtype=np.int64, count=len(probs))


def probs_rows(probs: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """(every class probability, row after row, as float64; class count of every row), or None if
    some row has no probs. An Arrow-backed column is read from its buffers without a copy."""
    arrow = arrow_probs(probs)
    if arrow is not None:
        sizes = np.diff(arrow.offsets.to_numpy()).astype(np.int64, copy=False)
        return arrow.flatten().to_numpy().astype(np.float64, copy=False), sizes
    sizes = class_sizes(probs)
    if sizes is None:
        return None
    rows = list(probs)
    if not rows:
        return np.zeros(0), sizes
    return np.concatenate([np.asarray(p, dtype=float) for p in rows]), sizes


def _read_columnar(path: Path, suffix: str) -> pd.DataFrame | None:
    """The fast path of ``read_records`` (``calibench.columnar``): whole columns parsed and checked at
    once; None sends the file to the row reader, which accepts it the same way or names the bad line."""
    from calibench import columnar

    return columnar.read_frame(path, suffix, columns=COLUMNS, defaults=_DEFAULTS, prob_tol=PROB_TOL,
                               conf_tol=CONF_TOL, extra_to_json=_extra_to_json, text_source=suffix == ".csv")


def write_records(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Atomically write records as Parquet (probs as list<double>, extra as JSON text)."""
    out = df[list(COLUMNS)].copy()
    out["label"] = out["label"].astype("Int64")
    write_with(path, lambda tmp: out.to_parquet(tmp, index=False))


def arrow_schema() -> Any:
    """The Parquet schema of records.parquet (the same types ``write_records`` gets from pandas)."""
    import pyarrow as pa

    return pa.schema([
        ("model", pa.string()), ("revision", pa.string()), ("task", pa.string()), ("method", pa.string()),
        ("item_id", pa.string()), ("probs", pa.list_(pa.float64())), ("label", pa.int64()),
        ("pred", pa.string()), ("confidence", pa.float64()), ("correct", pa.bool_()), ("extra", pa.string()),
    ])


class RecordWriter:
    """Stream contract-shaped record frames into one Parquet file, one row group per ``write``.

    Rows go to a temporary file beside ``path`` (``calibench.io.atomic_path``); ``close()`` renames it
    over ``path``, so a crash or an error (``abort()``, or leaving the ``with`` block by an exception)
    never leaves a half-written table, and memory does not grow with the number of rows written.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.schema = arrow_schema()
        self.n_rows = 0
        self._stack = ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        try:
            self._writer = pq.ParquetWriter(tmp, self.schema)
        except BaseException:
            self._stack.close()
            raise
        self._open = True

    def write(self, frame: pd.DataFrame) -> None:
        """Append one frame (every ``COLUMNS`` column; ``label`` may be nullable Int64)."""
        import pyarrow as pa

        if not self._open:
            raise CalibenchError(f"{self.path}: record writer is closed")
        table = pa.Table.from_pandas(frame[list(COLUMNS)], schema=self.schema, preserve_index=False)
        self._writer.write_table(table)
        self.n_rows += len(frame)

    def close(self) -> Path:
        """Finish the file and move it into place; returns ``path``."""
        if self._open:
            self._open = False
            try:
                self._writer.close()
            except BaseException as exc:
                self._stack.__exit__(type(exc), exc, exc.__traceback__)
                raise
            self._stack.close()
        return self.path

    def abort(self) -> None:
        """Drop what was written: ``path`` is left as it was (absent, or the previous file)."""
        if self._open:
            self._open = False
            try:
                self._writer.close()
            finally:
                err = CalibenchError(f"{self.path}: writing aborted")
                self._stack.__exit__(CalibenchError, err, None)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def load_run_records(run: str | os.PathLike[str]) -> pd.DataFrame:
    """Records of a run folder (or a records file) without per-row revalidation (they were validated
    when written); ``label`` comes back as nullable Int64."""
    from calibench.runfolder import verify_folder

    path = Path(run)
    if path.is_dir():
        path = path / RECORDS_FILE
    if not path.exists():
        raise CalibenchError(f"{run}: not a calibench run (no {RECORDS_FILE})")
    if path.suffix.lower() != ".parquet":
        return read_records(path)
    if path.name == RECORDS_FILE:
        verify_folder(path.parent)  # a run folder's files must match its manifest (never a mix of two runs)
    check_regular_file(path, what="records file")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for broken files
        raise CalibenchError(f"{path}: cannot read Parquet: {exc}") from exc
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise CalibenchError(f"{path}: missing column(s) {missing}")
    df["label"] = df["label"].astype("Int64")
    df["probs"] = [None if p is None else list(p) for p in df["probs"]]
    return df[list(COLUMNS)]


def _read_jsonl(path: Path) -> pd.DataFrame:
    rows = [{**obj, "_line": lineno} for lineno, obj in read_jsonl_lines(path)]
    if not rows:
        raise CalibenchError(f"{path}: no records")
    for col in REQUIRED:  # absent from some rows only: name the row (pandas would fill it with NaN)
        if any(col in r for r in rows) and (lacking := next((r for r in rows if col not in r), None)):
            raise located(f"missing required field '{col}'", path=path, line=lacking["_line"])
    return pd.DataFrame(rows)


def _row_line(df: pd.DataFrame, i: int) -> int | None:
    if "_line" in df.columns:
        return int(df["_line"].iloc[i])
    return None


def _as_bool(v: Any, source: str, line: int | None) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)) and v in (0, 1):
        return bool(v)
    if isinstance(v, (float, np.floating)) and v in (0.0, 1.0):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "false", "0", "1"):
        return v.strip().lower() in ("true", "1")
    raise located(f"correct must be true/false or 0/1, got {_show(v)}", path=source, line=line, field="correct")


def _is_null(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return v is pd.NA


def _as_probs(v: Any, source: str, line: int | None, text_source: bool = False) -> list[float] | None:
    if _is_null(v):
        return None
    if isinstance(v, str) and not text_source:
        raise located(f"probs must be a list of numbers, got a string {_show(v)}", path=source, line=line,
                      field="probs")
    if isinstance(v, str):
        if not v.strip():
            return None
        try:
            v = json.loads(v)
        except json.JSONDecodeError as exc:
            raise located("probs is not a JSON list", path=source, line=line, field="probs") from exc
        if v is None:
            return None
    if isinstance(v, (list, tuple, np.ndarray)) and any(isinstance(x, (bool, np.bool_, str)) for x in v):
        raise located(f"probs must be a list of numbers, got {_show(v)}", path=source, line=line, field="probs")
    try:
        arr = np.asarray(v, dtype=float)
    except (TypeError, ValueError) as exc:
        raise located(f"probs must be a list of numbers, got {_show(v)}", path=source, line=line, field="probs") from exc
    if arr.ndim != 1:
        raise located("probs must be a flat list of numbers", path=source, line=line, field="probs")
    if arr.size < 2:
        raise located("probs needs at least two classes", path=source, line=line, field="probs")
    if not np.all(np.isfinite(arr)) or (arr < 0).any() or (arr > 1).any():
        raise located("probs must be finite and in [0, 1]", path=source, line=line, field="probs")
    if abs(arr.sum() - 1.0) > PROB_TOL:
        raise located(f"probs must sum to 1 (tolerance {PROB_TOL}), sums to {arr.sum():.6f}",
                      path=source, line=line, field="probs")
    return arr.tolist()


def _as_label(v: Any, probs: list[float] | None, source: str, line: int | None) -> int | None:
    if _is_null(v):
        if probs is not None:
            raise located("label is required where probs is given", path=source, line=line, field="label")
        return None
    try:
        f = float(v)
    except (TypeError, ValueError) as exc:
        raise located(f"label must be an integer, got {_show(v)}", path=source, line=line, field="label") from exc
    if not f.is_integer():
        raise located(f"label must be an integer, got {_show(v)}", path=source, line=line, field="label")
    label = int(f)
    if probs is None:
        return label
    if not 0 <= label < len(probs):
        raise located(f"label {label} out of range for {len(probs)} classes", path=source, line=line, field="label")
    return label


def _show(v: Any) -> str:
    """repr() of a value as the user wrote it, cut short (``calibench.errors.quote``)."""
    return quote(v)


def _extra_to_json(v: Any) -> str:
    if _is_null(v):
        return "{}"
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True, default=float)


def probs_matrix(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """Stack ``probs``/``label`` into (N x K, N) arrays if every row has the same class count."""
    if arrow_probs(df["probs"]) is None:  # lists: stacked as numpy stacks them
        if any(p is None for p in df["probs"]):
            return None
        if len({len(p) for p in df["probs"]}) != 1:
            return None
        return np.asarray(list(df["probs"]), dtype=float), df["label"].to_numpy(dtype=int)
    found = probs_rows(df["probs"])
    if found is None:
        return None
    values, sizes = found
    if sizes.size == 0 or (sizes != sizes[0]).any():
        return None
    return values.reshape(sizes.size, int(sizes[0])), df["label"].to_numpy(dtype=int)
