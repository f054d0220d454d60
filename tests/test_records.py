"""The shared record reader (calibench.records): every format reads to the same table, and every kind
of bad input is a CalibenchError that names the file, the line and the field, never a silent number."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from calibench.errors import CalibenchError
from calibench.records import COLUMNS, make_records, normalize, probs_matrix, read_records, write_records

ROWS = [
    {"task": "t", "method": "choice", "item_id": "a", "probs": [0.7, 0.2, 0.1], "label": 0, "pred": "A",
     "confidence": 0.7, "correct": True},
    {"task": "t", "method": "choice", "item_id": "b", "probs": [0.1, 0.6, 0.3], "label": 2, "pred": "B",
     "confidence": 0.6, "correct": False},
    {"task": "t", "method": "choice", "item_id": "c", "probs": [0.25, 0.25, 0.5], "label": 2, "pred": "C",
     "confidence": 0.5, "correct": True},
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _csv(path: Path, rows: list[dict]) -> Path:
    df = pd.DataFrame(rows)
    if "probs" in df:
        df["probs"] = [json.dumps(p) for p in df["probs"]]
    df.to_csv(path, index=False)
    return path


def _error(path: Path) -> str:
    with pytest.raises(CalibenchError) as info:
        read_records(path)
    return str(info.value)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_formats_read_to_the_same_table(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"r.{fmt}"
    if fmt == "jsonl":
        _jsonl(path, ROWS)
    elif fmt == "csv":
        _csv(path, ROWS)
    else:
        write_records(make_records(ROWS), path)
    df = read_records(path)
    assert list(df.columns) == list(COLUMNS)
    assert df["confidence"].tolist() == [0.7, 0.6, 0.5]
    assert df["correct"].tolist() == [True, False, True]
    assert df["label"].tolist() == [0, 2, 2]
    probs, labels = probs_matrix(df)
    np.testing.assert_allclose(probs, [r["probs"] for r in ROWS])
    assert labels.tolist() == [0, 2, 2]
    assert df["item_id"].tolist() == ["a", "b", "c"]


def test_minimal_columns_get_defaults(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "r.jsonl", [{"confidence": 0.9, "correct": 1}, {"confidence": 0.0, "correct": "false"}])
    df = read_records(path)
    assert df["correct"].tolist() == [True, False]
    assert df["item_id"].tolist() == ["0", "1"]
    assert set(df["task"]) == {"task"} and set(df["method"]) == {"method"}
    assert df["probs"].tolist() == [None, None]
    assert probs_matrix(df) is None


def test_parquet_roundtrip_keeps_nulls_and_extra(tmp_path: Path) -> None:
    df = make_records([{**ROWS[0], "extra": {"ll": [-1.5, -2.0]}}, {"confidence": 0.3, "correct": False}])
    write_records(df, tmp_path / "r.parquet")
    back = read_records(tmp_path / "r.parquet")
    assert back["probs"].iloc[1] is None
    assert pd.isna(back["label"].iloc[1])
    assert json.loads(back["extra"].iloc[0]) == {"ll": [-1.5, -2.0]}
    assert probs_matrix(back) is None  # one row lacks probs


def test_blank_lines_are_skipped_but_line_numbers_stay_true(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"confidence": 0.5, "correct": 1}\n\n{"confidence": 1.5, "correct": 1}\n')
    msg = _error(path)
    assert msg.startswith(f"{path}:3:")
    assert "confidence" in msg and "1.5" in msg


def test_broken_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"confidence": 0.5, "correct": 1}\n{"confidence": 0.4, "correct": \n')
    msg = _error(path)
    assert msg.startswith(f"{path}:2:")
    assert "invalid JSON" in msg


def test_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"confidence": 0.5, "correct": 1}\n[0.5, 1]\n')
    assert _error(path).startswith(f"{path}:2:")


@pytest.mark.parametrize("value", [1.2, -0.1, "NaN", "Infinity", None, "high"])
def test_bad_confidence(tmp_path: Path, value: object) -> None:
    # NaN/Infinity are written as bare JSON tokens, which Python's json accepts.
    line = json.dumps({"confidence": value, "correct": 1})
    if value in ("NaN", "Infinity"):
        line = line.replace(f'"{value}"', value)
    path = tmp_path / "r.jsonl"
    path.write_text('{"confidence": 0.5, "correct": 0}\n' + line + "\n")
    msg = _error(path)
    assert msg.startswith(f"{path}:2: field 'confidence':")


def test_bad_confidence_in_csv_counts_the_header_line(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("confidence,correct\n0.6,1\n0.4,0\n1.7,0\n")
    assert _error(path).startswith(f"{path}:4: field 'confidence':")


def test_bad_confidence_in_parquet_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    pd.DataFrame({"confidence": [0.5, 1.5], "correct": [1, 0]}).to_parquet(path)
    msg = _error(path)
    assert str(path) in msg and "confidence" in msg and "1.5" in msg


@pytest.mark.parametrize("value", [2, "yes", None])
def test_bad_correct(tmp_path: Path, value: object) -> None:
    path = _jsonl(tmp_path / "r.jsonl", [{"confidence": 0.5, "correct": 1}, {"confidence": 0.5, "correct": value}])
    assert _error(path).startswith(f"{path}:2: field 'correct':")


def test_probs_not_summing_to_one(tmp_path: Path) -> None:
    rows = [ROWS[0], {**ROWS[1], "probs": [0.5, 0.3, 0.1]}]
    path = _jsonl(tmp_path / "r.jsonl", rows)
    msg = _error(path)
    assert msg.startswith(f"{path}:2: field 'probs':")
    assert "sum to 1" in msg and "0.9" in msg


def test_probs_within_tolerance_are_accepted(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "r.jsonl", [{**ROWS[0], "probs": [0.7, 0.2, 0.10005]}])
    assert read_records(path)["probs"].iloc[0][2] == pytest.approx(0.10005)


def test_probs_not_summing_to_one_in_csv(tmp_path: Path) -> None:
    path = _csv(tmp_path / "r.csv", [ROWS[0], ROWS[1], {**ROWS[2], "probs": [0.6, 0.6, -0.2]}])
    assert _error(path).startswith(f"{path}:4: field 'probs':")


@pytest.mark.parametrize("label", [3, -1])
def test_label_out_of_range(tmp_path: Path, label: int) -> None:
    path = _jsonl(tmp_path / "r.jsonl", [ROWS[0], {**ROWS[1], "label": label}])
    msg = _error(path)
    assert msg.startswith(f"{path}:2: field 'label':")
    assert f"label {label} out of range for 3 classes" in msg


def test_label_required_with_probs_and_must_be_integer(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "a.jsonl", [{**ROWS[0], "label": None}])
    assert _error(path).startswith(f"{path}:1: field 'label':")
    path = _jsonl(tmp_path / "b.jsonl", [{**ROWS[0], "label": 1.5}])
    assert "must be an integer" in _error(path)


def test_missing_required_column(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "r.jsonl", [{"confidence": 0.5}])
    assert "missing required column 'correct'" in _error(path)


@pytest.mark.parametrize(("name", "text"), [("e.jsonl", ""), ("w.jsonl", "\n  \n"), ("h.csv", "confidence,correct\n"),
                                            ("z.csv", "")])
def test_empty_file(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    msg = _error(path)
    assert msg.startswith(str(path))
    assert "no records" in msg or "cannot parse" in msg


def test_empty_parquet(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    pd.DataFrame({"confidence": pd.Series([], dtype=float), "correct": pd.Series([], dtype=bool)}).to_parquet(path)
    assert "no records" in _error(path)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    assert "no such file" in _error(tmp_path / "nope.jsonl")
    path = tmp_path / "r.txt"
    path.write_text("x")
    assert "unknown records format" in _error(path)


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    path.write_bytes(b"not parquet at all")
    assert "cannot read Parquet" in _error(path)


def test_normalize_ignores_a_non_default_index() -> None:
    df = pd.DataFrame({"confidence": [0.9, 0.8, 0.3], "correct": [1, 1, 0],
                       "probs": [[0.1, 0.9], [0.8, 0.2], None], "label": [1, 0, None]}, index=[5, 3, 9])
    out = normalize(df)
    assert out["probs"].tolist() == [[0.1, 0.9], [0.8, 0.2], None]
    assert out["label"].tolist()[:2] == [1, 0]
    assert out.index.tolist() == [0, 1, 2]


@pytest.mark.parametrize("probs", [["a", "b"], {"a": 1}])
def test_non_numeric_probs_name_the_line(tmp_path: Path, probs: object) -> None:
    path = _jsonl(tmp_path / "r.jsonl", [ROWS[0], {**ROWS[1], "probs": probs}])
    with pytest.raises(CalibenchError, match=r":2: field 'probs'"):
        read_records(path)


# ------------------------------------------------------------------ on-disk form: writer and run reader


def _chunk(rows: list[dict], model: str = "m") -> pd.DataFrame:
    frame = make_records(rows)
    frame["model"] = model
    return frame


def test_record_writer_streams_chunks_and_renames_on_close(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from calibench.records import RECORDS_FILE, RecordWriter, load_run_records

    target = tmp_path / "run" / RECORDS_FILE
    writer = RecordWriter(target)
    writer.write(_chunk(ROWS[:2]))
    writer.write(_chunk(ROWS[2:]))
    assert not target.exists()  # rows go to a temporary file until close
    assert [p.name for p in target.parent.iterdir()][0].startswith(f".{RECORDS_FILE}.")
    assert writer.close() == target and writer.n_rows == 3
    assert sorted(p.name for p in target.parent.iterdir()) == [RECORDS_FILE]
    assert pq.ParquetFile(target).metadata.num_row_groups == 2  # one row group per chunk: streamed
    got = load_run_records(target.parent)
    assert list(got.columns) == list(COLUMNS) and got["label"].dtype == "Int64"
    assert got["item_id"].tolist() == ["a", "b", "c"] and got["model"].unique().tolist() == ["m"]
    assert got["probs"].iloc[1] == [0.1, 0.6, 0.3]
    pd.testing.assert_frame_equal(got.drop(columns="probs"), read_records(target).drop(columns="probs"))
    with pytest.raises(CalibenchError, match="closed"):
        writer.write(_chunk(ROWS))


def test_record_writer_error_keeps_the_previous_file(tmp_path: Path) -> None:
    from calibench.records import RecordWriter

    target = tmp_path / "records.parquet"
    write_records(_chunk(ROWS, model="old"), target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="scoring failed"), RecordWriter(target) as writer:
        writer.write(_chunk(ROWS[:1], model="new"))
        raise RuntimeError("scoring failed")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["records.parquet"]  # temp file removed

    fresh = tmp_path / "fresh" / "records.parquet"
    w = RecordWriter(fresh)
    w.write(_chunk(ROWS))
    w.abort()
    assert not fresh.exists() and list(fresh.parent.iterdir()) == []


def test_record_writer_matches_write_records_content(tmp_path: Path) -> None:
    """Both writers give the same table (schema included), so either file reads the same everywhere."""
    import pyarrow.parquet as pq

    from calibench.records import RecordWriter, arrow_schema

    frame = _chunk(ROWS)
    with RecordWriter(tmp_path / "a.parquet") as w:
        w.write(frame)
    write_records(frame, tmp_path / "b.parquet")
    a, b = pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet")
    assert a.schema.remove_metadata().equals(arrow_schema())
    assert a.equals(b.cast(a.schema))


def test_load_run_records_errors_and_other_formats(tmp_path: Path) -> None:
    from calibench.records import load_run_records

    with pytest.raises(CalibenchError, match="not a calibench run"):
        load_run_records(tmp_path)
    pd.DataFrame({"confidence": [0.5], "correct": [True]}).to_parquet(tmp_path / "records.parquet")
    with pytest.raises(CalibenchError, match=r"missing column\(s\) \['model'"):
        load_run_records(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "records.parquet").write_bytes(b"not parquet")
    with pytest.raises(CalibenchError, match="cannot read Parquet"):
        load_run_records(tmp_path / "bad")
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert load_run_records(jsonl)["item_id"].tolist() == ["a", "b", "c"]  # validated by read_records
