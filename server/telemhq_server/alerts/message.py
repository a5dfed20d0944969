"""The words of a notification: a title and a plain-text body from the stored document of a
state change (the webhooks' document: tracker, reason, run, failed assertions)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = ["render", "render_group", "render_test", "since_text"]

_HEADLINE = {
    "failing": "is failing",
    "late": "is late",
    "down": "is down",
    "recovered": "has recovered",
}


def since_text(seconds: float) -> str:
    """``45s``, ``12m``, ``3h 5m``, ``2d 4h``: how long, for people."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def render(
    doc: Mapping[str, Any],
    *,
    event: str,
    repeat_no: int,
    now: dt.datetime,
    since: dt.datetime,
    public_url: str,
    ui_link: str | None = None,
) -> tuple[str, str]:
    """(title, body) of one message. ``since``: when the bad state began (for a recovery:
    when the problem began), so the message says how long it has been so; ``ui_link``: the
    run in its orchestrator's own UI, when known."""
    tracker = doc.get("tracker") or {}
    name = tracker.get("name", "?")
    title = f"{name} {_HEADLINE.get(event, event)}"
    if repeat_no:
        title = f"Reminder {repeat_no}: {title}"
    lines: list[str] = []
    if event == "recovered":
        lines.append(f"{name} is up again after {since_text((now - since).total_seconds())}.")
    else:
        lines.append(
            f"{name} is {event} (was {tracker.get('previous_state', '?')}) "
            f"for {since_text((now - since).total_seconds())} now."
        )
        if doc.get("reason"):
            lines.append(f"Why: {doc['reason']}")
        for result in doc.get("failed_assertions") or []:
            expression = result.get("expression") or result.get("assertion") or "?"
            reason = result.get("reason") or f"actual {result.get('actual')!r}"
            lines.append(f"- {expression}: {reason}")
        run = doc.get("run") or {}
        payload = run.get("payload") if isinstance(run.get("payload"), dict) else {}
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict) and (error.get("type") or error.get("message")):
            lines.append(f"Error: {error.get('type') or 'Error'}: {error.get('message') or ''}")
        if run.get("duration_ms") is not None:
            lines.append(f"Run took {run['duration_ms'] / 1000:.1f} s.")
    if ui_link:
        lines.append(f"Run in {_tool(doc)}: {ui_link}")
    link = doc.get("dashboard_url")
    if isinstance(link, str):
        lines.append(f"Dashboard: {public_url + link if link.startswith('/') else link}")
    return title, "\n".join(lines)


def render_test(channel_name: str) -> tuple[str, str]:
    return (
        "TelemHQ test message",
        f"This is a test of the notification channel {channel_name!r}: it works.",
    )


def _tool(doc: Mapping[str, Any]) -> str:
    """The orchestrator a message's run came from, as its UI calls itself."""
    said = doc.get("orchestrator")
    return _TOOLS.get(str(said), str(said).capitalize()) if said else "the orchestrator"


def render_group(
    key: str,
    docs: list[Mapping[str, Any]],
    *,
    public_url: str,
    repeat_no: int = 0,
    ui_links: Sequence[str | None] = (),
) -> tuple[str, str]:
    """(title, body) of one message telling of several trackers: the failures of one parent
    run (``key`` ``run:<orchestrator>:<name>:<run id>``) or trackers of one orchestrator
    (``late:<orchestrator>``) or of one tag (``late:tag:<tag>``) going late at once.
    ``ui_links``: each doc's run in its orchestrator's UI (None where unknown)."""
    title, text = _group_text(key, docs, public_url, list(ui_links) or [None] * len(docs))
    return (f"Reminder {repeat_no}: {title}" if repeat_no else title), text


def _group_text(
    key: str, docs: list[Mapping[str, Any]], public_url: str, ui_links: list[str | None]
) -> tuple[str, str]:
    names = [str((d.get("tracker") or {}).get("name", "?")) for d in docs]
    if key.startswith("late:tag:"):
        title = f"{len(docs)} jobs tagged {key[9:]} are late: is their scheduler running?"
        return title, "\n".join(f"- {name}" for name in sorted(names))
    if key.startswith("late:"):
        orchestrator = _TOOLS.get(key[5:], key[5:].capitalize()) or "Scheduled"
        title = f"{len(docs)} {orchestrator} jobs are late: is the scheduler running?"
        lines = [f"- {name}" for name in sorted(names)]
        return title, "\n".join(lines)
    _, orchestrator, parent, run_id = [*key.split(":", 3), "", "", ""][:4]
    tool = orchestrator.capitalize()
    if orchestrator == "openlineage":
        parent, tool = _lineage_parent(parent, run_id, docs)
    title = f"{tool} run {parent} {run_id} failed: {len(docs)} failing"
    lines = [f"The run {run_id} of {parent} ({orchestrator}) has these failing:"]
    for doc, ui_link in zip(docs, ui_links, strict=True):
        name = (doc.get("tracker") or {}).get("name", "?")
        reasons = [
            str(r.get("reason") or r.get("expression")) for r in doc.get("failed_assertions") or []
        ]
        run = doc.get("run") or {}
        payload = run.get("payload") if isinstance(run.get("payload"), dict) else {}
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict) and (error.get("type") or error.get("message")):
            reasons.append(f"{error.get('type') or 'Error'}: {error.get('message') or ''}")
        why = "; ".join(reasons) or str(doc.get("reason") or "")
        link = doc.get("dashboard_url")
        where = f" ({public_url + link})" if isinstance(link, str) and link.startswith("/") else ""
        lines.append(f"- {name}: {why}{where}")
        if ui_link:
            lines.append(f"  Run in {_tool(doc)}: {ui_link}")
    return title, "\n".join(lines)


#: How a tool named by an OpenLineage producer is written in a title (others as they are).
_TOOLS: Final = {
    "airflow": "Airflow",
    "spark": "Spark",
    "flink": "Flink",
    "dagster": "Dagster",
    "prefect": "Prefect",
    "celery": "Celery",
}


def _lineage_parent(slug: str, run_id: str, docs: list[Mapping[str, Any]]) -> tuple[str, str]:
    """The parent job's name (the key holds its slug) and the tool that ran the failed runs
    (their trackers' ``producer:<tool>`` tag; ``OpenLineage`` when none says)."""
    name, tool = slug, "OpenLineage"
    for doc in docs:
        run = doc.get("run") or {}
        payload = run.get("payload") if isinstance(run, Mapping) else None
        if not isinstance(payload, Mapping):
            continue
        parent = payload.get("parent")
        if isinstance(parent, Mapping) and parent.get("run_id") == run_id and parent.get("job"):
            name = str(parent["job"])
        elif payload.get("run_id") == run_id and payload.get("job"):
            name = str(payload["job"])
    for doc in docs:
        tags = (doc.get("tracker") or {}).get("tags") or []
        said = [t[9:] for t in tags if isinstance(t, str) and t.startswith("producer:") and t[9:]]
        if said:
            tool = _TOOLS.get(said[0], said[0])
            break
    return name, tool
