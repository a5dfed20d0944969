"""An OpenLineage RunEvent (checked against the spec) as the ping the server stores.

- the tracker: ``<namespace>/<job.name>``, tagged ``openlineage`` and ``producer:<tool>``;
- the status: START -> ``start``, COMPLETE -> ``success``, FAIL -> ``failure`` (the
  ``errorMessage`` facet as the error), ABORT -> ``cancelled``; RUNNING and OTHER change no
  state and are not stored;
- the run id: the event's ``runId``, so a START and its end pair up; the ping id is derived
  from the run id and the event type, so a repeated event is stored once;
- metrics: ``records_processed``/``bytes_written`` summed over the outputs'
  ``outputStatistics``, ``records_read``/``bytes_read`` over the inputs' ``inputStatistics``,
  each dataset under ``outputs``/``inputs``, ``dataQualityMetrics`` under ``quality``;
- the ``parent`` run facet as the run's ``parent``; the event's own identity under
  ``openlineage``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Any, Final

from telemhq_plugins.core.config import slugify
from telemhq_server.trackers import MAX_NAME

__all__ = [
    "ENDS",
    "STATUSES",
    "Mapped",
    "event_time",
    "map_event",
    "ping_id",
    "producer_tool",
    "tracker_name",
]

#: OpenLineage event type -> ping status (RUNNING and OTHER have none: no state change).
STATUSES: Final = {
    "START": "start",
    "COMPLETE": "success",
    "FAIL": "failure",
    "ABORT": "cancelled",
}
#: The event types that end a run.
ENDS: Final = ("COMPLETE", "FAIL", "ABORT")
_PING_IDS: Final = uuid.UUID("5b0e7c1e-6f7d-4c55-9c1b-0b1f3a6e2d41")  # namespace of ping ids
_TRACEBACK_MAX: Final = 16_000  # characters of a stack trace kept (its end: the raise)
_INTEGRATION_RE: Final = re.compile(r"/integration/([A-Za-z0-9_.-]+)")
_REPO_RE: Final = re.compile(r"^https?://(?:www\.)?github\.com/[^/]+/([^/?#]+)")


@dataclass(frozen=True, slots=True)
class Mapped:
    """What a RunEvent becomes: its tracker's name, slug and tags, the ping's status and
    payload (``status`` None: the event changes no state and is not stored)."""

    name: str
    slug: str
    tags: tuple[str, ...]
    status: str | None
    payload: dict[str, Any]
    run_id: str
    event_type: str
    event_time: dt.datetime
    #: the run's facets, read again only when the event creates its tracker (:mod:`.seeding`)
    run_facets: dict[str, Any]


def tracker_name(namespace: str, name: str) -> str:
    """``<namespace>/<job name>``, cut to the longest name a tracker may have."""
    return f"{namespace}/{name}"[:MAX_NAME]


def producer_tool(producer: str) -> str:
    """The tool an event's ``producer`` URI names: the integration of the OpenLineage
    repository (``.../integration/spark`` -> ``spark``), else the repository
    (``https://github.com/apache/airflow/...`` -> ``airflow``), else the host."""
    match = _INTEGRATION_RE.search(producer)
    if match is not None:
        return match.group(1).lower()
    match = _REPO_RE.match(producer)
    if match is not None:
        repo = match.group(1).lower().removesuffix(".git")
        if repo == "openlineage" and "/client/" in producer:
            return (
                "openlineage-" + producer.split("/client/", 1)[1].split("/", maxsplit=1)[0].lower()
            )
        return repo
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", producer.lower()).split("/")[0]
    return host or "unknown"


def ping_id(run_id: str, event_type: str) -> str:
    """The ping id of a run's event of ``event_type``: the same for a repeated event. It is
    the version-5 UUID of ``<runId>/<eventType>`` in a namespace of this server's, written
    out from the SHA-1 directly (``uuid.uuid5`` builds objects the answer does not need)."""
    h = hashlib.sha1(_PING_IDS.bytes + f"{run_id}/{event_type}".encode(), usedforsecurity=False)
    x = h.hexdigest()
    variant = "89ab"[int(x[16], 16) & 3]
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{variant}{x[17:20]}-{x[20:32]}"


@functools.lru_cache(maxsize=4096)
def _identity(namespace: str, name: str, producer: str) -> tuple[str, str, tuple[str, ...]]:
    """A job's tracker name, slug and tags (kept: a job sends many events)."""
    full = tracker_name(namespace, name)
    return full, slugify(full), ("openlineage", f"producer:{producer_tool(producer)}")


def event_time(value: str) -> dt.datetime:
    """An ``eventTime`` (RFC 3339, checked by the schema) as an aware datetime."""
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _datasets(
    items: Any, facets_key: str, stats_name: str
) -> tuple[list[dict[str, Any]], int | None, int | float | None]:
    """Each dataset as ``{namespace, name, rows, bytes}``, and the sums of rows and bytes
    over those that carry statistics (None when none does)."""
    out: list[dict[str, Any]] = []
    rows_total: int | None = None
    bytes_total: int | float | None = None
    for dataset in items or ():
        facets = dataset.get(facets_key) or {}
        stats = facets.get(stats_name) or {}
        rows, size = _number(stats.get("rowCount")), _number(stats.get("size"))
        out.append(
            {
                "namespace": dataset["namespace"],
                "name": dataset["name"],
                "rows": rows,
                "bytes": size,
            }
        )
        if rows is not None:
            rows_total = (rows_total or 0) + int(rows)
        if size is not None:
            bytes_total = (bytes_total or 0) + size
    return out, rows_total, bytes_total


def _quality(inputs: Any) -> list[dict[str, Any]]:
    """The ``dataQualityMetrics`` facets of the inputs (input facet, or the older dataset
    facet of the same name): row count, bytes, file count and column metrics."""
    out: list[dict[str, Any]] = []
    for dataset in inputs or ():
        facet = (dataset.get("inputFacets") or {}).get("dataQualityMetrics") or (
            dataset.get("facets") or {}
        ).get("dataQualityMetrics")
        if not isinstance(facet, dict):
            continue
        entry: dict[str, Any] = {"namespace": dataset["namespace"], "name": dataset["name"]}
        for key, field in (("rowCount", "rows"), ("bytes", "bytes"), ("fileCount", "files")):
            if key in facet:
                entry[field] = facet[key]
        if isinstance(facet.get("columnMetrics"), dict):
            entry["columns"] = facet["columnMetrics"]
        out.append(entry)
    return out


def _parent(facets: dict[str, Any]) -> dict[str, Any] | None:
    facet = facets.get("parent")
    if not isinstance(facet, dict):
        return None
    job, run = facet.get("job") or {}, facet.get("run") or {}
    parent: dict[str, Any] = {
        "job": tracker_name(job.get("namespace", ""), job.get("name", "")),
        "slug": slugify(tracker_name(job.get("namespace", ""), job.get("name", ""))),
        "run_id": run.get("runId"),
    }
    root = facet.get("root")
    if isinstance(root, dict):
        root_job, root_run = root.get("job") or {}, root.get("run") or {}
        name = tracker_name(root_job.get("namespace", ""), root_job.get("name", ""))
        parent["root"] = {"job": name, "slug": slugify(name), "run_id": root_run.get("runId")}
    return parent


def _error(facets: dict[str, Any]) -> dict[str, Any] | None:
    facet = facets.get("errorMessage")
    if not isinstance(facet, dict):
        return None
    error: dict[str, Any] = {"message": facet.get("message", "")}
    if facet.get("programmingLanguage"):
        error["language"] = facet["programmingLanguage"]
    trace = facet.get("stackTrace")
    if isinstance(trace, str) and trace:
        error["traceback"] = trace[-_TRACEBACK_MAX:]
    return error


def map_event(event: dict[str, Any]) -> Mapped:
    """The ping of a RunEvent already checked against the spec."""
    job, run = event["job"], event["run"]
    event_type = event.get("eventType", "OTHER")  # optional before spec 2-0-0
    status = STATUSES.get(event_type)
    name, slug, tags = _identity(job["namespace"], job["name"], event["producer"])
    when = event_time(event["eventTime"])
    facets = run.get("facets") or {}
    run_id = run["runId"]
    payload: dict[str, Any] = {
        "status": status,
        "run_id": run_id,
        "ping_id": ping_id(run_id, event_type),
        "job": name,
        "orchestrator": "openlineage",
        ("started_at" if status == "start" else "finished_at"): _iso(when),
    }
    outputs, rows_out, bytes_out = _datasets(
        event.get("outputs"), "outputFacets", "outputStatistics"
    )
    inputs, rows_in, bytes_in = _datasets(event.get("inputs"), "inputFacets", "inputStatistics")
    for key, value in (
        ("records_processed", rows_out),
        ("bytes_written", bytes_out),
        ("records_read", rows_in),
        ("bytes_read", bytes_in),
    ):
        if value is not None:
            payload[key] = value
    if outputs:
        payload["outputs"] = outputs
    if inputs:
        payload["inputs"] = inputs
    quality = _quality(event.get("inputs"))
    if quality:
        payload["quality"] = quality
    error = _error(facets)
    if error is not None and status == "failure":
        payload["error"] = error
    parent = _parent(facets)
    if parent is not None:
        payload["parent"] = parent
    payload["openlineage"] = {
        "event_type": event_type,
        "event_time": event["eventTime"],
        "producer": event["producer"],
        "schema_url": event["schemaURL"],
        "namespace": job["namespace"],
        "name": job["name"],
        "run_id": run_id,
    }
    return Mapped(
        name=name,
        slug=slug,
        tags=tags,
        status=status,
        payload=payload,
        run_id=run_id,
        event_type=event_type,
        event_time=when,
        run_facets=facets,
    )
