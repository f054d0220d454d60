"""Records files read as columns: pyarrow parses, numpy validates whole columns at once.

``calibench.records.read_records`` validates row by row so that an error names its line; on a
million-record CLM or MMLU run that costs minutes and gigabytes of Python objects. This reader is
its fast path: pyarrow's JSONL / CSV / Parquet readers give typed columns, and every check of the
contract (finite confidences in [0, 1], boolean correctness, probability rows that sum to 1, labels
in range) runs once per column. It only *accepts*: any file it cannot prove valid, or whose values
need the row reader's coercions (numbers written as strings, open-ended ``extra`` objects, mixed
class sets), returns ``None``, and the row reader then either accepts it the same way or names the
offending line. So the two paths give identical frames on every file the fast one takes (tested).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_TEXT_COLUMNS = ("model", "revision", "task", "method", "item_id", "pred")


def read_table(path: Path, suffix: str) -> Any | None:
    """The file as a ``pyarrow.Table``, or ``None`` where pyarrow cannot parse it cleanly."""
    import pyarrow as pa

    try:
        if suffix in (".jsonl", ".json", ".ndjson"):
            import pyarrow.json as pj

            return pj.read_json(path)
        if suffix == ".csv":
            import pyarrow.csv as pc

            # pandas' NA spellings, so that empty and "NA" cells mean what the row reader takes them for
            nulls = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
            return pc.read_csv(path, convert_options=pc.ConvertOptions(null_values=nulls,
                                                                       strings_can_be_null=True))
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError):
        return None
    return None


def _is_text(t: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _text(column: Any, n: int, default: str) -> Any | None:
    """A provenance column as strings (nulls as ""), or None if its type needs the row reader.

    Strings stay in Arrow: pandas' default string dtype is Arrow-backed, so ``to_pandas`` hands the
    buffers over instead of building (and then re-encoding) a million Python strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column is None:
        return [default] * n
    if pa.types.is_null(column.type):
        return [""] * n
    if pa.types.is_integer(column.type):
        column = pc.cast(column, pa.string())
    elif not _is_text(column.type):
        return None
    return _strings(pc.fill_null(column, ""))


def _strings(column: Any) -> Any:
    """A text column without nulls as the array pandas would make of its strings (Arrow-backed where
    that is pandas' string dtype, as in pandas 3; a list of str otherwise)."""
    converted = column.to_pandas()
    return converted.array if converted.dtype == pd.Series([""]).dtype else column.to_pylist()


def _numbers(column: Any) -> np.ndarray | None:
    """A numeric column without nulls as float64, or None (bools, strings and nulls need the row reader)."""
    import pyarrow as pa

    t = column.type
    if column.null_count or not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        return None
    return column.to_numpy().astype(np.float64, copy=False)


def _correct(column: Any) -> np.ndarray | None:
    import pyarrow as pa

    if column.null_count:
        return None
    if pa.types.is_boolean(column.type):
        return column.to_numpy().astype(bool)
    values = _numbers(column)
    if values is None or not np.isin(values, (0.0, 1.0)).all():
        return None
    return values.astype(bool)


def _plain_struct(column: Any) -> bool:
    """Whether ``extra`` objects read back exactly as ``json.loads`` gives them.

    pyarrow fills a key that a row lacks with null, and stores a number column as double once any row
    has a fraction, so 1 would come back as 1.0: only flat objects whose every row has every key,
    with no nulls, and whose float fields hold no whole numbers are taken here.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count:
        return False
    for i in range(column.type.num_fields):
        field = pc.struct_field(column, [i])
        t = field.type
        if field.null_count:
            return False
        if pa.types.is_floating(t):
            values = field.to_numpy()
            if (values == np.floor(values)).any():
                return False
        elif not (pa.types.is_integer(t) or pa.types.is_boolean(t) or _is_text(t)):
            return False
    return True


def _prob_lists(column: Any, text_source: bool) -> Any | None:
    """The probs column as one ``list<double>`` array (JSON text parsed in CSV only; nulls kept), or None."""
    import pyarrow as pa

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if _is_text(column.type):
        if not text_source:
            return None  # JSON text where a list belongs: the row reader refuses it by line
        try:
            column = pa.array([None if v is None else json.loads(v) for v in column.to_pylist()])
        except (ValueError, pa.ArrowException):
            return None
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        return None
    if not (pa.types.is_floating(column.type.value_type) or pa.types.is_integer(column.type.value_type)):
        return None
    return column.cast(pa.list_(pa.float64()))


def _labels(column: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(integer labels, null mask) of the label column, or None if a label is not a whole number."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = column.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        return None
    null = pc.is_null(column).to_numpy(zero_copy_only=False)
    values = pc.fill_null(column, 0).to_numpy().astype(np.float64, copy=False)
    if not (np.isfinite(values).all() and np.array_equal(values, np.floor(values))):
        return None
    return values.astype(np.int64), null


@dataclass
class _Classes:
    """The class columns, checked row by row, and what the cross-column rules read."""

    probs: list            # lists, or None per row
    label: Any             # nullable Int64
    values: np.ndarray | None = None  # every class probability, row after row (rows with probs only)
    starts: np.ndarray | None = None  # where each row with probs starts in ``values``
    sizes: np.ndarray | None = None   # class counts of those rows
    rows: np.ndarray | None = None    # their row numbers
    labels: np.ndarray | None = None  # their labels


def _classes(probs: Any, label: Any, n: int, prob_tol: float, text_source: bool) -> _Classes | None:
    """(probs as lists or None per row, labels as nullable Int64), every row checked, or None.

    As in the row reader: a row with probs needs a label in range; a row without probs may carry a
    label (an open class set's gold index) or none.
    """
    if label is None or label.null_count == n:
        if probs is None or probs.null_count == n:
            return _Classes([None] * n, pd.array([None] * n, dtype="Int64"))
        return None  # probs without labels: the row reader names the row
    labels = _labels(label)
    if labels is None:
        return None
    ids, label_null = labels
    if probs is None or probs.null_count == n:
        has = np.zeros(n, dtype=bool)
        lists = None
    else:
        lists = _prob_lists(probs, text_source)
        if lists is None or lists.values.null_count:
            return None
        has = ~lists.is_null().to_numpy(zero_copy_only=False)
    if (has & label_null).any():
        return None
    if has.any():
        offsets = lists.offsets.to_numpy()
        sizes = np.diff(offsets)
        if (sizes[has] < 2).any() or (sizes[~has] != 0).any():
            return None
        first = offsets[0]
        values = lists.values.to_numpy()[first : offsets[-1]]
        if not (np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()):
            return None
        sums = np.add.reduceat(values, offsets[:-1][has] - first)  # null rows hold no values, so segments are rows
        if (np.abs(sums - 1.0) > prob_tol).any():
            return None
        if (ids[has] < 0).any() or (ids[has] >= sizes[has]).any():
            return None
    if lists is None:
        out_probs = [None] * n
    elif has.all() and (sizes == sizes[0]).all():  # one class count: rows straight from the values
        out_probs = values.reshape(n, int(sizes[0])).tolist()
    else:
        out_probs = lists.to_pylist()
    out_labels = pd.arrays.IntegerArray(np.where(label_null, 0, ids), label_null)
    found = _Classes(out_probs, out_labels)
    if has.any():
        found.values, found.rows = values, np.flatnonzero(has)
        found.starts, found.sizes, found.labels = offsets[:-1][has] - first, sizes[has], ids[has]
    return found


def _duplicated_keys(keys: pd.DataFrame) -> bool:
    """Whether a (model, revision, task, method, item_id) key repeats. One file usually holds one
    model x revision x task x method, and then only ``item_id`` has to be checked (one hash pass)."""
    constant = [c for c in ("model", "revision", "task", "method") if keys[c].nunique(dropna=False) <= 1]
    if len(constant) == 4:
        return bool(keys["item_id"].duplicated().any())
    return bool(keys.duplicated().any())


def _contract_holds(out: dict[str, Any], classes: _Classes, conf_tol: float) -> bool:
    """The cross-column rules of ``records.check_contract``, on whole columns: confidence is
    max(probs), ``correct`` agrees with probs and label, one class count per task x method (else the
    row reader warns), each item once per model x revision x task x method."""
    keys = pd.DataFrame({c: out[c] for c in ("model", "revision", "task", "method", "item_id")})
    if _duplicated_keys(keys):
        return False
    if classes.values is None:
        return True
    values, starts, rows = classes.values, classes.starts, classes.rows
    top = np.maximum.reduceat(values, starts)
    if (np.abs(out["confidence"][rows] - top) > conf_tol).any():
        return False
    gold_at = starts + classes.labels
    gold = values[gold_at]
    rest = values.copy()
    rest[gold_at] = -1.0
    others = np.maximum.reduceat(rest, starts)
    says = out["correct"][rows]
    if (says & (gold < top - conf_tol)).any() or (~says & (gold > others + conf_tol)).any():
        return False
    groups = keys.iloc[rows][["task", "method"]].assign(k=classes.sizes)
    return bool((groups.groupby(["task", "method"], sort=False)["k"].nunique() == 1).all())


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a frame's million row lists are made (none holds a cycle).

    Each 700 new lists trigger a collection that walks the young ones, and the older generations are
    walked again as the heap grows: with it on, building 10^6 probs lists took 3.1 s instead of 0.3 s."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def frame(table: Any, *, columns: tuple[str, ...], defaults: dict[str, Any], prob_tol: float, conf_tol: float,
          extra_to_json: Any, text_source: bool = False) -> pd.DataFrame | None:
    """The contract frame of ``table`` if every row passes the contract's checks, else None."""
    with _collector_paused():
        return _frame(table, columns=columns, defaults=defaults, prob_tol=prob_tol, conf_tol=conf_tol,
                      extra_to_json=extra_to_json, text_source=text_source)


def _frame(table: Any, *, columns: tuple[str, ...], defaults: dict[str, Any], prob_tol: float, conf_tol: float,
           extra_to_json: Any, text_source: bool) -> pd.DataFrame | None:
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    names = set(table.column_names)
    if n == 0 or not {"confidence", "correct"} <= names:
        return None
    get = {c: table.column(c) for c in names}
    conf = _numbers(get["confidence"])
    if conf is None or not (np.isfinite(conf).all() and (conf >= 0).all() and (conf <= 1).all()):
        return None
    correct = _correct(get["correct"])
    if correct is None:
        return None
    out: dict[str, Any] = {}
    for c in _TEXT_COLUMNS:
        values = _text(get.get(c), n, str(defaults.get(c, "")))
        if values is None:
            return None
        out[c] = values
    if "item_id" not in names:
        out["item_id"] = [str(i) for i in range(n)]
    extra = get.get("extra")
    if extra is None or pa.types.is_null(extra.type):
        out["extra"] = ["{}"] * n
    elif _is_text(extra.type):  # JSON text is kept as written; a missing one is an empty object
        out["extra"] = _strings(pc.fill_null(extra, "{}"))
    elif pa.types.is_struct(extra.type) and extra.type.num_fields == 0 and not extra.null_count:
        out["extra"] = ["{}"] * n
    elif pa.types.is_struct(extra.type) and _plain_struct(extra):
        out["extra"] = [extra_to_json(v) for v in extra.to_pylist()]
    else:
        return None
    classes = _classes(get.get("probs"), get.get("label"), n, prob_tol, text_source)
    if classes is None:
        return None
    out["probs"], out["label"] = classes.probs, classes.label
    out["confidence"] = conf
    out["correct"] = correct
    if not _contract_holds(out, classes, conf_tol):
        return None
    return pd.DataFrame({c: out[c] for c in columns})
