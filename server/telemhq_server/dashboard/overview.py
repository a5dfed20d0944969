"""The trackers page: which rows to show (:func:`plan`) and its markup (:func:`render`).

Trackers are grouped as the user's code is (:mod:`.grouping`): orchestrator, then DAG / flow /
job / module, each a ``<details>`` element (collapsible without JavaScript) whose summary
gives the roll-up state and the count per state. Groups with a problem are open and list their
trackers worst first, each with why its last run failed; healthy groups stay closed and hold
only a link to their own page (``?group=``), so the page stays small with thousands of
trackers. Every value from a user or a payload goes through :func:`.pages.e`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from telemhq_server.dashboard.charts import sparkline
from telemhq_server.dashboard.grouping import (
    NO_ORCHESTRATOR,
    ORCHESTRATORS,
    PROBLEM_STATES,
    STATE_ORDER,
    Filters,
    Group,
    Section,
)
from telemhq_server.dashboard.pages import e, layout, relative, silenced_pill, state_pill, when

__all__ = ["GroupView", "Plan", "SectionView", "plan", "render"]

#: Rows the page renders at most (the rest are a link away), and per group.
MAX_ROWS: Final = 300
GROUP_ROWS: Final = 50
#: On a group's own page (``?group=``) or a filtered view: more rows of one group.
FILTERED_GROUP_ROWS: Final = 300
TITLES: Final = {
    "airflow": "Airflow",
    "prefect": "Prefect",
    "dagster": "Dagster",
    "celery": "Celery",
    NO_ORCHESTRATOR: "No orchestrator",
}
UNIT_WORD: Final = {
    "airflow": "DAG",
    "prefect": "flow",
    "dagster": "job",
    "celery": "module",
}


@dataclass(slots=True)
class GroupView:
    group: Group
    open: bool
    rows: list[Mapping[str, Any]]

    @property
    def hidden(self) -> int:
        return len(self.group.rows) - len(self.rows)


@dataclass(slots=True)
class SectionView:
    section: Section
    groups: list[GroupView]


@dataclass(slots=True)
class Plan:
    sections: list[SectionView]
    filters: Filters
    shown: int = 0
    rendered_ids: list[int] = field(default_factory=list)


def plan(sections: Sequence[Section], filters: Filters) -> Plan:
    """Which groups are open and which of their rows are rendered, within :data:`MAX_ROWS`:
    groups with a problem (every group of a filtered view) are open and served first, the
    others closed with their rows inside while the budget lasts, else a link to their page."""
    per_group = FILTERED_GROUP_ROWS if filters.active else GROUP_ROWS
    budget = MAX_ROWS
    everything = [g for s in sections for g in s.groups]
    urgent = [g for g in everything if filters.active or g.state in PROBLEM_STATES]
    urgent_ids = {id(g) for g in urgent}
    count = {id(g): 0 for g in everything}
    # The rows of every problem first (a group's rows are sorted worst first), then their
    # healthy siblings, then the healthy groups.
    passes = [
        [(g, g.problems) for g in urgent],
        [(g, per_group) for g in urgent],
        [(g, per_group) for g in everything if id(g) not in urgent_ids],
    ]
    for wanted in passes:
        for group, limit in wanted:
            more = max(0, min(limit, per_group, len(group.rows)) - count[id(group)])
            more = min(more, budget)
            count[id(group)] += more
            budget -= more
    taken = {id(g): list(g.rows[: count[id(g)]]) for g in everything}
    out = Plan([], filters)
    for section in sections:
        views = []
        for group in section.groups:
            rows = taken[id(group)]
            out.shown += len(group.rows)
            out.rendered_ids.extend(int(r["id"]) for r in rows)
            is_open = bool(rows) and (filters.active or group.state in PROBLEM_STATES)
            views.append(GroupView(group, is_open, rows))
        out.sections.append(SectionView(section, views))
    return out


def _counts_text(counts: Mapping[str, int]) -> str:
    total = sum(counts.values())
    parts = ", ".join(f"{n} {s}" for s, n in counts.items())
    noun = "tracker" if total == 1 else "trackers"
    return f"{total} {noun}: {parts}" if parts else f"0 {noun}"


def _filter_form(filters: Filters) -> str:
    def option(value: str, label: str, current: str) -> str:
        chosen = " selected" if value == current else ""
        return f'<option value="{e(value)}"{chosen}>{e(label)}</option>'

    states = "".join(option(s, s, filters.state) for s in STATE_ORDER)
    orchestrators = "".join(
        option(o, TITLES[o], filters.orchestrator) for o in (*ORCHESTRATORS, NO_ORCHESTRATOR)
    )
    checked = " checked" if filters.problems else ""
    group = (
        f'<input type="hidden" name="group" value="{e(filters.group)}">' if filters.group else ""
    )
    return (
        '<form method="get" action="/dashboard/" class="filters" role="search" '
        'aria-label="Filter trackers">'
        f'<label>Search <input type="search" name="q" value="{e(filters.q)}" '
        'placeholder="name, slug or job"></label>'
        f'<label>State <select name="state">{option("", "any", filters.state)}{states}'
        "</select></label>"
        '<label>Orchestrator <select name="orchestrator">'
        f"{option('', 'any', filters.orchestrator)}{orchestrators}</select></label>"
        f'<label>Tag <input type="text" name="tag" value="{e(filters.tag)}" size="12"></label>'
        f'<label><input type="checkbox" name="problems" value="1"{checked}> only problems'
        f"</label>{group}"
        '<button type="submit">Filter</button> <a href="/dashboard/">Clear</a></form>'
    )


def _why(row: Mapping[str, Any], now: dt.datetime) -> str:
    reason = row.get("reason")
    parts = []
    if reason is not None:
        label = "Error" if reason.kind == "error" else "Failed"
        parts.append(
            f'<span class="reason reason-{e(reason.kind)}"><strong>{label}:</strong> '
            f"{e(reason.text)}</span>"
        )
    elif row["state"] in ("late", "down"):
        seen = row.get("last_ping_at")
        since = f"no ping for {relative((now - seen).total_seconds())}" if seen else "never pinged"
        parts.append(f'<span class="reason reason-missed">{e(since)}</span>')
    links = []
    if row.get("last_run") is not None and reason is not None:
        links.append(
            f'<a href="/dashboard/trackers/{e(row["id"])}/runs/{e(row["last_run"])}">run</a>'
        )
    if row.get("ui_url") and (reason is not None or row["state"] in PROBLEM_STATES):
        title = TITLES.get(row["orchestrator"], "the orchestrator")
        links.append(f'<a class="ui-link" href="{e(row["ui_url"])}">open in {e(title)}</a>')
    if links:
        parts.append(f'<span class="links">{" · ".join(links)}</span>')
    return " ".join(parts) or '<span class="muted">-</span>'


def _row(row: Mapping[str, Any], durations: Mapping[int, list[float]], now: dt.datetime) -> str:
    tid = row["id"]
    changed = row.get("state_changed_at")
    since = (
        f'<div class="muted since">for {e(relative((now - changed).total_seconds()))}</div>'
        if changed is not None
        else ""
    )
    last = when(row["last_run_at"], now)
    status = row.get("last_status")
    if status:
        last += f' <span class="run-status status-{e(status)}">{e(status)}</span>'
    spark = sparkline(durations.get(tid, []), title=f"recent durations of {row['name']}")
    expected = when(row["next_expected_at"], now) if row["next_expected_at"] else "-"
    return (
        f'<tr data-tracker="{e(row["slug"])}">'
        f'<th scope="row"><a href="/dashboard/trackers/{e(tid)}">{e(row["name"])}</a>'
        f'<div class="muted">{e(row["slug"])}</div></th>'
        f"<td>{state_pill(row['state'])}{silenced_pill(row.get('silenced_until'), now)}{since}</td>"
        f'<td class="why">{_why(row, now)}</td>'
        f"<td>{last}</td><td>{expected}</td>"
        f'<td class="spark">{spark}</td></tr>'
    )


_HEAD: Final = (
    '<thead><tr><th scope="col">Tracker</th><th scope="col">State</th>'
    '<th scope="col">Why</th><th scope="col">Last run</th>'
    '<th scope="col">Next expected ping</th><th scope="col">Recent durations</th></tr></thead>'
)


def _group(
    section: Section,
    view: GroupView,
    filters: Filters,
    durations: Mapping[int, list[float]],
    now: dt.datetime,
) -> str:
    group = view.group
    orchestrator = section.orchestrator
    label = group.name or TITLES[orchestrator]
    link = filters.query(orchestrator=orchestrator, group=group.name)
    more = ""
    if view.hidden:
        what = "all" if not view.rows else f"{view.hidden} more of the"
        more = (
            f'<p class="more"><a href="/dashboard/{e(link)}">Show {what} '
            f"{len(group.rows)} trackers of {e(label)}</a></p>"
        )
    table = ""
    if view.rows:
        rows = "".join(_row(r, durations, now) for r in view.rows)
        table = (
            f'<table class="trackers" aria-label="Trackers of {e(label)}">{_HEAD}'
            f"<tbody>{rows}</tbody></table>"
        )
    if not group.name:  # the trackers of no orchestrator: no second level
        return table + more
    opened = " open" if view.open else ""
    unit = UNIT_WORD.get(orchestrator, "group")
    return (
        f'<details class="group" data-group="{e(group.name)}"{opened}>'
        f'<summary><h3><span class="visually-hidden">{e(unit)} </span>{e(group.name)}</h3> '
        f"{state_pill(group.state)} "
        f'<span class="counts">{e(_counts_text(group.counts))}</span></summary>'
        f"{table}{more}</details>"
    )


def render(
    page: Plan,
    durations: Mapping[int, list[float]],
    total: Mapping[str, int],
    *,
    now: dt.datetime,
    signed_in_as: str | None,
) -> str:
    filters = page.filters
    if not total:
        body = (
            "<h1>Trackers</h1><p>No trackers yet. Create one with "
            '<code>POST /api/v1/trackers</code> (see <a href="/api/v1/openapi.json">the '
            "API</a>), or ping with a ping key and a slug.</p>"
        )
        return layout("Trackers", body, signed_in_as=signed_in_as, refresh=60)
    problems = sum(n for s, n in total.items() if s in PROBLEM_STATES)
    toggle = (
        f'<a class="toggle" href="/dashboard/{e(filters.query(problems=False))}">'
        "Show all trackers</a>"
        if filters.problems
        else f'<a class="toggle" href="/dashboard/{e(filters.query(problems=True))}">'
        f"Show only problems ({problems})</a>"
    )
    shown = f" Showing {page.shown} that match the filters." if filters.active else ""
    sections = []
    for view in page.sections:
        section = view.section
        name = section.orchestrator
        groups = "".join(_group(section, g, filters, durations, now) for g in view.groups)
        sections.append(
            f'<details class="section" data-orchestrator="{e(name)}" open>'
            f'<summary><h2 id="section-{e(name)}">{e(TITLES[name])}</h2> '
            f"{state_pill(section.state)} "
            f'<span class="counts">{e(_counts_text(section.counts))}</span></summary>'
            f"{groups}</details>"
        )
    if not sections:
        sections.append('<p class="muted">No tracker matches these filters.</p>')
    body = (
        f'<h1>Trackers</h1><p class="summary">{e(_counts_text(total))}.{e(shown)}</p>'
        f'{_filter_form(filters)}<p class="toolbar">{toggle}</p>{"".join(sections)}'
    )
    return layout("Trackers", body, signed_in_as=signed_in_as, refresh=60)
