"""A tracker's history as history-relative assertions read it, and what the API shows of it:
each history assertion's current baseline and a warning when retention is shorter than the
history an assertion reads.

The stored runs a tracker's history is made of are its newest ``TELEMHQ_RETENTION_RUNS``
rows (what retention keeps; at most :data:`MAX_HISTORY`), oldest first: the ping writer
(:mod:`telemhq_server.ingest.history`) and the API read the same ones, so every server
process judges a run alike.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from telemhq_plugins.core import jsontext
from telemhq_plugins.core.assertions import AnyAssertion, History, parse_assertion
from telemhq_plugins.core.history import HistoryAssertion, PastRun
from telemhq_server.db import as_utc, runs, utcnow

__all__ = [
    "MAX_HISTORY",
    "baselines",
    "history_assertions",
    "history_json",
    "history_limit",
    "load_history",
    "past_run",
    "retention_warning",
    "warn_on_retention",
]

logger = logging.getLogger("telemhq_server.baselines")

#: The most runs a history holds, whatever retention keeps: reading (and holding) more would
#: make a tracker with a very long retention slow to judge.
MAX_HISTORY: Final = 100_000


def history_limit(retention_runs: int) -> int:
    """How many of a tracker's newest runs its history is made of."""
    return min(retention_runs, MAX_HISTORY)


def past_run(status: str, passed: Any, payload: Any, received_at: dt.datetime) -> PastRun:
    """A stored run as history reads it (``payload``: the stored JSON text or an object)."""
    if isinstance(payload, str):
        try:
            payload = jsontext.loads(payload)
        except ValueError:
            payload = {}
    return PastRun(
        received_at,
        status,
        None if passed is None else bool(passed),
        payload if isinstance(payload, dict) else {},
    )


def load_history(
    conn: Connection, tracker_id: int, keep: int
) -> tuple[History, dt.datetime | None]:
    """The tracker's newest ``keep`` runs as a :class:`History`, and the oldest one's time."""
    newest_first = conn.execute(
        sa.select(runs.c.status, runs.c.passed, runs.c.payload, runs.c.received_at)
        .where(runs.c.tracker_id == tracker_id)
        .order_by(runs.c.id.desc())
        .limit(keep)
    ).all()
    rows = list(reversed(newest_first))
    history = History(
        (past_run(r.status, r.passed, r.payload, as_utc(r.received_at) or utcnow()) for r in rows),
        limit=keep,
    )
    oldest = as_utc(rows[0].received_at) if rows else None
    return history, oldest


def history_assertions(texts: Sequence[str]) -> list[HistoryAssertion]:
    """The history-relative ones among a tracker's (stored, hence valid) assertions."""
    parsed: list[AnyAssertion] = []
    for text in texts:
        try:
            parsed.append(parse_assertion(text))
        except ValueError:  # stored before a grammar change: judged by nobody
            continue
    return [a for a in parsed if isinstance(a, HistoryAssertion)]


def baselines(
    assertions: Sequence[HistoryAssertion], history: History, timezone: str | None
) -> list[dict[str, Any]]:
    """Each history assertion's right-hand side as it stands now: ``{"expression", "value",
    "text"}`` (``reason`` instead of a value while there is too little history)."""
    now = utcnow()
    out = []
    for assertion in assertions:
        baseline = assertion.baseline(history, now=now, timezone=timezone)
        out.append({"expression": str(assertion), **baseline})
    return out


def history_json(
    conn: Connection, tracker: Mapping[str, Any] | RowMapping, keep: int
) -> dict[str, Any]:
    """What ``GET /api/v1/trackers/{id}`` adds to a tracker with history-relative assertions
    (nothing to one without): ``baselines`` (each history assertion's current baseline) and
    ``retention_warning`` (None when retention keeps enough)."""
    assertions = history_assertions(tracker["assertions"])
    if not assertions:
        return {}
    history, oldest = load_history(conn, tracker["id"], history_limit(keep))
    return {
        "baselines": baselines(assertions, history, tracker["timezone"]),
        "retention_warning": retention_warning(
            assertions, keep, n_runs=tracker["n_runs"], oldest=oldest
        ),
    }


def retention_warning(
    assertions: Sequence[HistoryAssertion],
    keep: int,
    *,
    n_runs: int = 0,
    oldest: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> str | None:
    """Why retention keeps less history than an assertion reads, or None.

    ``last N`` beyond ``keep`` is always too long. A duration is too long once retention has
    deleted runs (``n_runs`` > ``keep``) and the oldest kept run (``oldest``) is younger than it.
    """
    for assertion in assertions:
        runs_read, seconds = assertion.largest_window
        if runs_read > keep:
            return (
                f"{assertion} reads the last {runs_read} runs, but retention keeps "
                f"{keep} (TELEMHQ_RETENTION_RUNS)"
            )
        if seconds and oldest is not None and n_runs > keep:
            kept = ((now or utcnow()) - oldest).total_seconds()
            if kept < seconds:
                return (
                    f"{assertion} reads {_duration(seconds)} of runs, but retention keeps "
                    f"{keep} runs (TELEMHQ_RETENTION_RUNS), which span {_duration(kept)}"
                )
    return None


def warn_on_retention(tracker: Mapping[str, Any] | RowMapping, keep: int) -> None:
    """Log the retention warning of a tracker's assertions (on create and update)."""
    warning = retention_warning(history_assertions(tracker["assertions"]), keep)
    if warning is not None:
        logger.warning(
            "retention is shorter than an assertion's history: %s",
            warning,
            extra={"tracker_id": tracker["id"]},
        )


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.3g}s"
