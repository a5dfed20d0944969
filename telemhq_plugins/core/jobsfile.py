"""The ``[[jobs]]`` table of ``telemhq.toml``: trackers and their assertions as code.

For cron jobs and scripts that no orchestrator schedules; ``telemhq sync`` applies it::

    [[jobs]]
    job = "nightly-backup"          # required: the job name (its slug names the tracker)
    schedule = "0 3 * * *"          # cron, several crons (a list), seconds, or omitted (none)
    timezone = "Europe/Berlin"      # cron only (default UTC)
    grace = 900                     # seconds before a missed run is "down" (default 300)
    assertions = ["files_copied > 0", "errors = 0"]
    tags = ["backups"]
    name = "Nightly backup"         # tracker name (default: the job name)
    token = "..."                   # an existing tracker's token or ping URL (default: by slug)

Every problem is a :class:`JobsFileError` naming the file, the job and the field.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Final

from telemhq_plugins.core.assertions import AssertionSyntaxError, parse_assertion
from telemhq_plugins.core.provision import JobSchedule

__all__ = ["FIELDS", "JobsFileError", "read_jobs"]

FIELDS: Final = ("job", "schedule", "timezone", "grace", "assertions", "tags", "name", "token")


class JobsFileError(ValueError):
    """A ``[[jobs]]`` entry that cannot be used; the message says where and what."""


def read_jobs(path: Path) -> list[JobSchedule]:
    """The jobs of ``path`` (a TOML file with a ``[[jobs]]`` array of tables)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise JobsFileError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise JobsFileError(f"{path}: not valid TOML: {exc}") from None
    entries = data.get("jobs")
    if entries is None:
        raise JobsFileError(f'{path}: no [[jobs]] table (add [[jobs]] with job = "...")')
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise JobsFileError(f"{path}: jobs must be an array of tables ([[jobs]])")
    jobs: list[JobSchedule] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries, 1):
        job = _job(entry, f"{path}: [[jobs]] #{index}")
        if job.job in seen:
            raise JobsFileError(
                f"{path}: [[jobs]] #{index}: job {job.job!r} is already entry #{seen[job.job]}"
            )
        seen[job.job] = index
        jobs.append(job)
    return jobs


def _job(entry: dict[str, Any], where: str) -> JobSchedule:
    name = entry.get("job")
    if not isinstance(name, str) or not name.strip():
        raise JobsFileError(f'{where}: job must be a non-empty string (job = "nightly-backup")')
    where = f"{where} ({name})"
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise JobsFileError(
            f"{where}: unknown field {unknown[0]!r}; the fields are {', '.join(FIELDS)}"
        )

    def text(field: str) -> str | None:
        value = entry.get(field)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise JobsFileError(f"{where}: {field} must be a non-empty string, got {value!r}")
        return value

    def strings(field: str) -> tuple[str, ...] | None:
        value = entry.get(field)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise JobsFileError(f"{where}: {field} must be a list of strings, got {value!r}")
        return tuple(value)

    schedule = entry.get("schedule")
    if isinstance(schedule, bool) or not (
        schedule is None
        or isinstance(schedule, (str, int, float))
        or (isinstance(schedule, list) and all(isinstance(s, str) for s in schedule))
    ):
        raise JobsFileError(
            f"{where}: schedule must be a cron expression, a list of them or a number of "
            f"seconds, got {schedule!r}"
        )
    if isinstance(schedule, str) and not schedule.strip():
        schedule = None
    grace = entry.get("grace")
    if grace is not None and (
        isinstance(grace, bool)
        or not isinstance(grace, (int, float))
        or not math.isfinite(grace)
        or grace < 0
    ):
        raise JobsFileError(f"{where}: grace must be a number of seconds >= 0, got {grace!r}")
    assertions = strings("assertions")
    for expression in assertions or ():
        try:
            parse_assertion(expression)
        except AssertionSyntaxError as exc:
            raise JobsFileError(f"{where}: assertions: {exc}") from None
    job = JobSchedule(
        name.strip(),
        tuple(schedule) if isinstance(schedule, list) else schedule,
        timezone=text("timezone"),
        grace_seconds=grace,
        tags=strings("tags") or (),
        name=text("name"),
        token=text("token"),
        assertions=assertions,
    )
    try:
        job.spec()
    except ValueError as exc:
        raise JobsFileError(f"{where}: schedule: {exc}") from None
    return job
