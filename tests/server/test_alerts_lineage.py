"""Alert grouping of OpenLineage runs by their parent run: real OpenLineage events from the
official client, over its HTTP transport, to a live server whose channel is a loopback
``json://`` receiver (real Apprise)."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator

import pytest
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
from openlineage.client.facet_v2 import error_message_run, parent_run
from openlineage.client.serde import Serde
from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport
from telemhq_server.alerts.enqueue import group_key
from telemhq_server.alerts.message import render_group
from telemhq_server.lineage.mapping import map_event

from tests.kit import wait_until
from tests.live_server import LiveServer
from tests.server.test_alerts import Receiver

DBT = "https://github.com/OpenLineage/OpenLineage/tree/1.54.0/integration/dbt"
WINDOW = 3  # seconds notifications wait for the rest of their group


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def server() -> Iterator[LiveServer]:
    with LiveServer(env={"TELEMHQ_ALERT_GROUP_WINDOW": str(WINDOW)}) as live:
        yield live


@pytest.fixture
def client(server: LiveServer, receiver: Receiver) -> OpenLineageClient:
    """The official client, as ``OPENLINEAGE_URL`` and ``OPENLINEAGE_API_KEY`` would set it,
    to a server with one channel: the receiver."""
    assert server.api("POST", "/channels", json={"url": receiver.url}).status_code == 201
    answer = server.api("POST", "/ping-keys", json={"name": "lineage"})
    assert answer.status_code == 201, answer.text
    config = HttpConfig(
        url=server.base_url,
        auth=ApiKeyTokenProvider({"apiKey": answer.json()["key"]}),
        retry={"total": 0},
    )
    return OpenLineageClient(transport=HttpTransport(config))


def failed(job: str, parent_id: str | None, message: str, run_id: str | None = None) -> RunEvent:
    """A dbt model's FAIL event, under the dbt run ``parent_id`` (None: a run of its own)."""
    facets: dict[str, object] = {
        "errorMessage": error_message_run.ErrorMessageRunFacet(
            message=message, programmingLanguage="sql"
        )
    }
    if parent_id is not None:
        facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=parent_id),
            job=parent_run.Job(namespace="dbt", name="jaffle_shop.build"),
        )
    return RunEvent(
        eventType=RunState.FAIL,
        eventTime=dt.datetime.now(dt.UTC).isoformat(),
        run=Run(runId=run_id or str(uuid.uuid4()), facets=facets),
        job=Job(namespace="dbt", name=job),
        producer=DBT,
    )


@pytest.mark.slow
def test_five_failed_models_of_one_dbt_run_are_one_message(
    client: OpenLineageClient, receiver: Receiver
) -> None:
    dbt_run, other_run = str(uuid.uuid4()), str(uuid.uuid4())
    models = [f"jaffle_shop.model_{i}" for i in range(5)]
    for model in models:
        client.emit(failed(model, dbt_run, f"relation {model} does not exist"))
    # A model of another run of the same dbt job is another incident.
    client.emit(failed("jaffle_shop.orders", other_run, "division by zero"))
    wait_until(lambda: len(receiver.messages) >= 2, "the grouped message and the single one")
    time.sleep(WINDOW + 2)  # nothing else comes: the five were folded, not sent as well
    titles = sorted(receiver.titles())
    assert titles == [
        f"dbt run dbt/jaffle_shop.build {dbt_run} failed: 5 failing",
        "dbt/jaffle_shop.orders is failing",
    ]
    [grouped] = [m for m in receiver.messages if dbt_run in m["title"]]
    for model in models:
        assert f"- dbt/{model}: Error: relation {model} does not exist" in grouped["message"]
    assert "jaffle_shop.orders" not in grouped["message"]


@pytest.mark.slow
def test_a_dbt_run_failing_with_its_models_is_told_with_them(
    client: OpenLineageClient, receiver: Receiver
) -> None:
    dbt_run = str(uuid.uuid4())
    for i in range(2):
        client.emit(failed(f"jaffle_shop.model_{i}", dbt_run, "boom"))
    client.emit(failed("jaffle_shop.build", None, "2 models failed", run_id=dbt_run))
    wait_until(lambda: receiver.messages, "the grouped message")
    time.sleep(WINDOW + 2)
    assert receiver.titles() == [f"dbt run dbt/jaffle_shop.build {dbt_run} failed: 3 failing"]
    assert "- dbt/jaffle_shop.build: Error: 2 models failed" in receiver.messages[0]["message"]


AIRFLOW = "https://github.com/apache/airflow/tree/providers-openlineage/2.3.0"


def airflow_event(job: str, run_id: str, dag_run: str | None) -> dict[str, object]:
    """What Airflow's OpenLineage provider sends when a task (under its DAG run) or the DAG
    run itself fails, as the JSON the server receives."""
    facets: dict[str, object] = {}
    if dag_run is not None:
        facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=dag_run), job=parent_run.Job(namespace="prod", name="etl")
        )
    event = RunEvent(
        eventType=RunState.FAIL,
        eventTime="2026-06-01T02:00:00+00:00",
        run=Run(runId=run_id, facets=facets),
        job=Job(namespace="prod", name=job),
        producer=AIRFLOW,
    )
    result: dict[str, object] = Serde.to_dict(event)
    return result


def test_an_airflow_task_is_grouped_under_its_dag_run_and_the_dag_run_with_them() -> None:
    dag_run = str(uuid.uuid4())
    tasks = [
        map_event(airflow_event(f"etl.load_{i}", str(uuid.uuid4()), dag_run)) for i in range(2)
    ]
    dag = map_event(airflow_event("etl", dag_run, None))
    keys = {group_key("failing", m.payload, "openlineage") for m in [*tasks, dag]}
    assert keys == {f"run:openlineage:prod-etl:{dag_run}"}
    # Another DAG run is another group; a success is never grouped.
    other = map_event(airflow_event("etl.load_0", str(uuid.uuid4()), str(uuid.uuid4())))
    assert group_key("failing", other.payload, "openlineage") not in keys
    assert group_key("recovered", tasks[0].payload, "openlineage") is None
    docs = [
        {"tracker": {"name": m.name, "tags": list(m.tags)}, "run": {"payload": m.payload}}
        for m in [*tasks, dag]
    ]
    title, _ = render_group(keys.pop(), docs, public_url="")
    assert title == f"Airflow run prod/etl {dag_run} failed: 3 failing"
