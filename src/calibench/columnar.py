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
    """A provenance column as an Arrow string array without nulls (nulls as ""), or None if its type
    needs the row reader. An absent column is ``default`` repeated, still in Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column is None:
        return pa.repeat(default, n)
    if pa.types.is_null(column.type):
        return pa.repeat("", n)
    if pa.types.is_integer(column.type):
        column = pc.cast(column, pa.string())
    elif not _is_text(column.type):
        return None
    return pc.fill_null(column, "")


def _strings(column: Any) -> Any:
    """A text column without nulls as the array pandas would make of its strings (Arrow-backed where
    that is pandas' string dtype, as in pandas 3; a list of str otherwise).

    Strings stay in Arrow: pandas' default string dtype is Arrow-backed, so ``to_pandas`` hands the
    buffers over instead of building (and then re-encoding) a million Python strings."""
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

    probs: Any             # Arrow-backed list<double> (no row without probs), else lists or None per row
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
        del probs  # the parsed column, now copied into ``lists``: freed here
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
        out_probs: Any = [None] * n
    elif has.all():  # every row has probs: the column stays one Arrow list array (records.arrow_probs)
        out_probs = pd.arrays.ArrowExtensionArray(lists)
    else:
        out_probs = lists.to_pylist()
    out_labels = pd.arrays.IntegerArray(np.where(label_null, 0, ids), label_null)
    found = _Classes(out_probs, out_labels)
    if has.any():
        found.values, found.rows = values, np.flatnonzero(has)
        found.starts, found.sizes, found.labels = offsets[:-1][has] - first, sizes[has], ids[has]
    return found


def _distinct(column: Any) -> int:
    import pyarrow.compute as pc

    return int(pc.count_distinct(column, mode="all").as_py())


def _duplicated_keys(keys: dict[str, Any], n: int) -> bool:
    """Whether a (model, revision, task, method, item_id) key repeats, found by Arrow on the string
    buffers (no Python object per row): sort, then compare neighbours. One file usually holds one
    model x revision x task x method, and then only ``item_id`` is sorted.

    Why a sort rather than a hash (``count_distinct``): on 10^7 ids it took 0.8 s and 220 MB against
    6.3 s and 640 MB (bench ids, see docs/performance.md)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if n < 2:
        return False
    names = [c for c in ("model", "revision", "task", "method") if _distinct(keys[c]) > 1] + ["item_id"]
    table = pa.table({c: keys[c] for c in names})
    order = pc.sort_indices(table, sort_keys=[(c, "ascending") for c in names])
    same = None
    for c in names:
        ranked = table.column(c).take(order).combine_chunks()
        equal = pc.equal(ranked.slice(1), ranked.slice(0, n - 1))
        same = equal if same is None else pc.and_(same, equal)
    return bool(pc.any(same).as_py())


_BLOCK_ROWS = 1 << 20  # rows whose class probabilities are checked at once (bounded temporaries)


def _rows_agree(values: np.ndarray, starts: np.ndarray, labels: np.ndarray, confidence: np.ndarray,
                correct: np.ndarray, conf_tol: float) -> bool:
    """Per row with probs: confidence is max(probs) and ``correct`` agrees with probs and label, checked
    a block of rows at a time, so the temporaries (a copy of the values among them) stay small."""
    m = starts.shape[0]
    for a in range(0, m, _BLOCK_ROWS):
        b = min(a + _BLOCK_ROWS, m)
        lo, hi = int(starts[a]), int(starts[b]) if b < m else values.shape[0]
        v, at = values[lo:hi], starts[a:b] - lo
        top = np.maximum.reduceat(v, at)
        if (np.abs(confidence[a:b] - top) > conf_tol).any():
            return False
        gold_at = at + labels[a:b]
        gold = v[gold_at]
        rest = v.copy()
        rest[gold_at] = -1.0
        others = np.maximum.reduceat(rest, at)
        says = correct[a:b]
        if (says & (gold < top - conf_tol)).any() or (~says & (gold > others + conf_tol)).any():
            return False
    return True


def _contract_holds(task_method: dict[str, Any], confidence: np.ndarray, correct: np.ndarray,
                    classes: _Classes, conf_tol: float) -> bool:
    """The cross-column rules of ``records.check_contract`` on whole columns, but the item rule
    (``_duplicated_keys``, checked first): confidence is max(probs), ``correct`` agrees with probs and
    label, one class count per task x method (else the row reader warns)."""
    import pyarrow as pa

    if classes.values is None:
        return True
    rows, sizes = classes.rows, classes.sizes
    assert classes.starts is not None and classes.labels is not None and rows is not None and sizes is not None
    if not _rows_agree(classes.values, classes.starts, classes.labels, confidence[rows], correct[rows], conf_tol):
        return False
    if (sizes == sizes[0]).all():
        return True
    at = pa.array(rows)
    groups = pa.table({"task": task_method["task"].take(at), "method": task_method["method"].take(at), "k": sizes})
    counts = groups.group_by(["task", "method"]).aggregate([("k", "count_distinct")])
    return bool((counts.column("k_count_distinct").to_numpy() == 1).all())


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


def read_frame(path: Path, suffix: str, **options: Any) -> pd.DataFrame | None:
    """``frame`` of the file at ``path``, or None. The table itself is dropped once its columns are
    taken, so each parsed column is freed as soon as it is converted (a lower peak than ``frame``)."""
    table = read_table(path, suffix)
    if table is None:
        return None
    n, get = table.num_rows, {c: table.column(c) for c in table.column_names}
    del table
    with _collector_paused():
        return _frame(get, n, **options)


def frame(table: Any, *, columns: tuple[str, ...], defaults: dict[str, Any], prob_tol: float, conf_tol: float,
          extra_to_json: Any, text_source: bool = False) -> pd.DataFrame | None:
    """The contract frame of ``table`` if every row passes the contract's checks, else None."""
    with _collector_paused():
        return _frame({c: table.column(c) for c in table.column_names}, table.num_rows, columns=columns,
                      defaults=defaults, prob_tol=prob_tol, conf_tol=conf_tol, extra_to_json=extra_to_json,
                      text_source=text_source)


_KEYS = ("model", "revision", "task", "method", "item_id")


def _frame(get: dict[str, Any], n: int, *, columns: tuple[str, ...], defaults: dict[str, Any], prob_tol: float,
           conf_tol: float, extra_to_json: Any, text_source: bool = False) -> pd.DataFrame | None:
    """The contract frame of the parsed columns ``get``, taken out of it one by one (each parsed column
    can be freed once converted), or None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = set(get)
    if n == 0 or not {"confidence", "correct"} <= names:
        return None
    conf = _numbers(get.pop("confidence"))
    if conf is None or not (np.isfinite(conf).all() and (conf >= 0).all() and (conf <= 1).all()):
        return None
    correct = _correct(get.pop("correct"))
    if correct is None:
        return None
    text: dict[str, Any] = {}
    for c in _TEXT_COLUMNS:
        found = _text(get.pop(c, None), n, str(defaults.get(c, "")))
        if found is None:
            return None
        text[c] = found
    if "item_id" not in names:  # the row number, as the row reader numbers rows
        text["item_id"] = pc.cast(pa.array(np.arange(n, dtype=np.int64)), pa.string())
    if _duplicated_keys({c: text[c] for c in _KEYS}, n):
        return None
    task_method = {c: text[c] for c in ("task", "method")}  # for the class-count rule
    out: dict[str, Any] = {c: _strings(text.pop(c)) for c in _TEXT_COLUMNS}
    extra = get.pop("extra", None)
    if extra is None or pa.types.is_null(extra.type):
        out["extra"] = _strings(pa.repeat("{}", n))
    elif _is_text(extra.type):  # JSON text is kept as written; a missing one is an empty object
        out["extra"] = _strings(pc.fill_null(extra, "{}"))
    elif pa.types.is_struct(extra.type) and extra.type.num_fields == 0 and not extra.null_count:
        out["extra"] = _strings(pa.repeat("{}", n))
    elif pa.types.is_struct(extra.type) and _plain_struct(extra):
        out["extra"] = [extra_to_json(v) for v in extra.to_pylist()]
    else:
        return None
    del extra
    classes = _classes(get.pop("probs", None), get.pop("label", None), n, prob_tol, text_source)
    if classes is None:
        return None
    out["probs"], out["label"] = classes.probs, classes.label
    out["confidence"] = conf
    out["correct"] = correct
    if not _contract_holds(task_method, conf, correct, classes, conf_tol):
        return None
    return pd.DataFrame({c: out[c] for c in columns})
