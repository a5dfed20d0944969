"""Who a ping is about: job names, run ids and the ``airflow`` block.

Pure translation of Airflow objects, read through attributes both Airflow 3's Task SDK
(``RuntimeTaskInstance``) and the scheduler's models (``TaskInstance``, ``DagRun``) have.

* A task's job is ``dag_id.task_id``; its run id is the DAG run's id plus the task id and,
  for a mapped task, the map index: stable across tries (``attempt`` is the try number) and
  distinct per map index. ``ti.id`` changes on every try and is not used.
* A DAG's job is its ``dag_id``; its run id is ``dag_id/run_id``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from telemhq_plugins.airflow._links import dag_run_url, task_url
from telemhq_plugins.core.payload import HOST

__all__ = [
    "DagRunIdentity",
    "TaskIdentity",
    "dag_block",
    "dag_end",
    "dag_identity",
    "dag_start",
    "elapsed_ms",
    "logical_date_of",
    "task_block",
    "task_identity",
    "task_start",
]

#: the server's limit on ``run_id``; longer ids keep their start and a hash of the whole.
MAX_RUN_ID = 200


def _bounded(run_id: str) -> str:
    if len(run_id) <= MAX_RUN_ID:
        return run_id
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:16]
    return f"{run_id[: MAX_RUN_ID - 17]}~{digest}"


def _iso(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return None if value is None else str(value)


def _as_datetime(value: Any) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def elapsed_ms(start: dt.datetime | None, end: dt.datetime | None = None) -> float | None:
    """Milliseconds from ``start`` to ``end`` (default: now), None without a start."""
    if start is None:
        return None
    end = end or dt.datetime.now(dt.UTC)
    return max((end - start).total_seconds() * 1000.0, 0.0)


@dataclass(frozen=True, slots=True)
class TaskIdentity:
    """One try of one task instance."""

    dag_id: str
    dag_run_id: str
    task_id: str
    map_index: int
    try_number: int | None

    @property
    def job(self) -> str:
        return f"{self.dag_id}.{self.task_id}"

    @property
    def run_id(self) -> str:
        base = f"{self.dag_id}/{self.dag_run_id}/{self.task_id}"
        return _bounded(base if self.map_index < 0 else f"{base}/{self.map_index}")

    @property
    def key(self) -> tuple[str, int | None]:
        """One try: the run id and the try number."""
        return self.run_id, self.try_number


def task_identity(ti: Any) -> TaskIdentity:
    map_index = getattr(ti, "map_index", None)
    try_number = getattr(ti, "try_number", None)
    return TaskIdentity(
        dag_id=str(ti.dag_id),
        dag_run_id=str(ti.run_id),
        task_id=str(ti.task_id),
        map_index=map_index if isinstance(map_index, int) else -1,
        try_number=try_number if isinstance(try_number, int) else None,
    )


def task_start(ti: Any) -> dt.datetime | None:
    """When this try started (each try has its own ``start_date``)."""
    return _as_datetime(getattr(ti, "start_date", None))


def logical_date_of(ti: Any, context: Any) -> Any:
    """The DAG run's logical date: the context has it, a Task SDK task instance does not."""
    if context is not None:
        value = context.get("logical_date")
        if value is None:
            value = getattr(context.get("dag_run"), "logical_date", None)
        if value is not None:
            return value
    try:
        dag_run = getattr(ti, "dag_run", None)  # the scheduler's TaskInstance (may load it)
    except Exception:
        return None
    return getattr(dag_run, "logical_date", None)


def task_block(ti: Any, identity: TaskIdentity, context: Any) -> dict[str, Any]:
    """The ``airflow`` block of a task's pings."""
    task = getattr(ti, "task", None)
    operator = getattr(task, "task_type", None) or getattr(ti, "operator", None)
    block: dict[str, Any] = {
        "dag_id": identity.dag_id,
        "task_id": identity.task_id,
        "run_id": identity.dag_run_id,
        "logical_date": _iso(logical_date_of(ti, context)),
        "try_number": identity.try_number,
        "max_tries": getattr(ti, "max_tries", None),
        "map_index": identity.map_index,
        "operator": operator,
        "hostname": getattr(ti, "hostname", None) or HOST,
    }
    url = task_url(identity.dag_id, identity.dag_run_id, identity.task_id, identity.map_index)
    if url is not None:
        block["ui_url"] = url
    return block


@dataclass(frozen=True, slots=True)
class DagRunIdentity:
    dag_id: str
    dag_run_id: str

    @property
    def job(self) -> str:
        return self.dag_id

    @property
    def run_id(self) -> str:
        return _bounded(f"{self.dag_id}/{self.dag_run_id}")


def dag_identity(dag_run: Any) -> DagRunIdentity:
    return DagRunIdentity(dag_id=str(dag_run.dag_id), dag_run_id=str(dag_run.run_id))


def dag_start(dag_run: Any) -> dt.datetime | None:
    return _as_datetime(getattr(dag_run, "start_date", None))


def dag_end(dag_run: Any) -> dt.datetime | None:
    return _as_datetime(getattr(dag_run, "end_date", None))


def dag_block(dag_run: Any, identity: DagRunIdentity, reason: str | None) -> dict[str, Any]:
    """The ``airflow`` block of a DAG run's pings."""
    run_type = getattr(dag_run, "run_type", None)
    block: dict[str, Any] = {
        "dag_id": identity.dag_id,
        "run_id": identity.dag_run_id,
        "logical_date": _iso(getattr(dag_run, "logical_date", None)),
        "run_type": None if run_type is None else str(getattr(run_type, "value", run_type)),
        "hostname": HOST,
    }
    url = dag_run_url(identity.dag_id, identity.dag_run_id)
    if url is not None:
        block["ui_url"] = url
    if reason:
        block["reason"] = reason
    return block
