"""The columnar fast path of read_records gives the row reader's frame, or hands the file over to it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from calibench import records
from calibench.errors import CalibenchError


def _both(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """(fast frame or None if the fast path declined, row reader's frame)."""
    fast = records._read_columnar(path, path.suffix.lower())
    with monkeypatch.context() as m:
        m.setattr(records, "_read_columnar", lambda p, s: None)
        slow = records.read_records(path)
    return fast, slow


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = 4
        p = rng.dirichlet(np.ones(k))
        label = int(rng.integers(k))
        out.append({"model": "m", "revision": "step1", "task": "mc", "method": "choice", "item_id": f"q{i}",
                    "probs": p.tolist(), "label": label, "pred": "ABCD"[int(p.argmax())],
                    "confidence": float(p.max()), "correct": bool(p.argmax() == label),
                    "extra": {"raw": float(p.max())}})
    return out


def _two_class(r: dict) -> dict:
    top = max(r["confidence"], 1 - r["confidence"])
    return {**r, "task": "yes-no", "probs": [top, 1 - top], "label": 0, "confidence": top, "correct": True}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


CASES = {
    "plain": lambda rows: rows,
    "no extra, no provenance": lambda rows: [{k: r[k] for k in ("probs", "label", "confidence", "correct")}
                                             for r in rows],
    "empty extra objects": lambda rows: [{**r, "extra": {}} for r in rows],
    "extra as JSON text": lambda rows: [{**r, "extra": json.dumps(r["extra"])} for r in rows],
    "integer ids and labels as floats": lambda rows: [{**r, "item_id": i, "label": float(r["label"])}
                                                      for i, r in enumerate(rows)],
    "correct as 0/1": lambda rows: [{**r, "correct": int(r["correct"])} for r in rows],
    "open class rows mixed in": lambda rows: [{**r, "probs": None, "label": None} if i % 3 == 0 else r
                                              for i, r in enumerate(rows)],
    "open class only": lambda rows: [{**r, "probs": None, "label": None, "extra": {}} for r in rows],
    "labels without probs": lambda rows: [{**r, "probs": None, "extra": {}} for r in rows],
    "two class counts in two tasks": lambda rows: [_two_class(r) if i % 2 else r for i, r in enumerate(rows)],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_jsonl_frames_equal_the_row_reader(case: str, tmp_path: Path, monkeypatch) -> None:
    path = _jsonl(tmp_path / "r.jsonl", CASES[case](_rows(40)))
    fast, slow = _both(path, monkeypatch)
    assert fast is not None, f"{case}: the fast path should take this file"
    pd.testing.assert_frame_equal(fast, slow)


def test_fast_parquet_and_csv_equal_the_row_reader(tmp_path: Path, monkeypatch) -> None:
    rows = CASES["open class rows mixed in"](_rows(30))
    df = records.make_records(rows)
    pq_path = tmp_path / "r.parquet"
    records.write_records(df, pq_path)
    csv_path = tmp_path / "r.csv"
    csv = df.copy()
    csv["probs"] = [None if p is None else json.dumps(p) for p in csv["probs"]]
    csv.loc[0, "revision"] = None  # an empty cell
    csv.to_csv(csv_path, index=False)
    for path in (pq_path, csv_path):
        fast, slow = _both(path, monkeypatch)
        assert fast is not None, path.suffix
        pd.testing.assert_frame_equal(fast, slow)
    assert records.read_records(csv_path)["revision"].iloc[0] == ""


BAD = {
    "confidence as text": ({"confidence": "0.7"}, None),
    "confidence above 1": ({"confidence": 1.5}, "confidence"),
    "missing confidence": ({"confidence": None}, "confidence"),
    "correct as text": ({"correct": "maybe"}, "correct"),
    "probs not summing to 1": ({"probs": [0.5, 0.6, 0.0, 0.0]}, "probs"),
    "label out of range": ({"label": 7}, "label"),
    "probs without label": ({"label": None}, "label"),
    "fractional label": ({"label": 1.5}, "label"),
    "one-class probs": ({"probs": [1.0], "label": 0}, "probs"),
    "extra with other keys": ({"extra": {"other": 1}}, None),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_files_the_fast_path_cannot_prove_go_to_the_row_reader(case: str, tmp_path: Path, monkeypatch) -> None:
    """A bad value anywhere sends the file to the row reader, which names the line (or accepts it)."""
    rows = _rows(20)
    change, field = BAD[case]
    rows[13] = {**rows[13], **change}
    path = _jsonl(tmp_path / "r.jsonl", rows)
    assert records._read_columnar(path, ".jsonl") is None
    if field is None:  # values the row reader may still coerce: whatever it does is the answer
        return
    with pytest.raises(CalibenchError) as err:
        records.read_records(path)
    assert ":14" in str(err.value) and field in str(err.value)


def test_the_fast_path_is_taken_for_a_large_clean_file(tmp_path: Path, monkeypatch) -> None:
    path = _jsonl(tmp_path / "r.jsonl", _rows(2000))
    calls = []
    real = records.normalize
    monkeypatch.setattr(records, "normalize", lambda *a, **k: calls.append(1) or real(*a, **k))
    df = records.read_records(path)
    assert len(df) == 2000 and calls == []  # no row-by-row pass


def test_mixed_class_counts_in_one_task_go_to_the_row_reader_which_warns(tmp_path: Path) -> None:
    rows = [{**_two_class(r), "task": "mc"} if i % 2 else r for i, r in enumerate(_rows(10))]
    path = _jsonl(tmp_path / "r.jsonl", rows)
    assert records._read_columnar(path, ".jsonl") is None
    with pytest.warns(records.MixedClassesWarning):
        records.read_records(path)


@pytest.mark.parametrize("change", ["confidence", "correct", "duplicate"])
def test_cross_column_rules_send_the_file_to_the_row_reader(change: str, tmp_path: Path) -> None:
    """confidence = max(probs), correct agreeing with probs and label, one row per item: checked on
    whole columns, and a violation goes to the row reader, which names the line."""
    rows = _rows(10)
    r = rows[6]
    if change == "confidence":
        rows[6] = {**r, "confidence": r["confidence"] - 0.01}
    elif change == "correct":
        rows[6] = {**r, "correct": not r["correct"]}
    else:
        rows[6] = {**r, "item_id": rows[2]["item_id"]}
    path = _jsonl(tmp_path / "r.jsonl", rows)
    assert records._read_columnar(path, ".jsonl") is None
    with pytest.raises(CalibenchError, match=":7"):
        records.read_records(path)


def test_json_text_probs_are_taken_from_csv_only(tmp_path: Path) -> None:
    rows = [{**r, "probs": json.dumps(r["probs"])} for r in _rows(5)]
    path = _jsonl(tmp_path / "r.jsonl", rows)
    assert records._read_columnar(path, ".jsonl") is None
    with pytest.raises(CalibenchError, match="probs"):
        records.read_records(path)


def test_probs_stay_one_arrow_array_where_every_row_has_them(tmp_path: Path, monkeypatch) -> None:
    """Every row with probs: one Arrow list<double> column on both paths (no list per row), whose
    (N, K) matrix is the stacked rows; rows without probs keep lists and None."""
    rows = _rows(30)
    path = _jsonl(tmp_path / "r.jsonl", rows)
    fast, slow = _both(path, monkeypatch)
    assert fast is not None
    for df in (fast, slow):
        assert isinstance(df["probs"].dtype, pd.ArrowDtype)
        matrix, labels = records.probs_matrix(df)
        np.testing.assert_array_equal(matrix, np.array([r["probs"] for r in rows]))
        np.testing.assert_array_equal(labels, [r["label"] for r in rows])
        assert df["probs"].iloc[3] == rows[3]["probs"]
    partial = records.read_records(_jsonl(tmp_path / "p.jsonl", CASES["open class rows mixed in"](_rows(9))))
    assert partial["probs"].dtype == object and partial["probs"].iloc[0] is None


def test_padded_probs_and_summaries_are_the_same_from_arrow_and_from_lists(tmp_path: Path) -> None:
    """Mixed option counts in one group (allowed, with a warning): the Arrow column pads as the lists do."""
    from calibench.metrics import summarize
    from calibench.metrics.notes import option_counts
    from calibench.metrics.registry import padded_probs

    rows = [_two_class(r) if i % 3 == 0 else r for i, r in enumerate(_rows(60))]
    rows = [{**r, "task": "t"} for r in rows]
    with pytest.warns(records.MixedClassesWarning):
        lists = records.make_records(rows)
    arrow = records.with_arrow_probs(lists)
    assert lists["probs"].dtype == object and isinstance(arrow["probs"].dtype, pd.ArrowDtype)
    (pa_, la), (pl, ll) = padded_probs(arrow), padded_probs(lists)
    np.testing.assert_array_equal(pa_, pl)
    np.testing.assert_array_equal(la, ll)
    assert pa_.shape == (60, 4) and (pa_[0, 2:] == 0).all()
    assert option_counts(arrow) == option_counts(lists) == (2, 4)
    assert records.probs_matrix(arrow) is None
    a = summarize(arrow, n_resamples=50, seed=3)
    b = summarize(lists, n_resamples=50, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert "sce" in set(a["metric"])


def test_duplicate_items_found_with_several_models_in_one_file(tmp_path: Path) -> None:
    """The Arrow duplicate check over all five keys: the same item of two models is no duplicate, the
    same item twice for one model is (the row reader then names the line)."""
    rows = _rows(6)
    two_models = [{**r, "model": m} for m in ("a", "b") for r in rows]
    ok = _jsonl(tmp_path / "ok.jsonl", two_models)
    fast = records._read_columnar(ok, ".jsonl")
    assert fast is not None and len(fast) == 12
    twice = [*two_models, {**two_models[7]}]
    with pytest.raises(CalibenchError, match="appears twice"):
        records.read_records(_jsonl(tmp_path / "dup.jsonl", twice))
    assert records._read_columnar(tmp_path / "dup.jsonl", ".jsonl") is None
