"""Fidelity on code no one here wrote: Airflow's own example DAGs, run by ``dag.test()`` under
the listener, every ping compared with what Airflow recorded in its metadata DB.

The DAGs are the ones Airflow ships (``airflow.example_dags`` and the standard provider's
``example_dags``): their files, copied unchanged into a DAG bundle of this module's own, are
loaded and synced to the metadata DB by Airflow's own DAG bag. (Not through ``[core]
load_examples``: that bundle holds every example, and some need Airflow's example plugins,
which a session that has already loaded its plugins does not load again.)
The expected pings are derived from Airflow's own rows alone (``task_instance``,
``task_instance_history``, ``dag_run``: state, try number, map index) through the mapping of
``docs/airflow.md``, never from what the test thinks the DAG does. The comparison is of every
ping the server stored for the DAG run, in any tracker: job name, ``run_id``, status,
attempt (and the try number and map index in the ``airflow`` block). A missing, extra or
repeated ping fails.

Intentional differences, each with its reason:

- A task instance Airflow never started (try number 0: skipped by a trigger rule, a branch or
  a short circuit, or upstream failed) sends nothing: Airflow calls neither callbacks nor the
  task listener for it (docs/airflow.md, known limits). The test checks that it is in one of
  those states and that no ping names it.
- A DAG run's ``start`` comes from the scheduler's listener, and ``dag.test()`` runs no
  scheduler (it never calls ``on_dag_run_running``): a DAG run sends its end only here. Every
  task try sends its ``start`` (``send_start``) and its end.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from airflow.configuration import conf
from airflow.dag_processing.dagbag import DagBag
from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.models.taskinstancehistory import TaskInstanceHistory
from airflow.utils.session import create_session
from sqlalchemy import select

from telemhq_plugins.airflow import AirflowInstrumentor
from telemhq_plugins.core import Client, slugify
from tests.kit import runs_everywhere
from tests.live_server import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.usefixtures("airflow_db")]


@dataclass(frozen=True)
class Example:
    module: str
    dag_id: str
    #: what Airflow's record of the run must show: guards the test itself, should an Airflow
    #: release change an example so that it no longer retries, skips or maps.
    shows: frozenset[str]


EXAMPLES = [
    pytest.param(
        Example(
            "airflow.example_dags.example_skip_dag",
            "example_skip_dag",
            frozenset({"skipped", "never started"}),
        ),
        id="skip-and-trigger-rules",
    ),
    pytest.param(
        Example(
            "airflow.example_dags.example_nested_branch_dag",
            "example_nested_branch_dag",
            frozenset({"never started"}),
        ),
        id="nested-branches",
    ),
    pytest.param(
        Example(
            "airflow.providers.standard.example_dags.example_short_circuit_decorator",
            "example_short_circuit_decorator",
            frozenset({"never started"}),
        ),
        id="short-circuit",
    ),
    pytest.param(
        Example(
            "airflow.example_dags.example_task_state_store",
            "example_task_state_store",
            frozenset({"retry", "success"}),
        ),
        id="retry-then-success",
    ),
    pytest.param(
        Example(
            "airflow.example_dags.example_failed_dag", "example_failed_dag", frozenset({"failure"})
        ),
        id="failure",
    ),
    pytest.param(
        Example(
            "airflow.example_dags.example_dynamic_task_mapping",
            "example_dynamic_task_mapping",
            frozenset({"mapped"}),
        ),
        id="mapped",
    ),
    pytest.param(
        Example(
            "airflow.example_dags.example_dynamic_task_mapping",
            "example_task_group_mapping",
            frozenset({"mapped"}),
        ),
        id="mapped-task-group",
    ),
]

#: a ping as compared: (job, run_id, status, attempt, try_number, map_index).
Ping = tuple[str, str, str, int | None, int | None, int | None]

#: how the last try of a task instance ended, in ping terms (docs/airflow.md).
FINAL = {"success": "success", "failed": "failure", "skipped": "skipped"}
#: a superseded try (a ``task_instance_history`` row) that failed was retried: Airflow files an
#: ``up_for_retry`` try there as ``failed`` when it starts the next one.
SUPERSEDED = {
    "success": "success",
    "failed": "retry",
    "up_for_retry": "retry",
    "skipped": "skipped",
}
#: what a task instance Airflow never started (try number 0) can be in a finished DAG run.
NEVER_STARTED = {"skipped", "upstream_failed"}
DAG_RUN = {"success": "success", "failed": "failure"}


def example_file(example: Example) -> Path:
    """Where Airflow's installed example is (found, not imported)."""
    spec = importlib.util.find_spec(example.module)
    assert spec is not None
    assert spec.origin is not None
    return Path(spec.origin)


@pytest.fixture(scope="module")
def examples_bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A DAG bundle (a folder) with the examples' files, configured next to Airflow's own
    for this module: ``dag.test()`` finds each example's DAG there and syncs it."""
    folder = tmp_path_factory.mktemp("airflow-examples")
    for example in EXAMPLES:
        source = example_file(example.values[0])
        shutil.copyfile(source, folder / source.name)
    bundles = conf.getjson("dag_processor", "dag_bundle_config_list")
    assert isinstance(bundles, list)
    bundles.append(
        {
            "name": "airflow-examples",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(folder)},
        }
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
        yield folder


@pytest.fixture
def instrumented(client: Client) -> Iterator[Client]:
    """The listener on for the example DAGs, starts included; yields the delivery client."""
    instrumentor = AirflowInstrumentor()
    assert instrumentor.instrument(include=["example_*"], send_start=True)
    yield client
    assert instrumentor.uninstrument()


def load(example: Example, bundle: Path) -> Any:
    """The example DAG as Airflow's own loader builds it from the example's file."""
    bag = DagBag(dag_folder=bundle / example_file(example).name)
    assert not bag.import_errors, bag.import_errors
    return bag.dags[example.dag_id]


def _value(state: Any) -> str:
    return str(getattr(state, "value", state))


def expected_pings(dag_id: str, run_id: str) -> tuple[list[Ping], list[str]]:
    """The pings Airflow's metadata DB says this DAG run must have sent, and the ``run_id``
    of each task instance it never started (which sends none)."""
    expected: list[Ping] = []
    never_started: list[str] = []
    with create_session() as session:
        tries: list[tuple[Any, dict[str, str]]] = [
            (row, SUPERSEDED)
            for row in session.scalars(
                select(TaskInstanceHistory).where(
                    TaskInstanceHistory.dag_id == dag_id, TaskInstanceHistory.run_id == run_id
                )
            )
        ]
        tries += [
            (row, FINAL)
            for row in session.scalars(
                select(TaskInstance).where(
                    TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
                )
            )
        ]
        for row, mapping in tries:
            state = _value(row.state)
            ping_run_id = f"{dag_id}/{run_id}/{row.task_id}" + (
                f"/{row.map_index}" if row.map_index >= 0 else ""
            )
            if row.try_number == 0:
                assert state in NEVER_STARTED, f"{ping_run_id}: never started, yet {state}"
                never_started.append(ping_run_id)
                continue
            assert state in mapping, f"{ping_run_id} try {row.try_number}: state {state}"
            job = f"{dag_id}.{row.task_id}"
            for status in ("start", mapping[state]):
                expected.append(
                    (job, ping_run_id, status, row.try_number, row.try_number, row.map_index)
                )
        dag_run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        ).one()
        state = _value(dag_run.state)
        assert state in DAG_RUN, f"the DAG run did not finish: {state}"
        expected.append((dag_id, f"{dag_id}/{run_id}", DAG_RUN[state], None, None, None))
    return expected, never_started


def as_compared(run: dict[str, Any]) -> Ping:
    payload = run["payload"]
    block = payload.get("airflow") or {}
    return (
        payload.get("job"),
        run["run_id"],
        run["status"],
        payload.get("attempt"),
        block.get("try_number"),
        block.get("map_index"),
    )


def features(expected: list[Ping], never_started: list[str]) -> set[str]:
    """What a DAG run's record shows: the statuses of its tries, ``never started``, ``mapped``."""
    found = {ping[2] for ping in expected}
    if never_started:
        found.add("never started")
    if any(ping[5] is not None and ping[5] >= 0 for ping in expected):
        found.add("mapped")
    return found


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_ping_matches_what_airflow_recorded(
    server: LiveServer, examples_bundle: Path, instrumented: Client, example: Example
) -> None:
    dag_id = example.dag_id
    dag_run = load(example, examples_bundle).test()
    assert instrumented.flush()

    expected, never_started = expected_pings(dag_id, dag_run.run_id)
    assert example.shows <= features(expected, never_started)
    stored = runs_everywhere(server, f"{dag_id}/{dag_run.run_id}")
    # As multisets: a missing, an extra or a repeated ping fails.
    assert sorted(map(as_compared, stored)) == sorted(expected)
    # The tracker of each ping is its job's (a ping key: one tracker per job name).
    assert all(run["slug"] == slugify(run["payload"]["job"]) for run in stored)
    # What Airflow never started sent nothing, in any tracker.
    assert not set(never_started) & {run["run_id"] for run in stored}
