"""How the trackers page groups, orders and filters trackers: pure functions, no I/O.

A tracker belongs to an orchestrator (its tag ``airflow``, ``prefect``, ``dagster`` or
``celery``, as the adapters and ``telemhq sync`` tag it; ``orchestrator:<name>`` works too;
else the ``orchestrator`` field of its last run) and, within it, to the unit of the user's
code it runs in: the DAG of an Airflow task (``dag.task``), the flow of a Prefect task
(``flow.task``), the job of a Dagster step (``job.step``), the module of a Celery task
(``app.tasks.send``). The orchestrator's block in the last run, when there is one, names the
DAG, flow or job exactly (their names may contain dots); the job name is split otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlencode

__all__ = [
    "NO_ORCHESTRATOR",
    "ORCHESTRATORS",
    "PROBLEM_STATES",
    "STATE_ORDER",
    "Filters",
    "Group",
    "Section",
    "build_sections",
    "count_states",
    "group_of",
    "matches",
    "orchestrator_of",
    "state_rank",
    "worst",
]

ORCHESTRATORS: Final = ("airflow", "prefect", "dagster", "celery")
#: The section of trackers no orchestrator runs (``@monitor``, the CLI, plain pings).
NO_ORCHESTRATOR: Final = "other"
#: Problems first: the order of the page and of roll-ups (the first is the worst).
STATE_ORDER: Final = ("down", "failing", "late", "up", "new", "paused")
PROBLEM_STATES: Final = frozenset({"down", "failing", "late"})
#: The block key naming the DAG / flow / job, per orchestrator.
_UNIT_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "airflow": ("dag_id",),
    "prefect": ("flow_name",),
    "dagster": ("job_name",),
}


def state_rank(state: str) -> int:
    try:
        return STATE_ORDER.index(state)
    except ValueError:
        return len(STATE_ORDER)


def orchestrator_of(tags: Iterable[Any], last_payload: Mapping[str, Any] | None) -> str:
    """The orchestrator a tracker belongs to, or :data:`NO_ORCHESTRATOR`."""
    for tag in tags:
        if not isinstance(tag, str):
            continue
        name = tag.removeprefix("orchestrator:")
        if name in ORCHESTRATORS:
            return name
    if last_payload is not None:
        named = last_payload.get("orchestrator")
        if isinstance(named, str) and named in ORCHESTRATORS:
            return named
    return NO_ORCHESTRATOR


def group_of(orchestrator: str, name: str, last_payload: Mapping[str, Any] | None) -> str:
    """The DAG / flow / job / module a tracker's job runs in ("" for none: its own row)."""
    if orchestrator == NO_ORCHESTRATOR:
        return ""
    block = last_payload.get(orchestrator) if last_payload is not None else None
    if isinstance(block, Mapping):
        for key in _UNIT_KEYS.get(orchestrator, ()):
            value = block.get(key)
            if isinstance(value, str) and value:
                return value
    if orchestrator == "celery":  # ``proj.tasks.send_email`` -> ``proj.tasks``
        head, dot, _ = name.rpartition(".")
        return head if dot else name
    head, dot, _ = name.partition(".")  # ``dag.task`` / ``flow.task`` / ``job.step``
    return head if dot else name


@dataclass(frozen=True, slots=True)
class Filters:
    """The trackers page's query parameters: a view is a bookmark."""

    state: str = ""
    orchestrator: str = ""
    tag: str = ""
    q: str = ""
    problems: bool = False
    group: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        def text(key: str) -> str:
            return (query.get(key) or "").strip()[:200]

        return cls(
            state=text("state"),
            orchestrator=text("orchestrator"),
            tag=text("tag"),
            q=text("q"),
            problems=text("problems") in ("1", "on", "true", "yes"),
            group=text("group"),
        )

    @property
    def active(self) -> bool:
        return any((self.state, self.orchestrator, self.tag, self.q, self.problems, self.group))

    def query(self, **changes: Any) -> str:
        """This view's query string with ``changes`` applied (``""``/False drops a key)."""
        values = {
            "state": self.state,
            "orchestrator": self.orchestrator,
            "tag": self.tag,
            "q": self.q,
            "problems": "1" if self.problems else "",
            "group": self.group,
        }
        for key, value in changes.items():
            values[key] = ("1" if value else "") if isinstance(value, bool) else str(value)
        kept = {k: v for k, v in values.items() if v}
        return "?" + urlencode(kept) if kept else ""


def matches(row: Mapping[str, Any], filters: Filters) -> bool:
    """Whether a tracker (with its ``orchestrator`` and ``group`` set) passes the filters."""
    state = row["state"]
    if filters.state and state != filters.state:
        return False
    if filters.problems and state not in PROBLEM_STATES:
        return False
    if filters.orchestrator and row["orchestrator"] != filters.orchestrator:
        return False
    if filters.group and row["group"] != filters.group:
        return False
    if filters.tag and filters.tag not in row["tags"]:
        return False
    if filters.q:
        needle = filters.q.casefold()
        haystack = (row["name"], row["slug"], row["group"])
        if not any(needle in str(h).casefold() for h in haystack):
            return False
    return True


def count_states(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many trackers are in each state, worst first."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: state_rank(kv[0])))


def worst(counts: Mapping[str, int]) -> str:
    """The worst state among ``counts`` (``new`` for none)."""
    return min(counts, key=state_rank) if counts else "new"


def _row_key(row: Mapping[str, Any]) -> tuple[int, str, int]:
    return (state_rank(row["state"]), str(row["name"]).casefold(), int(row["id"]))


@dataclass(slots=True)
class Group:
    """One DAG / flow / job / module: its trackers, worst first."""

    name: str
    rows: list[Mapping[str, Any]]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def state(self) -> str:
        """The roll-up: the worst state of its trackers."""
        return worst(self.counts)

    @property
    def problems(self) -> int:
        return sum(n for s, n in self.counts.items() if s in PROBLEM_STATES)


@dataclass(slots=True)
class Section:
    """One orchestrator (or the trackers of none) and its groups, worst first."""

    orchestrator: str
    groups: list[Group]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return worst(self.counts)

    @property
    def size(self) -> int:
        return sum(self.counts.values())


def build_sections(rows: Sequence[Mapping[str, Any]]) -> list[Section]:
    """Sections of groups of ``rows`` (each with ``orchestrator`` and ``group``), problems
    first at every level, then by name; the trackers of no orchestrator come last among
    equals."""
    by_section: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for row in rows:
        by_section.setdefault(row["orchestrator"], {}).setdefault(row["group"], []).append(row)
    sections = []
    for orchestrator, groups in by_section.items():
        built = []
        for name, members in groups.items():
            members.sort(key=_row_key)
            built.append(Group(name, members, count_states(members)))
        built.sort(key=lambda g: (state_rank(g.state), g.name.casefold()))
        section_counts = count_states(r for g in built for r in g.rows)
        sections.append(Section(orchestrator, built, section_counts))
    sections.sort(
        key=lambda s: (
            state_rank(s.state),
            s.orchestrator == NO_ORCHESTRATOR,
            s.orchestrator,
        )
    )
    return sections
