"""``score``: the one place where tasks x methods become contract records.

This is the seam between the scoring side (engine -> methods) and everything that consumes records
(a run folder, a study unit, a benchmark). It yields record chunks as they are produced, so a caller
can stream them to disk (CLM runs have one record per token) or keep them in memory; it never
writes files and never re-reads what it produced.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from calibench.errors import CalibenchError, NotMeasurable
from calibench.methods import METHODS, MethodOptions, ScoringSession, iter_token_records
from calibench.records import COLUMNS, make_records


@dataclass(frozen=True)
class RecordChunk:
    """Contract records of one (task, method) unit; ``last`` marks the unit's final chunk."""

    task: Any
    method: str
    frame: pd.DataFrame  # every records.COLUMNS column, model and revision filled in (empty when skipped)
    last: bool
    not_measured: str = ""  # why the method measured nothing on this model (its only chunk, frame empty)


def _finish(frame: pd.DataFrame, model_id: str, revision: str) -> pd.DataFrame:
    frame = frame.copy()
    frame["model"] = model_id
    frame["revision"] = revision
    frame["label"] = frame["label"].astype("Int64")
    return frame[list(COLUMNS)]


def score(engine: Any, units: Sequence[tuple[Any, str]], *, tokenizer: Any, options: MethodOptions,
          model_id: str, revision: str) -> Iterator[RecordChunk]:
    """Run every (task, method) unit on ``engine`` and yield its records.

    Passes that several methods of one task share (the choice prompt and the option continuations,
    the greedy answers) run once: they live in this call's ``ScoringSession`` and go with it.
    A method that cannot measure this model (``NotMeasurable``: e.g. no answer states a confidence)
    yields one empty chunk whose ``not_measured`` says why, and the other units go on; any other unit
    that produces no record is an error.
    """
    session = ScoringSession(engine, tokenizer, options)
    for task, method in units:
        if method == "token":
            frames = iter_token_records(engine, task, session=session)
        else:
            session.prefetch(task, [m for t, m in units if t is task])
            try:
                rows = METHODS[method](engine, task, session=session)
            except NotMeasurable as exc:
                yield RecordChunk(task, method, pd.DataFrame(columns=list(COLUMNS)), last=True, not_measured=str(exc))
                continue
            frames = iter([make_records(rows)])
        pending = None
        for frame in frames:
            if len(frame) == 0:
                continue
            if pending is not None:
                yield RecordChunk(task, method, _finish(pending, model_id, revision), last=False)
            pending = frame
        if pending is None:
            raise CalibenchError(f"task '{task.name}' method '{method}' produced no records")
        yield RecordChunk(task, method, _finish(pending, model_id, revision), last=True)
