"""Which channels and silences apply to a tracker, for the dashboard to show.

The alerts package decides who is told (:func:`telemhq_server.alerts.matches`, the same test
the outbox applies to a channel's or a silence's selector) and when a silence holds
(:func:`telemhq_server.alerts.silence_end`); this module only loads the rows and asks it, so
the page says what alerting will do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from telemhq_server import db
from telemhq_server.alerts import DEFAULT_CHANNEL_EVENTS, matches, silence_end
from telemhq_server.alerts.tables import channels, silences

__all__ = [
    "Routing",
    "Silence",
    "channel_events",
    "for_tracker",
    "live_silences",
    "silenced_until",
]


def channel_events(channel: Mapping[Any, Any]) -> Sequence[str]:
    """The changes a channel is told of (its own list, else the default one)."""
    return channel["events"] or DEFAULT_CHANNEL_EVENTS


@dataclass(frozen=True, slots=True)
class Silence:
    """A silence that covers a tracker: its row, and the end of the window holding now
    (None: not holding now, e.g. a recurring one between windows or one not begun)."""

    row: Mapping[Any, Any]
    until: dt.datetime | None
    starts: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Routing:
    """The channels told of a tracker (enabled or not) and the silences covering it."""

    channels: Sequence[Mapping[Any, Any]]
    silences: Sequence[Silence]

    @property
    def silenced_until(self) -> dt.datetime | None:
        return max((s.until for s in self.silences if s.until is not None), default=None)


def live_silences(conn: Connection, now: dt.datetime) -> list[Mapping[Any, Any]]:
    """Silences not ended (deleted) nor past their end: the only ones that can hold now or
    later."""
    s = silences
    rows = conn.execute(
        sa.select(s)
        .where(sa.or_(s.c.ended_at.is_(None), s.c.ended_at > now))
        .where(sa.or_(s.c.ends_at.is_(None), s.c.ends_at > now))
        .order_by(s.c.id)
    ).mappings()
    return list(rows)


def silenced_until(
    rows: Iterable[Mapping[Any, Any]],
    tracker: Mapping[Any, Any],
    orchestrator: str | None,
    now: dt.datetime,
) -> dt.datetime | None:
    """The end of the longest silence among ``rows`` holding ``tracker``'s notifications now."""
    ends = (
        silence_end(row, now)
        for row in rows
        if matches(row["selector"] or {}, tracker, orchestrator)
    )
    return max((end for end in ends if end is not None), default=None)


def for_tracker(
    conn: Connection, tracker: Mapping[Any, Any], orchestrator: str | None, now: dt.datetime
) -> Routing:
    """The channels and the live silences whose selectors take ``tracker`` (``orchestrator``:
    what its runs say, as the alerts read it)."""
    chans = conn.execute(sa.select(channels).order_by(channels.c.id)).mappings()
    taken = [c for c in chans if matches(c["selector"] or {}, tracker, orchestrator)]
    covering = [
        Silence(row, silence_end(row, now), db.as_utc(row["starts_at"]))
        for row in live_silences(conn, now)
        if matches(row["selector"] or {}, tracker, orchestrator)
    ]
    return Routing(taken, covering)
