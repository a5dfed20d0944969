"""Beat schedule awareness: tell each tracker when its task is expected, so the server can
detect a missed run (a beat that died, a worker that never picked the task up).

Off by default. When enabled (``instrument(beat_schedules=True)`` or
``TELEMHQ_CELERY_BEAT_SCHEDULES=1``), at ``beat_init`` a background thread reads beat's
schedule entries (read only: the schedule file is never written, beat keeps its own state) and
sets each monitored task's tracker schedule through the management API
(``PATCH /api/v1/trackers/{id}`` with ``TELEMHQ_API_KEY``):

* ``crontab(...)`` -> ``{"kind": "cron", "cron": "<5 fields>", "timezone": <app tz>}``
* ``schedule(timedelta)`` / a number of seconds -> ``{"kind": "period", "period_seconds": n}``

plus ``grace_seconds``. Other schedule types (``solar``, custom classes) are skipped and
logged, as is a crontab restricting both day of month and day of week (Celery requires both,
cron accepts either: the server would expect runs that never happen).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx
from celery.schedules import crontab, schedule

from telemhq_plugins.celery._context import DEFAULT_EXCLUDE, TaskPolicy, resolve_policy
from telemhq_plugins.core.delivery import get_client
from telemhq_plugins.core.logs import capture_internal_errors

__all__ = ["BeatScheduleSync", "PushResult", "cron_expression", "schedule_spec"]

logger = logging.getLogger("telemhq")

#: (field, first, last) of a cron expression, in order.
_CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day_of_month", 1, 31),
    ("month_of_year", 1, 12),
    ("day_of_week", 0, 6),
)


def _cron_field(values: Iterable[int], first: int, last: int) -> str:
    """``{0, 1, 2, 5}`` -> ``0-2,5``; the full range -> ``*``."""
    ordered = sorted(set(values))
    if ordered == list(range(first, last + 1)):
        return "*"
    parts: list[str] = []
    start = prev = ordered[0]
    for value in [*ordered[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if value is not None:
            start = prev = value
    return ",".join(parts)


def cron_expression(entry: crontab) -> str | None:
    """A Celery ``crontab`` as a standard 5-field cron string (Sunday = 0 in both), or None
    when cron cannot say the same thing (both day of month and day of week restricted)."""
    fields = [_cron_field(getattr(entry, name), first, last) for name, first, last in _CRON_FIELDS]
    if fields[2] != "*" and fields[4] != "*":
        return None
    return " ".join(fields)


def schedule_spec(
    entry_schedule: Any, *, grace: float = 300.0, app: Any = None
) -> dict[str, Any] | None:
    """The tracker schedule for a beat entry's schedule, or None if it has no equivalent.

    A crontab fires in its app's timezone; pass beat's ``app``: entries read back from beat's
    schedule file are unpickled without theirs (they would otherwise report the default app's).
    """
    grace_seconds = max(0, math.ceil(grace))
    if isinstance(entry_schedule, crontab):
        expression = cron_expression(entry_schedule)
        if expression is None:
            return None
        tz = app.timezone if app is not None else getattr(entry_schedule, "tz", None)
        timezone = getattr(tz, "key", None) or (str(tz) if tz is not None else "UTC")
        return {
            "kind": "cron",
            "cron": expression,
            "timezone": timezone,
            "grace_seconds": grace_seconds,
        }
    if type(entry_schedule) is schedule:  # not subclasses (solar etc. change the meaning)
        seconds = entry_schedule.run_every.total_seconds()
    elif isinstance(entry_schedule, (int, float)) and not isinstance(entry_schedule, bool):
        seconds = float(entry_schedule)
    else:
        return None
    if seconds <= 0:
        return None
    return {"kind": "period", "period_seconds": math.ceil(seconds), "grace_seconds": grace_seconds}


@dataclass(frozen=True, slots=True)
class PushResult:
    """What happened to one beat entry."""

    entry: str
    task: str
    outcome: Literal["updated", "created", "skipped", "not_found", "error"]
    detail: str = ""
    tracker_id: str | None = None
    schedule: dict[str, Any] | None = None


class BeatScheduleSync:
    """Push beat's schedule entries to their trackers (see the module docstring)."""

    def __init__(
        self,
        *,
        app: Any = None,
        grace: float = 300.0,
        api_key: str | None = None,
        include: Iterable[str] = (),
        exclude: Iterable[str] = DEFAULT_EXCLUDE,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.app = app
        self.grace = grace
        self.api_key = api_key
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self._transport = transport
        self.thread: threading.Thread | None = None
        self.results: list[PushResult] = []

    def on_beat_init(self, sender: Any = None, **_: Any) -> None:
        """``beat_init`` receiver: push from a daemon thread, so beat starts on time even
        when the server is slow or down."""
        with capture_internal_errors("celery.beat_init"):
            app = getattr(sender, "app", None)
            if self.app is not None and app is not self.app:
                return
            entries = dict(sender.scheduler.schedule)  # a copy: beat keeps mutating its own
            self.thread = threading.Thread(
                target=self._push_logged, args=(entries, app), name="telemhq-beat", daemon=True
            )
            self.thread.start()

    def _push_logged(self, entries: Mapping[str, Any], app: Any) -> None:
        with capture_internal_errors("celery.beat_push"):
            self.results = self.push(entries, app=app)
            for result in self.results:
                level = logging.INFO if result.outcome == "updated" else logging.WARNING
                logger.log(
                    level,
                    "TelemHQ: beat entry %r (%s): schedule %s %s",
                    result.entry,
                    result.task,
                    result.outcome,
                    result.detail,
                )

    def policy_for(self, task_name: str, app: Any) -> TaskPolicy | None:
        """The task's policy, from its ``telemhq`` option when beat's app has it loaded."""
        task = app.tasks.get(task_name) if app is not None else None
        return resolve_policy(
            task_name,
            getattr(task, "telemhq", None),
            include=self.include,
            exclude=self.exclude,
        )

    def push(self, entries: Mapping[str, Any], *, app: Any = None) -> list[PushResult]:
        """Set the schedule of each entry's tracker; synchronous, never raises."""
        settings = get_client().settings
        api_key = self.api_key or os.environ.get("TELEMHQ_API_KEY")
        results: list[PushResult] = []
        planned: dict[str, tuple[str, str, dict[str, Any]]] = {}  # ping URL -> entry
        for name, entry in entries.items():
            task_name = str(getattr(entry, "task", name))
            policy = self.policy_for(task_name, app)
            if policy is None or settings.disabled:
                results.append(PushResult(name, task_name, "skipped", "not monitored"))
                continue
            spec = schedule_spec(getattr(entry, "schedule", None), grace=self.grace, app=app)
            if spec is None:
                detail = f"no tracker equivalent for {getattr(entry, 'schedule', None)!r}"
                results.append(PushResult(name, task_name, "skipped", detail))
                continue
            url = settings.ping_url_for(task_name, policy.token)
            if url is None:
                results.append(PushResult(name, task_name, "skipped", "no tracker configured"))
                continue
            if url in planned and planned[url][2] != spec:
                other = planned[url][0]
                detail = f"tracker already takes the schedule of entry {other!r}"
                results.append(PushResult(name, task_name, "skipped", detail))
                continue
            planned[url] = (name, task_name, spec)
        if not planned:
            return results
        if not api_key:
            return results + [
                PushResult(name, task, "skipped", "TELEMHQ_API_KEY is not set", schedule=spec)
                for name, task, spec in planned.values()
            ]
        with httpx.Client(
            timeout=settings.timeout,
            transport=self._transport,
            headers={"Authorization": f"Bearer {api_key}"},
        ) as http:
            listed: dict[str, list[dict[str, Any]]] = {}  # API base -> its trackers
            for url, (name, task_name, spec) in planned.items():
                # The management API lives on the server the pings go to.
                api_base = url.split("/ping/", 1)[0] + "/api/v1"
                try:
                    path = url.split("/ping/", 1)[-1].strip("/").split("/")
                    if len(path) == 2:  # name-based: <ping_key>/<slug>; the API takes the slug
                        results.append(
                            self._put_by_slug(
                                http,
                                api_base,
                                name=name,
                                task_name=task_name,
                                slug=path[1],
                                spec=spec,
                            )
                        )
                        continue
                    if api_base not in listed:
                        listed[api_base] = _list_trackers(http, api_base)
                    found = next((t for t in listed[api_base] if t.get("token") == path[0]), None)
                    if found is None:
                        detail = f"no tracker has the token of {_redact(url)}"
                        results.append(
                            PushResult(name, task_name, "not_found", detail, schedule=spec)
                        )
                        continue
                    response = http.patch(
                        f"{api_base}/trackers/{quote(str(found['id']), safe='')}",
                        json={"schedule": spec},
                    )
                    results.append(_outcome(response, name, task_name, spec, "updated"))
                except (httpx.HTTPError, ValueError) as exc:
                    results.append(PushResult(name, task_name, "error", str(exc), schedule=spec))
        return results

    @staticmethod
    def _put_by_slug(
        http: httpx.Client,
        api_base: str,
        *,
        name: str,
        task_name: str,
        slug: str,
        spec: dict[str, Any],
    ) -> PushResult:
        """Update the tracker ``slug``; create it (as its first ping would) when missing, so
        a first run that never happens is detected too."""
        response = http.patch(
            f"{api_base}/trackers/{quote(slug, safe='')}", json={"schedule": spec}
        )
        if response.status_code != 404:
            return _outcome(response, name, task_name, spec, "updated")
        response = http.post(
            f"{api_base}/trackers", json={"name": task_name, "slug": slug, "schedule": spec}
        )
        return _outcome(response, name, task_name, spec, "created")


def _outcome(
    response: httpx.Response,
    name: str,
    task_name: str,
    spec: dict[str, Any],
    success: Literal["updated", "created"],
) -> PushResult:
    tracker_id: str | None = None
    if response.status_code < 400:
        data = response.json()
        tracker_id = str(data.get("id")) if isinstance(data, dict) else None
        return PushResult(name, task_name, success, "", tracker_id, spec)
    detail = f"HTTP {response.status_code}: {response.text[:300]}"
    return PushResult(name, task_name, "error", detail, None, spec)


def _list_trackers(http: httpx.Client, api_base: str) -> list[dict[str, Any]]:
    """Every tracker, following the ``next`` cursor (bounded, in case a server loops)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1_000):
        params: dict[str, str] = {"limit": "500"}
        if cursor:
            params["cursor"] = cursor
        response = http.get(f"{api_base}/trackers", params=params)
        response.raise_for_status()
        page = response.json()
        if not isinstance(page, dict) or not isinstance(page.get("items"), list):
            raise ValueError("GET /api/v1/trackers did not answer {items: [...], next: ...}")
        items.extend(item for item in page["items"] if isinstance(item, dict))
        cursor = page.get("next")
        if not cursor:
            break
    return items


def _redact(url: str) -> str:
    """A ping URL with its secret part (token or ping key) shortened, for logs."""
    head, _, path = url.partition("/ping/")
    return f"{head}/ping/{path[:4]}..."
