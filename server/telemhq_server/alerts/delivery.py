"""Delivering the alert outbox: an :class:`AlertDispatcher` per server process claims due rows
(a lease, ``claimed_until``, so two processes never send one row), decides whether each is
still worth sending, sends it through Apprise and records the attempt.

When a row comes due:

- a silence covering the tracker holds it until the silence ends (``held_by``);
- a problem message (failing/late/down, first or reminder) goes out only if the tracker is
  still in that state since that change: a delayed, held or retried message that is no longer
  true is dropped. So when a silence ends, one message tells of the state the tracker is in,
  and none if it recovered;
- ``after_failures: N`` waits until the tracker has N consecutive failed runs;
- a recovery goes out only if the channel was told of the problem (its first message was
  delivered); it waits while that message is still pending.

After a problem message is delivered, the next reminder is queued ``repeat_every`` later,
up to ``max_repeats``; a grouped message's reminder lists those of its trackers still bad.

Every message carries an incident id (``incident``), the same for its retries, its reminders
and its recovery: de-duplicating services get it (an Opsgenie alias, a header of a JSON
post), so a retried delivery or a reminder does not open a second incident. A recovery is a
success to Apprise (Opsgenie closes the alert), or a plain note while other trackers of the
same grouped incident are still bad.

Failed attempts are retried with the webhooks' :class:`RetryPolicy`. At most
``per_channel`` messages of one channel are under way at once (threads stuck past their
deadline included), so a dead channel delays only itself.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from telemhq_server import db
from telemhq_server.alerts.enqueue import BAD_STATES, orchestrator_of
from telemhq_server.alerts.message import render, render_group
from telemhq_server.alerts.policy import matches
from telemhq_server.alerts.sender import Message, Outcome, Sender
from telemhq_server.alerts.silences import held_until
from telemhq_server.alerts.tables import alert_attempts, alert_outbox, channels, silences
from telemhq_server.dashboard.runinfo import UiBases, ui_url
from telemhq_server.webhooks import RetryPolicy
from telemhq_server.webhooks.loop import OutboxLoop, due_rows, lease, prune_outbox

__all__ = ["AlertCounts", "AlertDispatcher"]

logger = logging.getLogger("telemhq_server.alerts")

_MAX_ERROR: Final = 500
#: Attempts at one reminder before it is given up.
_REMINDER_ATTEMPTS: Final = 3


@dataclass
class AlertCounts:
    """Per-process counters for ``/metrics``, by channel id."""

    sent: collections.Counter[int]
    failed_attempts: collections.Counter[int]
    given_up: collections.Counter[int]
    dropped: collections.Counter[int]
    held: collections.Counter[int]

    @classmethod
    def new(cls) -> AlertCounts:
        c = collections.Counter
        return cls(c(), c(), c(), c(), c())

    def lines(self) -> list[str]:
        out: list[str] = []
        for name, help_text, counter in (
            ("sent", "Notifications delivered, by channel.", self.sent),
            ("failed_attempts", "Failed delivery attempts, by channel.", self.failed_attempts),
            ("given_up", "Notifications abandoned after their retries.", self.given_up),
            ("dropped", "Notifications not sent: no longer true or not due.", self.dropped),
            ("held", "Notifications held by a silence.", self.held),
        ):
            metric = f"telemhq_alerts_{name}_total"
            out += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
            out += [f'{metric}{{channel="{k}"}} {v}' for k, v in sorted(counter.items())]
        return out


@dataclass(frozen=True, slots=True)
class _Job:
    outbox_id: int
    channel_id: int
    url: str
    message: Message
    event: str
    created_at: dt.datetime
    attempts: int
    repeat_no: int
    repeat_every: int | None
    max_repeats: int
    #: the other outbox rows this message tells of (folded into it by grouping)
    members: tuple[int, ...] = ()
    #: a grouped message's key: its reminders tell of its trackers still bad
    group_key: str | None = None


@dataclass(frozen=True, slots=True)
class _Verdict:
    action: str  # send | drop | hold | wait
    until: dt.datetime | None = None
    reason: str = ""
    silence_id: int | None = None
    since: dt.datetime | None = None
    #: a recovery: the incident it ends, and whether it ends it (no other tracker of a grouped
    #: incident still bad)
    incident: str | None = None
    resolves: bool = True
    #: a grouped reminder: the rows of its group whose trackers are still bad
    still_bad: tuple[Mapping[Any, Any], ...] = ()


class AlertDispatcher(OutboxLoop[_Job]):
    """Delivers due alert outbox rows; ``run()`` is the background loop, ``tick()`` one pass.

    ``clock`` is injectable so tests drive delays, reminders, silences and retries without
    waiting; ``recheck`` is how long a message waiting on something (``after_failures``, the
    problem message before a recovery) waits before it is looked at again.
    """

    what = "alert"
    log = logger

    def __init__(
        self,
        engine: Engine,
        *,
        public_url: str | None = None,
        policy: RetryPolicy | None = None,
        clock: Callable[[], dt.datetime] = db.utcnow,
        interval: float = 1.0,
        batch: int = 50,
        per_channel: int = 2,
        max_in_flight: int = 32,
        recheck: float = 5.0,
        group_window: float = 0.0,
        late_group_min: int = 5,
        late_group_fraction: float = 0.5,
        ui_bases: UiBases | None = None,
    ) -> None:
        super().__init__(engine, clock=clock, interval=interval, max_in_flight=max_in_flight)
        self.public_url = (public_url or "").rstrip("/")
        self.policy = policy or RetryPolicy(timeout=10.0)
        self.batch = batch
        self.per_channel = per_channel
        self.recheck = dt.timedelta(seconds=recheck)
        self.group_window = dt.timedelta(seconds=group_window)
        self.late_group_min = late_group_min
        self.late_group_fraction = late_group_fraction
        self.ui_bases = ui_bases or UiBases()
        self.lease = dt.timedelta(seconds=max(60.0, self.policy.timeout * 2))
        self.sender = Sender(self.policy.timeout)
        self.counts = AlertCounts.new()

    def prune(self, now: dt.datetime) -> int:
        """Forget finished messages (and their attempts) older than the webhooks' KEEP_DAYS."""
        o = alert_outbox
        finished = (o.c.delivered_at, o.c.failed_at, o.c.dropped_at)
        return prune_outbox(self.engine, o, alert_attempts, finished, now)

    def bound_of(self, job: _Job) -> Hashable:
        return job.channel_id

    def busy(self) -> collections.Counter[Hashable]:
        """The sending threads per channel, those stuck past their deadline included."""
        return collections.Counter(self.sender.busy_counts())

    # -- claiming and deciding ---------------------------------------------------------------

    def claim(self, now: dt.datetime, room: int, busy: collections.Counter[Hashable]) -> list[_Job]:
        o = alert_outbox
        free = sa.or_(o.c.claimed_until.is_(None), o.c.claimed_until < now)
        pending = sa.and_(
            o.c.delivered_at.is_(None), o.c.failed_at.is_(None), o.c.dropped_at.is_(None)
        )
        due = due_rows(o, o.c.channel_id, pending, free, now)
        with self.engine.connect() as conn:
            ids = conn.execute(
                sa.select(o.c.id, o.c.channel_id)
                .join(due, due.c.id == o.c.id)
                .where(due.c.rank <= self.per_channel)
                .order_by(o.c.next_attempt_at, o.c.id)
                .limit(self.batch)
            ).all()
        jobs: list[_Job] = []
        taken = collections.Counter(busy)
        for row_id, channel_id in ids:
            if len(jobs) >= room:
                break
            if taken[channel_id] >= self.per_channel:
                continue
            with db.write_tx(self.engine) as conn:
                if not lease(conn, o, row_id, sa.and_(pending, free), now + self.lease):
                    continue  # another process took it first
                job = self._decide_and_apply(conn, row_id, now)
            if job is not None:
                taken[channel_id] += 1
                jobs.append(job)
        return jobs

    def _decide_and_apply(self, conn: Connection, row_id: int, now: dt.datetime) -> _Job | None:
        o = alert_outbox
        row = conn.execute(sa.select(o).where(o.c.id == row_id)).mappings().one()
        channel = (
            conn.execute(sa.select(channels).where(channels.c.id == row["channel_id"]))
            .mappings()
            .one()
        )
        verdict = self._decide(conn, row, channel, now)
        release: dict[str, Any] = {"claimed_until": None}
        if verdict.action == "drop":
            self.counts.dropped[row["channel_id"]] += 1
            conn.execute(
                sa.update(o)
                .where(o.c.id == row_id)
                .values(**release, dropped_at=now, last_error=verdict.reason)
            )
            return None
        if verdict.action in ("hold", "wait"):
            if verdict.action == "hold":
                self.counts.held[row["channel_id"]] += 1
            conn.execute(
                sa.update(o)
                .where(o.c.id == row_id)
                .values(
                    **release,
                    next_attempt_at=verdict.until,
                    held_by=verdict.silence_id,
                    last_error=verdict.reason,
                )
            )
            return None
        doc = json.loads(row["body"])
        since = verdict.since or db.as_utc(row["created_at"])
        created = db.as_utc(row["created_at"])
        assert since is not None
        assert created is not None
        members: Sequence[Mapping[Any, Any]] = []
        if verdict.still_bad:  # a grouped message's reminder
            docs = [json.loads(m["body"]) for m in verdict.still_bad]
        elif row["group_key"] and self.group_window and not row["repeat_no"]:
            members = self._group(conn, row, now)
            docs = [doc, *(json.loads(m["body"]) for m in members)]
        else:
            docs = [doc]
        links = [ui_url((d.get("run") or {}).get("payload"), self.ui_bases) for d in docs]
        grouped = len(docs) > 1 or bool(verdict.still_bad)
        if grouped:
            title, text = render_group(
                row["group_key"],
                docs,
                public_url=self.public_url,
                repeat_no=row["repeat_no"],
                ui_links=links,
            )
        else:
            title, text = render(
                doc,
                event=row["event"],
                repeat_no=row["repeat_no"],
                now=now,
                since=since,
                public_url=self.public_url,
                ui_link=links[0],
            )
        incident = (
            row["incident"]
            or verdict.incident
            or (f"telemhq-group-{row_id}" if members else _incident(row["tracker_id"], created))
        )
        conn.execute(
            sa.update(o)
            .where(o.c.id.in_([row_id, *(m["id"] for m in members)]))
            .values(incident=incident)
        )
        # the dashboard as a click-through link: only an absolute one (TELEMHQ_PUBLIC_URL set)
        path = doc.get("dashboard_url")
        dashboard = self.public_url + path if self.public_url and isinstance(path, str) else None
        return _Job(
            row_id,
            row["channel_id"],
            channel["url"],
            Message(
                title,
                text,
                kind=_kind(row["event"], resolves=verdict.resolves),
                incident=incident,
                # the click-through link of services that take one
                link=(links[0] if not grouped else None) or dashboard,
            ),
            row["event"],
            created,
            row["attempts"],
            row["repeat_no"],
            channel["repeat_every_seconds"],
            channel["max_repeats"],
            tuple(m["id"] for m in members),
            group_key=row["group_key"] if grouped else None,
        )

    def _decide(
        self, conn: Connection, row: Mapping[Any, Any], channel: Mapping[Any, Any], now: dt.datetime
    ) -> _Verdict:
        if not channel["enabled"]:
            return _Verdict("drop", reason="channel disabled")
        tracker = (
            conn.execute(sa.select(db.trackers).where(db.trackers.c.id == row["tracker_id"]))
            .mappings()
            .first()
        )
        if tracker is None:
            return _Verdict("drop", reason="tracker deleted")
        hold = self._silenced(conn, tracker, now)
        if hold is not None:
            return _Verdict(
                "hold", until=hold[1], silence_id=hold[0], reason=f"held by silence {hold[0]}"
            )
        if row["event"] in BAD_STATES and row["repeat_no"] and row["group_key"]:
            still_bad = self._still_bad(conn, row)
            if not still_bad:
                return _Verdict("drop", reason="none of its group is still bad")
            return _Verdict("send", still_bad=tuple(still_bad))
        if row["event"] in BAD_STATES:
            changed = db.as_utc(tracker["state_changed_at"])
            created = db.as_utc(row["created_at"])
            if tracker["state"] != row["state"] or (
                changed is not None and created is not None and changed > created
            ):
                return _Verdict("drop", reason=f"no longer {row['state']} (now {tracker['state']})")
            if (
                row["event"] == "failing"
                and tracker["consecutive_failures"] < channel["after_failures"]
            ):
                return _Verdict(
                    "wait",
                    until=now + self.recheck,
                    reason=f"{tracker['consecutive_failures']} of "
                    f"{channel['after_failures']} failures",
                )
            grouped_at = (created or now) + self.group_window
            if row["group_key"] and self.group_window and now < grouped_at:
                # group_wait: the others of its group arrive meanwhile
                return _Verdict("wait", until=grouped_at, reason="waiting for its group")
            return _Verdict("send", since=changed)
        # A recovery: only for a channel told of the problem.
        o = alert_outbox
        problem = (
            conn.execute(
                sa.select(o)
                .where(
                    o.c.channel_id == row["channel_id"],
                    o.c.tracker_id == row["tracker_id"],
                    o.c.id < row["id"],
                    o.c.event != "recovered",
                    o.c.repeat_no == 0,
                )
                .order_by(o.c.id.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        if problem is None:
            return _Verdict("drop", reason="the channel was not told of a problem")
        if problem["delivered_at"] is not None:
            created = db.as_utc(problem["created_at"])
            assert created is not None
            incident = problem["incident"] or _incident(row["tracker_id"], created)
            return _Verdict(
                "send",
                since=created,
                incident=incident,
                resolves=not self._others_bad(conn, row, incident),
            )
        if problem["failed_at"] is None and problem["dropped_at"] is None:
            return _Verdict(
                "wait", until=now + self.recheck, reason="waiting for the problem's message"
            )
        return _Verdict("drop", reason="the channel was not told of the problem")

    def _group(
        self, conn: Connection, row: Mapping[Any, Any], now: dt.datetime
    ) -> Sequence[Mapping[Any, Any]]:
        """The other pending messages of this channel that fold into ``row``'s (claimed here),
        or none when the group is too small to fold."""
        o, t = alert_outbox, db.trackers
        created = db.as_utc(row["created_at"])
        assert created is not None
        free = sa.or_(o.c.claimed_until.is_(None), o.c.claimed_until < now)
        candidates = (
            conn.execute(
                sa.select(o, t.c.state.label("t_state"), t.c.state_changed_at)
                .join(t, t.c.id == o.c.tracker_id)
                .where(
                    o.c.channel_id == row["channel_id"],
                    o.c.group_key == row["group_key"],
                    o.c.id != row["id"],
                    o.c.repeat_no == 0,
                    o.c.delivered_at.is_(None),
                    o.c.failed_at.is_(None),
                    o.c.dropped_at.is_(None),
                    o.c.held_by.is_(None),
                    o.c.created_at <= created + self.group_window,
                    free,
                )
                .order_by(o.c.id)
            )
            .mappings()
            .all()
        )
        members = [m for m in candidates if m["t_state"] == m["state"] and _current(m)]
        if not members:
            return []
        if str(row["group_key"]).startswith("late:") and not self._many_late(
            conn, str(row["group_key"])[5:], len(members) + 1
        ):
            return []
        conn.execute(
            sa.update(o)
            .where(o.c.id.in_([m["id"] for m in members]))
            .values(claimed_until=now + self.lease)
        )
        return members

    def _incident_rows(
        self, conn: Connection, row: Mapping[Any, Any], incident: str | None
    ) -> Sequence[Mapping[Any, Any]]:
        """The first messages (not reminders) of this channel under ``incident``, each with
        its tracker's current state (``t_state``) and ``state_changed_at``."""
        if not incident:
            return []
        o, t = alert_outbox, db.trackers
        return (
            conn.execute(
                sa.select(o, t.c.state.label("t_state"), t.c.state_changed_at)
                .join(t, t.c.id == o.c.tracker_id)
                .where(
                    o.c.channel_id == row["channel_id"],
                    o.c.incident == incident,
                    o.c.repeat_no == 0,
                    o.c.event != "recovered",
                    o.c.delivered_at.is_not(None),
                )
                .order_by(o.c.id)
            )
            .mappings()
            .all()
        )

    def _still_bad(self, conn: Connection, row: Mapping[Any, Any]) -> list[Mapping[Any, Any]]:
        """A grouped reminder's rows whose trackers are still in the state they told of."""
        rows = self._incident_rows(conn, row, row["incident"])
        return [m for m in rows if m["t_state"] == m["state"] and _current(m)]

    def _others_bad(self, conn: Connection, row: Mapping[Any, Any], incident: str) -> bool:
        """Is another tracker of the (grouped) ``incident`` still in the state it was told of?"""
        rows = self._incident_rows(conn, row, incident)
        return any(
            m["tracker_id"] != row["tracker_id"] and m["t_state"] == m["state"] and _current(m)
            for m in rows
        )

    def _many_late(self, conn: Connection, scope: str, late: int) -> bool:
        """Are ``late`` trackers of ``scope`` (an orchestrator, ``tag:<tag>``, or ``""``: all)
        enough to say their scheduler is in trouble: at least ``late_group_min`` and at least
        ``late_group_fraction`` of its scheduled trackers?"""
        if late < self.late_group_min:
            return False
        t = db.trackers
        scheduled = sa.select(t.c.id, t.c.tags).where(t.c.schedule_kind != "none")
        rows = conn.execute(scheduled).all()
        if scope.startswith("tag:"):
            ids = [r.id for r in rows if scope[4:] in (r.tags or [])]
        elif scope:
            ids = [r.id for r in rows if orchestrator_of(conn, r.id, None) == scope]
        else:
            ids = [r.id for r in rows]
        return late >= self.late_group_fraction * len(ids)

    def _silenced(
        self, conn: Connection, tracker: Mapping[Any, Any], now: dt.datetime
    ) -> tuple[int, dt.datetime] | None:
        s = silences
        rows = (
            conn.execute(sa.select(s).where(sa.or_(s.c.ended_at.is_(None), s.c.ended_at > now)))
            .mappings()
            .all()
        )
        if not rows:
            return None
        orchestrator: str | None = None
        if any("orchestrator" in (r["selector"] or {}) for r in rows):
            orchestrator = orchestrator_of(conn, tracker["id"], None)
        covering = [r for r in rows if matches(r["selector"] or {}, tracker, orchestrator)]
        return held_until(covering, now)

    # -- sending and recording -----------------------------------------------------------------

    async def deliver(self, job: _Job) -> None:
        started = self.clock()
        outcome = await self.sender.send(job.channel_id, job.url, job.message)
        await asyncio.to_thread(self._record, job, started, outcome)

    def _record(self, job: _Job, attempted_at: dt.datetime, outcome: Outcome) -> None:
        o = alert_outbox
        attempts = job.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "claimed_until": None, "held_by": None}
        reminder: dict[str, Any] | None = None
        if outcome.ok:
            self.counts.sent[job.channel_id] += 1
            values.update(delivered_at=attempted_at, last_error=None)
            if job.event in BAD_STATES and job.repeat_every and job.repeat_no < job.max_repeats:
                reminder = {
                    "channel_id": job.channel_id,
                    "repeat_no": job.repeat_no + 1,
                    "next_attempt_at": attempted_at + dt.timedelta(seconds=job.repeat_every),
                    "attempts": 0,
                    "incident": job.message.incident,
                    # a grouped message's reminder tells of its group's trackers still bad
                    "group_key": job.group_key,
                }
        else:
            self.counts.failed_attempts[job.channel_id] += 1
            values["last_error"] = (outcome.error or "failed")[:_MAX_ERROR]
            retry_at = attempted_at + dt.timedelta(seconds=self.policy.delay(attempts))
            # A first message is retried for the policy's give_up_after; a reminder (the
            # channel already knows) only a few times.
            first_deadline = job.created_at + dt.timedelta(seconds=self.policy.give_up_after)
            if (job.repeat_no == 0 and retry_at > first_deadline) or (
                job.repeat_no and attempts >= _REMINDER_ATTEMPTS
            ):
                self.counts.given_up[job.channel_id] += 1
                values["failed_at"] = attempted_at
                logger.warning(
                    "alert %s to channel %s failed for good after %d attempts",
                    job.outbox_id,
                    job.channel_id,
                    attempts,
                )
            else:
                values["next_attempt_at"] = retry_at
        with db.write_tx(self.engine) as conn:
            if not conn.execute(
                sa.update(o).where(o.c.id == job.outbox_id).values(**values)
            ).rowcount:
                return  # the channel (and its outbox) was deleted meanwhile
            conn.execute(
                sa.insert(alert_attempts).values(
                    outbox_id=job.outbox_id,
                    attempted_at=attempted_at,
                    ok=outcome.ok,
                    error=None if outcome.ok else values["last_error"],
                    duration_ms=round(outcome.duration_ms, 3),
                )
            )
            if job.members:
                folded: dict[str, Any] = (
                    {"delivered_at": attempted_at, "last_error": f"sent in message {job.outbox_id}"}
                    if outcome.ok
                    else {}
                )
                conn.execute(
                    sa.update(o).where(o.c.id.in_(job.members)).values(claimed_until=None, **folded)
                )
            if reminder is not None:
                row = conn.execute(sa.select(o).where(o.c.id == job.outbox_id)).mappings().one()
                conn.execute(
                    sa.insert(o).values(
                        **reminder,
                        tracker_id=row["tracker_id"],
                        event=row["event"],
                        state=row["state"],
                        body=row["body"],
                        created_at=row["created_at"],
                    )
                )


def _incident(tracker_id: int, created: dt.datetime) -> str:
    """The incident id of one tracker's change at ``created``: the same on every retry."""
    return f"telemhq-{tracker_id}-{int(created.timestamp() * 1000)}"


def _kind(event: str, *, resolves: bool) -> str:
    """What a message is to Apprise: a failure opens (or adds to) an incident, a late job is
    a warning, a recovery resolves it (a note while others of its incident are still bad)."""
    if event == "recovered":
        return "success" if resolves else "info"
    return "warning" if event == "late" else "failure"


def _current(row: Mapping[Any, Any]) -> bool:
    """Has the tracker not changed state since the message's change (``state_changed_at``
    joined from the tracker)?"""
    changed, created = db.as_utc(row["state_changed_at"]), db.as_utc(row["created_at"])
    return changed is None or created is None or changed <= created
