"""Trackers and their schedules as the orchestrator declares them: :func:`sync`.

An adapter translates its orchestrator's schedule objects (a Celery beat entry, an Airflow
timetable, a Prefect deployment schedule, a Dagster schedule definition) into
:class:`JobSchedule` values and calls :func:`sync`; the ``telemhq sync`` command does the same
from a ``telemhq.toml`` file. For each job, :func:`sync` makes sure a tracker exists and says
when the job is expected, so the server notices a run that never happened.

Which tracker is a job's: the one its pings go to (:meth:`Settings.ping_url_for`). A token
(explicit, or from ``TELEMHQ_TRACKERS``) names an existing tracker; otherwise the tracker is the
one whose slug is the job's slug (the ping key's ``/ping/<key>/<slug>``), created when missing.

What is written, through the management API (``TELEMHQ_API_KEY``, the client's base URL and
timeout), and only where it differs from what the server holds, so a second identical sync
writes nothing:

* the schedule (kind, cron or period, timezone, grace);
* the tags: ``tags`` plus the ``orchestrator`` are added; tags set by hand stay;
* the name, on creation (default: the job name) or when ``JobSchedule.name`` is given (a
  tracker named by hand keeps its name otherwise);
* the assertions, when ``JobSchedule.assertions`` is given;
* paused or not, when ``JobSchedule.paused`` is given (the orchestrator's own pause: a paused
  Airflow DAG, a paused Prefect deployment, a stopped Dagster schedule). ``paused=True`` pauses
  the tracker and tags it ``paused-by-orchestrator``; ``paused=False`` resumes a tracker carrying
  that tag (or ``pruned``), and the server restarts its clock, so a pause never ends in a late
  or down alert. A tracker paused by hand stays paused either way; ``None`` leaves it as it is.

``prune=True`` pauses (never deletes) trackers tagged with ``orchestrator`` that no job of the
set names, and tags them ``pruned``; a later sync that names the job again resumes a tracker
carrying that tag (a job paused by hand stays paused). Prune only from a process that sees
every job of that orchestrator.

Never raises: every problem becomes a :class:`SyncResult` and one log line (no API key: one
INFO line, every result ``skipped``; server unreachable; 401/403; a field the server refuses,
with its message). A successful sync is remembered for the process: the same set again returns
at once without asking the server (``cached=False`` asks anyway), for ten minutes at most, so
that what changed elsewhere (a pause by another process's sync) is put right at a later sync;
a sync that writes anything forgets every earlier one (a job paused, then active again).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx

from telemhq_plugins.core.config import Settings, slugify
from telemhq_plugins.core.cron import combine_crons
from telemhq_plugins.core.delivery import Client, get_client
from telemhq_plugins.core.logs import capture_internal_errors, log_once

__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "PAUSED_TAG",
    "PRUNED_TAG",
    "JobSchedule",
    "Outcome",
    "ScheduleSync",
    "SyncResult",
    "sync",
]

logger = logging.getLogger("telemhq")

DEFAULT_GRACE_SECONDS: Final = 300
#: Tag that marks a tracker paused by prune (so that a later sync may resume it).
PRUNED_TAG: Final = "pruned"
#: Tag that marks a tracker paused because its job is paused in the orchestrator.
PAUSED_TAG: Final = "paused-by-orchestrator"
#: Tags that let a sync resume a paused tracker: pauses that sync made, not a person.
_SYNC_PAUSE_TAGS: Final = frozenset({PRUNED_TAG, PAUSED_TAG})
#: The deadline of a sync when none is given, in multiples of ``settings.timeout``.
TIMEOUT_FACTOR: Final = 4
_MAX_NAME: Final = 200
_PAGE: Final = 500
_MAX_REMEMBERED: Final = 64
#: How long a remembered sync is trusted, in seconds.
_REMEMBER_SECONDS: Final = 600.0

Outcome = Literal["created", "updated", "unchanged", "paused", "skipped", "error"]
_DONE: Final = frozenset({"created", "updated", "unchanged", "paused"})


@dataclass(frozen=True, slots=True)
class JobSchedule:
    """What the server should know about one job.

    ``schedule``: a 5-field cron expression; several (a list, as Dagster allows) combined into
    one by :func:`~telemhq_plugins.core.cron.combine_crons` (merged when they differ in one
    field, else the one that fires most often); a period in seconds or a ``timedelta``; or None
    (the tracker expects nothing). ``timezone`` (IANA) applies to a cron only (None: UTC).
    ``grace_seconds`` None means 300. ``assertions`` None leaves the tracker's as they are.
    ``paused``: whether the orchestrator has the job paused (None: it does not say).
    """

    job: str
    schedule: str | Sequence[str] | float | int | dt.timedelta | None
    timezone: str | None = None
    grace_seconds: float | None = None
    tags: tuple[str, ...] = ()
    name: str | None = None
    token: str | None = None
    assertions: tuple[str, ...] | None = None
    paused: bool | None = None

    def spec(self) -> dict[str, Any]:
        """The server's schedule JSON; ``ValueError`` when the schedule cannot be one."""
        value = self.schedule
        if value is None:
            return {"kind": "none"}
        grace = DEFAULT_GRACE_SECONDS if self.grace_seconds is None else self.grace_seconds
        if isinstance(grace, bool) or not math.isfinite(grace) or grace < 0:
            raise ValueError(f"grace_seconds must be a number >= 0, got {self.grace_seconds!r}")
        grace_seconds = math.ceil(grace)
        if isinstance(value, str) or (
            isinstance(value, Sequence) and all(isinstance(v, str) for v in value)
        ):
            cron = value.strip() if isinstance(value, str) else combine_crons(value)
            if not cron:
                raise ValueError("the cron expression is empty")
            return {
                "kind": "cron",
                "cron": cron,
                "timezone": self.timezone or "UTC",
                "grace_seconds": grace_seconds,
            }
        if isinstance(value, dt.timedelta):
            seconds = value.total_seconds()
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            raise ValueError(
                f"schedule must be a cron expression, a number of seconds, a timedelta or "
                f"None, got {value!r}"
            )
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"a period must be a positive number of seconds, got {value!r}")
        return {
            "kind": "period",
            "period_seconds": math.ceil(seconds),
            "grace_seconds": grace_seconds,
        }


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What :func:`sync` did for one job (or, for ``paused``, one pruned tracker)."""

    job: str
    outcome: Outcome
    detail: str = ""
    tracker_id: str | None = None
    changed: tuple[str, ...] = ()  # which fields were written


class ScheduleSync:
    """A sync in progress or done (what :func:`sync` returns). ``results`` fills as it goes."""

    def __init__(self) -> None:
        self.results: list[SyncResult] = []
        self._done = threading.Event()
        self.thread: threading.Thread | None = None

    def wait(self, timeout: float | None = None) -> list[SyncResult]:
        """Wait until done (or ``timeout`` seconds) and return the results so far."""
        self._done.wait(timeout)
        return list(self.results)

    @property
    def done(self) -> bool:
        return self._done.is_set()


def sync(
    schedules: Iterable[JobSchedule],
    *,
    orchestrator: str | None = None,
    prune: bool = False,
    api_key: str | None = None,
    client: Client | None = None,
    background: bool = True,
    timeout: float | None = None,
    cached: bool = True,
    dry_run: bool = False,
) -> ScheduleSync:
    """Make the server's trackers match ``schedules`` (see the module docstring).

    ``orchestrator`` tags each tracker (and scopes ``prune``); ``api_key`` defaults to
    ``TELEMHQ_API_KEY``; ``client`` gives the settings (default: the process's client). With
    ``background=True`` the work runs on a daemon thread and this returns at once; either way
    it ends within ``timeout`` seconds (default: a few times ``settings.timeout``) and never
    raises. ``dry_run=True`` reads the server and reports what would be written (``detail``:
    each field, old -> new), writing nothing.
    """
    state = ScheduleSync()
    running = False
    with capture_internal_errors("provision.sync"):
        jobs = list(schedules)

        def work() -> None:
            try:
                with capture_internal_errors("provision.sync"):
                    _Syncer(
                        state,
                        orchestrator=orchestrator,
                        prune=prune,
                        api_key=api_key,
                        client=client,
                        timeout=timeout,
                        cached=cached,
                        dry_run=dry_run,
                    ).run(jobs)
            finally:
                state._done.set()

        if background:
            thread = threading.Thread(target=work, name="telemhq-sync", daemon=True)
            thread.start()
            state.thread = thread
        else:
            work()
        running = True
    if not running:  # the schedules could not be read, or no thread could start (logged)
        state._done.set()
    return state


# --- the work --------------------------------------------------------------------------------


class _Unreachable(Exception):
    """The server did not answer (connection, timeout); ends the sync."""


class _Refused(Exception):
    """The API key was refused (401/403); ends the sync."""


@dataclass(slots=True)
class _Job:
    schedule: JobSchedule
    api_base: str
    token: str | None  # the tracker's token when the job's pings name one, else by slug
    slug: str
    spec: dict[str, Any] | None = None
    error: str | None = None


@dataclass(slots=True)
class _Server:
    """One management API during a sync: its trackers and which of them jobs claimed."""

    http: httpx.Client
    api_base: str
    trackers: list[dict[str, Any]] = field(default_factory=list)
    kept: set[int] = field(default_factory=set)  # trackers some job of the set names
    taken: dict[int, str] = field(default_factory=dict)  # tracker id -> job whose spec it took


#: successful syncs of this process: key -> results
_remembered: dict[tuple[Any, ...], tuple[float, list[SyncResult]]] = {}
_remembered_lock = threading.Lock()


class _Syncer:
    def __init__(
        self,
        state: ScheduleSync,
        *,
        orchestrator: str | None,
        prune: bool,
        api_key: str | None,
        client: Client | None,
        timeout: float | None,
        cached: bool,
        dry_run: bool,
    ) -> None:
        self.state = state
        self.orchestrator = orchestrator
        self.prune = prune
        self.settings: Settings = (client or get_client()).settings
        # The settings' key (environment or config file); the environment also for a client
        # built from explicit settings.
        self.api_key = api_key or self.settings.api_key or os.environ.get("TELEMHQ_API_KEY") or None
        budget = TIMEOUT_FACTOR * self.settings.timeout if timeout is None else timeout
        self.deadline = time.monotonic() + budget
        self.cached = cached and not dry_run
        self.dry_run = dry_run

    def add(self, result: SyncResult) -> None:
        self.state.results.append(result)

    def run(self, schedules: list[JobSchedule]) -> None:
        if self.settings.disabled:
            for js in schedules:
                self.add(SyncResult(js.job, "skipped", "TelemHQ is disabled"))
            return
        if not self.api_key:
            log_once(
                logger,
                logging.INFO,
                ("provision", "no_api_key"),
                "TelemHQ: TELEMHQ_API_KEY is not set: job schedules are not sent to the "
                "server (pings still work; missed runs are not detected)",
            )
            for js in schedules:
                self.add(SyncResult(js.job, "skipped", "TELEMHQ_API_KEY is not set"))
            return
        jobs = [self._plan(js) for js in schedules]
        key = self._memo_key(jobs)
        if self.cached:
            with _remembered_lock:
                at, earlier = _remembered.get(key, (-math.inf, []))
            if time.monotonic() - at < _REMEMBER_SECONDS:
                for result in earlier:
                    self.add(
                        SyncResult(
                            result.job,
                            "unchanged",
                            "synced earlier in this process",
                            result.tracker_id,
                        )
                    )
                return
        by_base: dict[str, list[_Job]] = {}
        for job in jobs:
            by_base.setdefault(job.api_base, []).append(job)
        for api_base, group in by_base.items():
            self._sync_server(api_base, group)
        self._log_summary()
        if not self.dry_run and all(r.outcome in _DONE for r in self.state.results):
            wrote = any(r.changed for r in self.state.results)
            with _remembered_lock:
                # A set that keeps changing; or a write that may make other sets' memory stale.
                if len(_remembered) >= _MAX_REMEMBERED or wrote:
                    _remembered.clear()
                _remembered[key] = (time.monotonic(), list(self.state.results))

    def _plan(self, js: JobSchedule) -> _Job:
        url = self.settings.ping_url_for(js.job, js.token)
        head, _, path = (url or "").partition("/ping/")
        parts = path.strip("/").split("/") if path else []
        api_base = (head if url else self.settings.base_url) + "/api/v1"
        token = parts[0] if len(parts) == 1 else None
        slug = parts[1] if len(parts) == 2 else slugify(js.job)  # a mapped ping-key URL's own
        job = _Job(js, api_base, token, slug)
        try:
            job.spec = js.spec()
        except ValueError as exc:
            job.error = str(exc)
        return job

    def _memo_key(self, jobs: list[_Job]) -> tuple[Any, ...]:
        described = tuple(
            (
                job.api_base,
                job.token,
                job.slug,
                json.dumps(job.spec, sort_keys=True),
                job.schedule.name,
                job.schedule.tags,
                job.schedule.assertions,
                job.schedule.paused,
            )
            for job in jobs
        )
        return (self.api_key, self.orchestrator, self.prune, described)

    # -- one server ---------------------------------------------------------------------------

    def _sync_server(self, api_base: str, jobs: list[_Job]) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        with httpx.Client(headers=headers, timeout=self.settings.timeout) as http:
            server = _Server(http, api_base)
            done: set[int] = set()
            try:
                server.trackers = self._list(server)
                for index, job in enumerate(jobs):
                    self._sync_job(server, job)
                    done.add(index)
                if self.prune:
                    self._prune(server)
            except _Unreachable as exc:
                self._fail_rest(jobs, done, f"server unreachable: {exc}")
                log_once(
                    logger,
                    logging.WARNING,
                    ("provision", "unreachable", api_base),
                    "TelemHQ: cannot sync job schedules, %s does not answer (%s)",
                    api_base,
                    exc,
                )
            except _Refused as exc:
                self._fail_rest(jobs, done, str(exc))
                log_once(
                    logger,
                    logging.ERROR,
                    ("provision", "refused", api_base),
                    "TelemHQ: cannot sync job schedules: %s (check TELEMHQ_API_KEY: a "
                    "read-write key of %s)",
                    exc,
                    api_base,
                )

    def _fail_rest(self, jobs: list[_Job], done: set[int], detail: str) -> None:
        for index, job in enumerate(jobs):
            if index not in done:
                self.add(SyncResult(job.schedule.job, "error", detail))

    def _request(self, server: _Server, method: str, path: str, **kw: Any) -> httpx.Response:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _Unreachable("the sync ran out of time")
        url = server.api_base + path
        try:
            response = server.http.request(
                method, url, timeout=min(self.settings.timeout, remaining), **kw
            )
        except httpx.TransportError as exc:
            raise _Unreachable(f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)) from None
        if response.status_code in (401, 403):
            raise _Refused(f"HTTP {response.status_code}: {_error_text(response)}")
        return response

    def _write(self, server: _Server, method: str, path: str, **kw: Any) -> httpx.Response | None:
        """A request that changes something; None (nothing sent) in a dry run."""
        return None if self.dry_run else self._request(server, method, path, **kw)

    def _list(self, server: _Server) -> list[dict[str, Any]]:
        """Every tracker (one listing serves token and slug lookups and prune)."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(10_000):  # bounded, in case a server's cursor loops
            params = {"limit": str(_PAGE), **({"cursor": cursor} if cursor else {})}
            response = self._request(server, "GET", "/trackers", params=params)
            page = _json(response)
            if response.status_code >= 400 or not isinstance(page.get("items"), list):
                raise _Unreachable(
                    f"GET /trackers answered HTTP {response.status_code}: {_error_text(response)}"
                )
            items.extend(item for item in page["items"] if isinstance(item, dict))
            cursor = page.get("next")
            if not cursor:
                break
        return items

    def _sync_job(self, server: _Server, job: _Job) -> None:
        js = job.schedule
        trackers, kept, taken = server.trackers, server.kept, server.taken
        if job.token is not None:
            found = next((t for t in trackers if t.get("token") == job.token), None)
        else:
            found = next((t for t in trackers if t.get("slug") == job.slug), None)
        if found is not None:
            kept.add(found["id"])
        if job.error is not None or job.spec is None:
            self._refused(js.job, job.error or "no schedule", found)
            return
        if found is None and job.token is not None:
            self.add(SyncResult(js.job, "error", "no tracker has the token this job pings"))
            return
        if found is not None:
            other = taken.get(found["id"])
            if other is not None and other != js.job:
                detail = f"tracker {found['slug']!r} already takes the schedule of job {other!r}"
                self.add(SyncResult(js.job, "skipped", detail, str(found["id"])))
                return
            taken[found["id"]] = js.job
            self._update(server, js, job.spec, found)
            return
        body: dict[str, Any] = {
            "name": (js.name or js.job).strip()[:_MAX_NAME],
            "slug": job.slug,
            "schedule": job.spec,
            "tags": list(
                dict.fromkeys(
                    [*js.tags, *self._orchestrator_tag(), *([PAUSED_TAG] if js.paused else [])]
                )
            ),
        }
        if js.assertions is not None:
            body["assertions"] = list(js.assertions)
        response = self._write(server, "POST", "/trackers", json=body)
        changed = tuple(sorted(body)) + (("paused",) if js.paused else ())
        if response is None:
            shown = {**body, **({"paused": True} if js.paused else {})}
            detail = "; ".join(f"{k}: {_show(v)}" for k, v in shown.items())
            self.add(SyncResult(js.job, "created", detail, None, changed))
            return
        if response.status_code == 409:  # created meanwhile (its first ping): update it
            response = self._request(server, "GET", f"/trackers/{quote(job.slug)}")
            if response.status_code < 400:
                created = _json(response)
                trackers.append(created)
                kept.add(created["id"])
                taken[created["id"]] = js.job
                self._update(server, js, job.spec, created)
                return
        if response.status_code >= 400:
            self._refused(js.job, _error_text(response), None)
            return
        created = _json(response)
        trackers.append(created)  # another job of the set may name the same slug
        kept.add(created["id"])
        taken[created["id"]] = js.job
        if js.paused:  # created paused: a job paused in the orchestrator expects nothing yet
            paused = self._request(server, "POST", f"/trackers/{created['id']}/pause")
            if paused.status_code >= 400:
                self._refused(js.job, _error_text(paused), created)
                return
            created.update(paused=True)
        self.add(SyncResult(js.job, "created", "", str(created["id"]), changed))

    def _orchestrator_tag(self) -> list[str]:
        return [self.orchestrator] if self.orchestrator else []

    def _update(
        self, server: _Server, js: JobSchedule, spec: dict[str, Any], tracker: dict[str, Any]
    ) -> None:
        pause = _pause_change(js, tracker)
        patch = _differences(js, spec, tracker, self._orchestrator_tag(), pause)
        tracker_id = str(tracker["id"])
        path = f"/trackers/{tracker_id}"
        if patch:
            response = self._write(server, "PATCH", path, json=patch)
            if response is not None and response.status_code >= 400:
                self._refused(js.job, _error_text(response), tracker)
                return
        changed = tuple(sorted(patch))
        if pause is not None:
            response = self._write(server, "POST", f"{path}/{'pause' if pause else 'resume'}")
            if response is not None and response.status_code >= 400:
                self._refused(js.job, _error_text(response), tracker)
                return
            changed = (*changed, "paused")
            patch["paused"] = pause
        outcome: Outcome = "updated" if changed else "unchanged"
        detail = ""
        if self.dry_run:
            detail = "; ".join(
                f"{k}: {_show(tracker.get(k))} -> {_show(v)}" for k, v in patch.items()
            )
        self.add(SyncResult(js.job, outcome, detail, tracker_id, changed))

    def _refused(self, job: str, detail: str, tracker: dict[str, Any] | None) -> None:
        tracker_id = None if tracker is None else str(tracker["id"])
        self.add(SyncResult(job, "error", detail, tracker_id))
        log_once(
            logger,
            logging.WARNING,
            ("provision", "job", job, detail),
            "TelemHQ: the tracker of job %r was not synced: %s",
            job,
            detail,
        )

    def _prune(self, server: _Server) -> None:
        if not self.orchestrator:
            log_once(
                logger,
                logging.WARNING,
                ("provision", "prune_without_orchestrator"),
                "TelemHQ: prune needs an orchestrator tag to know which trackers are its own; "
                "nothing was paused",
            )
            return
        for tracker in server.trackers:
            tags = tracker.get("tags") or []
            if (
                self.orchestrator not in tags
                or tracker["id"] in server.kept
                or tracker.get("paused")
            ):
                continue
            path = f"/trackers/{tracker['id']}"
            changed: tuple[str, ...] = ("paused",)
            if PRUNED_TAG not in tags:
                response = self._write(server, "PATCH", path, json={"tags": [*tags, PRUNED_TAG]})
                if response is not None and response.status_code >= 400:
                    self._refused(tracker["name"], _error_text(response), tracker)
                    continue
                changed = ("tags", "paused")
            response = self._write(server, "POST", f"{path}/pause")
            if response is not None and response.status_code >= 400:
                self._refused(tracker["name"], _error_text(response), tracker)
                continue
            detail = f"no job of this {self.orchestrator} set names tracker {tracker['slug']!r}"
            self.add(SyncResult(tracker["name"], "paused", detail, str(tracker["id"]), changed))

    def _log_summary(self) -> None:
        counts: dict[str, int] = {}
        for result in self.state.results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        logger.info(
            "TelemHQ: job schedules synced (%s)",
            ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "none",
        )


def _pause_change(js: JobSchedule, tracker: dict[str, Any]) -> bool | None:
    """True to pause ``tracker``, False to resume it, None to leave it as it is.

    A sync resumes only what a sync paused, never a tracker paused by hand: with
    ``paused=False`` a ``pruned`` or ``paused-by-orchestrator`` tracker, with ``paused=None``
    (the orchestrator does not say) a ``pruned`` one only."""
    paused = bool(tracker.get("paused"))
    if js.paused:
        return None if paused else True
    tags = set(tracker.get("tags") or ())
    resumable = _SYNC_PAUSE_TAGS if js.paused is False else {PRUNED_TAG}
    return False if paused and not tags.isdisjoint(resumable) else None


def _differences(
    js: JobSchedule,
    spec: dict[str, Any],
    tracker: dict[str, Any],
    extra_tags: list[str],
    pause: bool | None = None,
) -> dict[str, Any]:
    """The PATCH body that makes ``tracker`` match the job (empty when it does); ``pause`` is
    what :func:`_pause_change` decided, whose tag goes with it."""
    patch: dict[str, Any] = {}
    if tracker.get("schedule") != spec:
        patch["schedule"] = spec
    if js.name is not None and tracker.get("name") != js.name.strip()[:_MAX_NAME]:
        patch["name"] = js.name.strip()[:_MAX_NAME]
    tags = list(tracker.get("tags") or [])
    if pause is not None:
        stays_paused = pause
    else:  # left as it is: paused by a sync, and the orchestrator still has it paused
        stays_paused = bool(tracker.get("paused")) and (
            (js.paused is True and not _SYNC_PAUSE_TAGS.isdisjoint(tags))
            or (js.paused is None and PAUSED_TAG in tags)
        )
    wanted = [t for t in tags if t != PRUNED_TAG and (stays_paused or t != PAUSED_TAG)]
    additions = [*js.tags, *extra_tags, *([PAUSED_TAG] if stays_paused else [])]
    wanted += [t for t in dict.fromkeys(additions) if t not in wanted]
    if wanted != tags:
        patch["tags"] = wanted
    if js.assertions is not None:
        wanted_assertions = [a.strip() for a in js.assertions]
        if list(tracker.get("assertions") or []) != wanted_assertions:
            patch["assertions"] = wanted_assertions
    return patch


def _show(value: Any) -> str:
    """A field's value for a dry run's report."""
    return json.dumps(value, ensure_ascii=False)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_text(response: httpx.Response) -> str:
    """The server's own message (``{"error": ...}``), else the start of the body."""
    message = _json(response).get("error")
    if isinstance(message, str) and message:
        return message
    return f"HTTP {response.status_code}: {response.text[:200]}"
