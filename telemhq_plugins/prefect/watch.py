"""The watcher: ``python -m telemhq_plugins.prefect watch``.

A long-running process that follows the Prefect API's events (``prefect.flow-run.*``) and pings
for every flow run of the workspace, hooks or not: runs on other machines, and runs whose
process died (a run that stays Running with no heartbeat for twice the heartbeat frequency is
reported as ``failure``, "no heartbeat"). It also pushes each deployment's schedules to its
flow's tracker (core's schedule sync), as :mod:`telemhq_plugins.prefect.schedules` translates
them.

Its pings use the in-process hooks' ``ping_id`` rule (run id, attempt, status), so a run that
also has hooks is stored once. Which of the two pings is stored matters: the hooks' carries the
run's metrics. Hooks announce the runs they report (``_announce.py``); for those the watcher's
final ping is a fallback sent ``hooks_wait`` seconds after the state (for when the hooks' ping
never comes), and the server, which keeps the first ping of an id, keeps the hooks'. Other
runs' final pings wait only ``delay`` seconds, for an announcement still on its way.

Progress is kept in a cursor file (the last event's time, the ids of recent events, the runs
in progress, the runs announced by hooks, the pings still waiting): after a restart, or when
the Prefect API comes back, the events since the cursor are read again through the events API
and nothing is lost nor repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client as get_prefect_client
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventOrder,
)

from telemhq_plugins.core.delivery import Client, get_client, keep_replaying
from telemhq_plugins.core.logs import capture_internal_errors
from telemhq_plugins.core.payload import ErrorInfo, Status
from telemhq_plugins.core.policy import JobPolicy
from telemhq_plugins.core.provision import ScheduleSync, sync
from telemhq_plugins.prefect._announce import FLOW_RUN_RESOURCE, MONITORED_EVENT
from telemhq_plugins.prefect._hooks import end_run, new_run
from telemhq_plugins.prefect.schedules import deployment_schedules

__all__ = ["STATE_STATUS", "Watcher"]

logger = logging.getLogger("telemhq")

#: Prefect state name -> the ping's status (other states send nothing).
STATE_STATUS: dict[str, Status] = {
    "Completed": "success",
    "Failed": "failure",
    "Crashed": "failure",
    "TimedOut": "failure",
    "Cancelled": "cancelled",
    "AwaitingRetry": "retry",
}
_PREFIX = FLOW_RUN_RESOURCE  # also the prefix of the flow-run events' names
#: core's resolution by job name (the ping key), no start ping.
_OPTIONS = JobPolicy(send_start=False)
_MAX_SEEN = 5_000


#: when the second backfill runs after (re)connecting: twice the longest time the Prefect
#: server's event persister holds events before storing them (its default flush interval).
CATCH_UP_SECONDS = 10.0


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class _Running:
    """A flow run seen entering Running, until its end (kept in the cursor file)."""

    job: str
    attempt: int
    started_at: str
    details: dict[str, Any]
    last_beat: str | None = None


@dataclass
class _Due:
    """A final ping waiting for its moment: ``delay`` after the state (``hooks_wait`` for a run
    its hooks report), so the hooks' ping is stored when there is one. ``since``: when the state
    was seen, on the ``time.monotonic`` clock."""

    since: float
    job: str
    run_id: str
    attempt: int
    status: Status
    details: dict[str, Any]
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    error: ErrorInfo | None

    def saved(self) -> dict[str, Any]:
        """As kept in the cursor file: the time already waited instead of a clock reading."""
        return {
            "waited": max(time.monotonic() - self.since, 0.0),
            "job": self.job,
            "run_id": self.run_id,
            "attempt": self.attempt,
            "status": self.status,
            "details": self.details,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "error": [self.error.type, self.error.message] if self.error else None,
        }

    @classmethod
    def restored(cls, raw: dict[str, Any]) -> _Due:
        error = raw.get("error")
        return cls(
            time.monotonic() - float(raw.get("waited") or 0.0),
            str(raw["job"]),
            str(raw["run_id"]),
            int(raw["attempt"]),
            raw["status"],
            dict(raw.get("details") or {}),
            _parse_time(raw.get("started_at")),
            _parse_time(raw.get("ended_at")),
            ErrorInfo(str(error[0]), str(error[1])) if error else None,
        )


@dataclass
class _Cursor:
    since: dt.datetime | None = None
    seen: list[str] = field(default_factory=list)
    running: dict[str, _Running] = field(default_factory=dict)
    #: flow runs whose hooks announced that they report them, oldest first (a dict for order
    #: and membership; saved as a list).
    monitored: dict[str, None] = field(default_factory=dict)
    #: final pings waiting for their moment.
    pending: list[_Due] = field(default_factory=list)


class Watcher:
    """Follow the Prefect API's flow-run events and ping for them.

    ``cursor``: the progress file (default ``~/.telemhq/prefect-watch.json``);
    ``heartbeat_frequency``: the flows' ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` in seconds (None:
    Prefect's setting in this process); ``delay``: seconds a final ping waits; ``hooks_wait``:
    seconds it waits for a run whose hooks report it (the watcher's is then a fallback);
    ``schedules``: push deployment schedules (needs ``TELEMHQ_API_KEY``) every
    ``schedules_interval`` seconds; ``client``: TelemHQ's delivery client (default: the
    process's)."""

    def __init__(
        self,
        *,
        cursor: str | os.PathLike[str] | None = None,
        heartbeat_frequency: float | None = None,
        delay: float = 5.0,
        hooks_wait: float = 120.0,
        schedules: bool = True,
        schedules_interval: float = 300.0,
        client: Client | None = None,
    ) -> None:
        self.cursor_path = Path(cursor or Path.home() / ".telemhq" / "prefect-watch.json")
        if heartbeat_frequency is None:
            from prefect.settings import get_current_settings

            heartbeat_frequency = get_current_settings().flows.heartbeat_frequency
        self.heartbeat_frequency = heartbeat_frequency
        self.delay = delay
        self.hooks_wait = hooks_wait
        self.schedules = schedules
        self.schedules_interval = schedules_interval
        self.client = client or get_client()
        self.sent: list[tuple[str, str, int, Status]] = []  # (job, run id, attempt, status)
        self.last_sync: ScheduleSync | None = None
        self._cursor = self._load()
        self._seen = set(self._cursor.seen)
        self._next_sync = 0.0
        self._dirty = False  # the cursor changed since it was last written
        self._stop = asyncio.Event()

    # --- the cursor ------------------------------------------------------------------------

    def _load(self) -> _Cursor:
        try:
            raw = json.loads(self.cursor_path.read_text())
        except FileNotFoundError:
            return _Cursor()
        except (OSError, ValueError) as exc:
            logger.warning(
                "TelemHQ watcher: cursor %s unreadable (%s); starting fresh", self.cursor_path, exc
            )
            return _Cursor()
        running = {k: _Running(**v) for k, v in (raw.get("running") or {}).items()}
        return _Cursor(
            _parse_time(raw.get("since")),
            list(raw.get("seen") or []),
            running,
            dict.fromkeys(raw.get("monitored") or ()),
            [_Due.restored(item) for item in raw.get("pending") or ()],
        )

    def save(self) -> None:
        """Write the cursor (atomically: a crash never leaves half a file)."""
        cursor = self._cursor
        data = {
            "since": cursor.since.isoformat() if cursor.since else None,
            "seen": cursor.seen[-_MAX_SEEN:],
            "running": {k: vars(v) for k, v in cursor.running.items()},
            "monitored": list(cursor.monitored),
            "pending": [item.saved() for item in cursor.pending],
        }
        self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cursor_path.parent, prefix=".prefect-watch-")
        with os.fdopen(fd, "w") as out:
            json.dump(data, out)
        os.replace(tmp, self.cursor_path)

    # --- events ----------------------------------------------------------------------------

    def handle(self, event: Any) -> None:
        """One flow-run event (from the subscription or the backfill). Never raises."""
        with capture_internal_errors("prefect watcher event"):
            event_id = str(event.id)
            if event_id in self._seen:
                return
            self._seen.add(event_id)
            self._dirty = True
            cursor = self._cursor
            cursor.seen.append(event_id)
            if len(cursor.seen) > 2 * _MAX_SEEN:
                del cursor.seen[:-_MAX_SEEN]
                self._seen = set(cursor.seen)
            occurred: dt.datetime = event.occurred
            if cursor.since is None or occurred > cursor.since:
                cursor.since = occurred
            self._translate(event)

    def _translate(self, event: Any) -> None:
        resource = event.resource
        run_id = str(resource.id).removeprefix(_PREFIX)
        if event.event == MONITORED_EVENT:
            monitored = self._cursor.monitored
            monitored[run_id] = None
            if len(monitored) > _MAX_SEEN:
                del monitored[next(iter(monitored))]
            return
        name = str(event.event).removeprefix(_PREFIX)
        running = self._cursor.running
        if name == "heartbeat":
            if run_id in running:
                running[run_id].last_beat = event.occurred.isoformat()
            return
        attempt = int(resource.get("prefect.run-count") or 0) or 1
        when = _parse_time(resource.get("prefect.state-timestamp")) or event.occurred
        if resource.get("prefect.state-type") == "RUNNING":
            details = _details(event, run_id, attempt)
            running[run_id] = _Running(
                str(details["flow_name"]), attempt, when.isoformat(), details
            )
            logger.info(
                "TelemHQ watcher: flow run %s (%s) running, attempt %d",
                run_id,
                details["flow_name"],
                attempt,
            )
            return
        status = STATE_STATUS.get(name)
        if status is None:
            return
        seen = running.pop(run_id, None)
        details = seen.details if seen is not None else _details(event, run_id, attempt)
        logger.info(
            "TelemHQ watcher: flow run %s (%s) attempt %d %s%s",
            run_id, details["flow_name"], attempt, name,
            ": its hooks report it" if run_id in self._cursor.monitored else "",
        )  # fmt: skip
        error = None
        if status in ("failure", "retry", "cancelled"):
            message = resource.get("prefect.state-message") or name
            error = ErrorInfo(name, message)
        self._cursor.pending.append(
            _Due(
                time.monotonic(),
                str(details["flow_name"]),
                run_id,
                attempt,
                status,
                details,
                _parse_time(seen.started_at) if seen is not None else None,
                when,
                error,
            )
        )

    # --- time ------------------------------------------------------------------------------

    def tick(self, now: dt.datetime | None = None) -> None:
        """Send due pings and report runs whose heartbeat stopped. Never raises."""
        with capture_internal_errors("prefect watcher tick"):
            now = now or _now()
            clock = time.monotonic()
            waiting: list[_Due] = []
            for item in self._cursor.pending:
                monitored = item.run_id in self._cursor.monitored
                if clock - item.since < (self.hooks_wait if monitored else self.delay):
                    waiting.append(item)
                    continue
                self._dirty = True
                self._ping(item, " (fallback: its hooks report it)" if monitored else "")
            self._cursor.pending = waiting
            if self.heartbeat_frequency:
                window = dt.timedelta(seconds=2 * self.heartbeat_frequency)
                for run_id, run in list(self._cursor.running.items()):
                    beat = _parse_time(run.last_beat)
                    if beat is None or now - beat <= window:
                        continue
                    del self._cursor.running[run_id]
                    self._dirty = True
                    logger.info(
                        "TelemHQ watcher: flow run %s (%s): no heartbeat since %s",
                        run_id,
                        run.job,
                        run.last_beat,
                    )
                    silent = int((now - beat).total_seconds())
                    self._ping(
                        _Due(
                            0.0,
                            run.job,
                            run_id,
                            run.attempt,
                            "failure",
                            run.details,
                            _parse_time(run.started_at),
                            None,
                            ErrorInfo(
                                "NoHeartbeat",
                                f"no heartbeat for {silent} s: the flow run's process is gone",
                            ),
                        )
                    )

    def _ping(self, item: _Due, note: str = "") -> None:
        late = new_run(
            item.job, item.run_id, item.attempt, item.details, _OPTIONS,
            timed=False, started_at=item.started_at, client=self.client,
        )  # fmt: skip
        if late is None:
            return
        duration = None
        if item.started_at is not None and item.ended_at is not None:
            duration = max((item.ended_at - item.started_at).total_seconds() * 1000.0, 0.0)
        end_run(late, item.status, item.error, duration)
        self.sent.append((item.job, item.run_id, item.attempt, item.status))
        logger.info(
            "TelemHQ watcher: flow run %s (%s) attempt %d -> %s%s",
            item.run_id, item.job, item.attempt, item.status, note,
        )  # fmt: skip

    # --- the loop --------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Follow events until :meth:`stop`; reconnect (with a backfill from the cursor) when
        the Prefect API goes away."""
        keep_replaying(self.client)  # what flow-run processes spooled at their end
        ticker = asyncio.create_task(self._ticking())
        try:
            while not self._stop.is_set():
                try:
                    await self._follow()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    logger.warning("TelemHQ watcher: Prefect API unreachable (%s); retrying", exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), timeout=2.0)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            self.save()  # with the pings still waiting: the next start sends them in time
            self.client.flush()

    async def _follow(self) -> None:
        await self.backfill()
        event_filter = EventFilter(event=EventNameFilter(prefix=[_PREFIX, MONITORED_EVENT]))
        async with get_events_subscriber(filter=event_filter, reconnection_attempts=0) as events:
            logger.info("TelemHQ watcher: following Prefect flow-run events")
            stopping = asyncio.create_task(self._stop.wait())
            catching_up = asyncio.create_task(self._catch_up())
            try:
                while not self._stop.is_set():
                    step = asyncio.ensure_future(events.__anext__())
                    done, _ = await asyncio.wait(
                        {step, stopping}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if step not in done:
                        step.cancel()
                        return
                    self.handle(step.result())
            finally:
                stopping.cancel()
                catching_up.cancel()

    async def _catch_up(self) -> None:
        """Backfill once more after the Prefect server's event persister has flushed: an event
        emitted just before the subscription began may have been neither stored yet (the first
        backfill missed it) nor sent to the new subscriber. Events seen twice count once."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=CATCH_UP_SECONDS)
            return
        with capture_internal_errors("prefect watcher catch-up"):
            await self.backfill()

    async def backfill(self) -> int:
        """Handle the events since the cursor through the events API; how many were new."""
        since = self._cursor.since or _now() - dt.timedelta(minutes=1)
        event_filter = EventFilter(
            event=EventNameFilter(prefix=[_PREFIX, MONITORED_EVENT]),
            occurred=EventOccurredFilter(
                since=since - dt.timedelta(seconds=1),  # type: ignore[arg-type, unused-ignore]
                until=_now() + dt.timedelta(days=1),  # type: ignore[arg-type, unused-ignore]
            ),
            order=EventOrder.ASC,
        )
        count = 0
        async with get_prefect_client() as prefect:
            page = await prefect.read_events(filter=event_filter, limit=50)
            while True:
                for event in page.events:
                    before = len(self._seen)
                    self.handle(event)
                    count += len(self._seen) - before
                if not page.next_page:
                    break
                page = await prefect.read_events_page(str(page.next_page))
        logger.info("TelemHQ watcher: backfilled %d events since %s", count, since.isoformat())
        return count

    async def _ticking(self) -> None:
        while True:
            self.tick()
            if self.schedules and asyncio.get_event_loop().time() >= self._next_sync:
                self._next_sync = asyncio.get_event_loop().time() + self.schedules_interval
                with capture_internal_errors("prefect watcher schedules"):
                    jobs = await deployment_schedules()
                    self.last_sync = sync(jobs, orchestrator="prefect", client=self.client)
            if self._dirty:
                self._dirty = False
                with capture_internal_errors("prefect watcher cursor"):
                    self.save()
            await asyncio.sleep(0.5)


def _details(event: Any, run_id: str, attempt: int) -> dict[str, Any]:
    """The ``prefect`` block from an event's resource and related resources."""
    block: dict[str, Any] = {
        "flow_run_id": run_id,
        "flow_run_name": event.resource.get("prefect.resource.name"),
        "flow_name": None,
        "run_count": attempt,
        "tags": [],
    }
    for related in event.related:
        role = related.get("prefect.resource.role")
        name = related.get("prefect.resource.name")
        ident = str(related.get("prefect.resource.id") or "")
        if role == "flow":
            block["flow_name"] = name
        elif role == "deployment":
            block["deployment"] = {"id": ident.removeprefix("prefect.deployment."), "name": name}
        elif role == "work-pool":
            block["work_pool"] = name
        elif role == "tag":
            block["tags"].append(ident.removeprefix("prefect.tag."))
    if block["flow_name"] is None:
        block["flow_name"] = "prefect-flow"
    return block
