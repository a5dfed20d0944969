"""OpenLineage events from the official ``openlineage-python`` client, over its HTTP transport,
to a live reference server (a real ``telemhq-server`` process), on SQLite and PostgreSQL: each
event stored as a run of the tracker ``<namespace>/<job name>`` as a ping would be."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import (
    DatasetEvent,
    InputDataset,
    Job,
    JobEvent,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
    StaticDataset,
)
from openlineage.client.facet_v2 import (
    data_quality_metrics_input_dataset,
    error_message_run,
    input_statistics_input_dataset,
    output_statistics_output_dataset,
    parent_run,
)
from openlineage.client.transport.http import (
    ApiKeyTokenProvider,
    HttpCompression,
    HttpConfig,
    HttpTransport,
)

from tests.live_server import LiveServer
from tests.server.conftest import postgres_schema

pytestmark = pytest.mark.slow

PRODUCER = "https://github.com/OpenLineage/OpenLineage/tree/1.54.0/integration/spark"
T0 = dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)]
)
def server(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    """One live server per database for the module (SQLite file, or a fresh PostgreSQL
    schema dropped afterwards)."""
    if request.param == "sqlite":
        with LiveServer() as live:
            yield live
        return
    with (
        postgres_schema(request.getfixturevalue("postgres_url")) as url,
        LiveServer(url) as live,
    ):
        yield live


@pytest.fixture(scope="module")
def ping_key(server: LiveServer) -> str:
    response = server.api("POST", "/ping-keys", json={"name": "lineage"})
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


def ol_client(server: LiveServer, key: str, *, gzip: bool = False) -> OpenLineageClient:
    """The official client with its HTTP transport, as ``OPENLINEAGE_URL`` and
    ``OPENLINEAGE_API_KEY`` would configure it."""
    config = HttpConfig(
        url=server.base_url,
        auth=ApiKeyTokenProvider({"apiKey": key}),
        compression=HttpCompression.GZIP if gzip else None,
        retry={"total": 0},
    )
    return OpenLineageClient(transport=HttpTransport(config))


def event(
    state: RunState,
    run_id: str,
    job: str,
    *,
    at: dt.datetime = T0,
    namespace: str = "spark-prod",
    facets: dict[str, Any] | None = None,
    inputs: list[InputDataset] | None = None,
    outputs: list[OutputDataset] | None = None,
) -> RunEvent:
    return RunEvent(
        eventType=state,
        eventTime=at.isoformat(),
        run=Run(runId=run_id, facets=facets or {}),
        job=Job(namespace=namespace, name=job),
        producer=PRODUCER,
        inputs=inputs or [],
        outputs=outputs or [],
    )


def output(name: str, rows: int, size: int) -> OutputDataset:
    stats = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
        rowCount=rows, size=size
    )
    return OutputDataset(namespace="s3://lake", name=name, outputFacets={"outputStatistics": stats})


def tracker_named(server: LiveServer, name: str) -> dict[str, Any] | None:
    items = server.api("GET", "/trackers", params={"limit": 500}).json()["items"]
    return next((t for t in items if t["name"] == name), None)


def new_run() -> str:
    return str(uuid.uuid4())


def test_it_stores_a_start_and_its_complete_as_one_run_with_row_counts(
    server: LiveServer, ping_key: str
) -> None:
    client = ol_client(server, ping_key)
    run_id, job = new_run(), f"daily_orders_{uuid.uuid4().hex[:6]}"
    dq = data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
        columnMetrics={
            "id": data_quality_metrics_input_dataset.ColumnMetrics(nullCount=0, distinctCount=40)
        },
        rowCount=40,
    )
    inputs = [
        InputDataset(
            namespace="postgres://db",
            name="public.orders",
            inputFacets={
                "inputStatistics": input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
                    rowCount=40, size=4000
                ),
                "dataQualityMetrics": dq,
            },
        )
    ]
    client.emit(event(RunState.START, run_id, job))
    client.emit(
        event(
            RunState.COMPLETE,
            run_id,
            job,
            at=T0 + dt.timedelta(seconds=90),
            inputs=inputs,
            outputs=[output("orders_by_day", 30, 3000), output("orders_by_region", 12, 1200)],
        )
    )

    tracker = tracker_named(server, f"spark-prod/{job}")
    assert tracker is not None
    assert tracker["tags"] == ["openlineage", "producer:spark"]
    assert tracker["state"] == "up"
    end, start = server.runs(tracker["id"])
    assert (start["status"], end["status"]) == ("start", "success")
    payload = end["payload"]
    assert payload["run_id"] == run_id == start["payload"]["run_id"]
    assert payload["duration"] == 90_000
    assert end["duration_ms"] == 90_000
    assert payload["started_at"] == "2026-03-01T02:00:00Z"
    assert payload["finished_at"] == "2026-03-01T02:01:30Z"
    assert payload["records_processed"] == 42
    assert payload["bytes_written"] == 4200
    assert payload["records_read"] == 40
    assert payload["bytes_read"] == 4000
    assert payload["outputs"] == [
        {"namespace": "s3://lake", "name": "orders_by_day", "rows": 30, "bytes": 3000},
        {"namespace": "s3://lake", "name": "orders_by_region", "rows": 12, "bytes": 1200},
    ]
    assert payload["inputs"] == [
        {"namespace": "postgres://db", "name": "public.orders", "rows": 40, "bytes": 4000}
    ]
    assert payload["quality"] == [
        {
            "namespace": "postgres://db",
            "name": "public.orders",
            "rows": 40,
            "columns": {"id": {"nullCount": 0, "distinctCount": 40, "quantiles": {}}},
        }
    ]
    assert payload["openlineage"]["event_type"] == "COMPLETE"


def test_interleaved_runs_each_end_finds_its_own_start(server: LiveServer, ping_key: str) -> None:
    """Two runs of one job overlap: the second START is the tracker's open start when the
    first run ends, so each end finds its START by the run id (stored start time and
    duration), not as the open start."""
    client = ol_client(server, ping_key)
    first, second, job = new_run(), new_run(), f"overlap_{uuid.uuid4().hex[:6]}"
    client.emit(event(RunState.START, first, job))
    client.emit(event(RunState.START, second, job, at=T0 + dt.timedelta(seconds=10)))
    client.emit(event(RunState.COMPLETE, first, job, at=T0 + dt.timedelta(seconds=60)))
    client.emit(event(RunState.FAIL, second, job, at=T0 + dt.timedelta(seconds=40)))

    tracker = tracker_named(server, f"spark-prod/{job}")
    assert tracker is not None
    runs = server.runs(tracker["id"])
    starts = {r["run_id"]: r for r in runs if r["status"] == "start"}
    ends = {r["run_id"]: r for r in runs if r["status"] != "start"}
    assert set(starts) == set(ends) == {first, second}
    for run_id in (first, second):
        assert ends[run_id]["started_at"] == starts[run_id]["received_at"]
    assert ends[first]["duration_ms"] == 60_000
    assert ends[second]["duration_ms"] == 30_000
    assert ends[second]["status"] == "failure"


def test_payload_assertions_judge_openlineage_runs(server: LiveServer, ping_key: str) -> None:
    client = ol_client(server, ping_key)
    job = f"load_{uuid.uuid4().hex[:6]}"
    client.emit(event(RunState.COMPLETE, new_run(), job, outputs=[output("t", 5, 50)]))
    tracker = tracker_named(server, f"spark-prod/{job}")
    assert tracker is not None
    server.api(
        "PATCH", f"/trackers/{tracker['id']}", json={"assertions": ["records_processed > 0"]}
    )
    client.emit(event(RunState.COMPLETE, new_run(), job, outputs=[output("t", 0, 0)]))
    last = server.runs(tracker["id"])[0]
    assert last["passed"] is False
    assert last["assertions"][0]["reason"] == "records_processed was 0, expected > 0"
    assert server.tracker(tracker["id"])["state"] == "failing"


def test_fail_is_a_failure_with_the_error_and_abort_is_cancelled(
    server: LiveServer, ping_key: str
) -> None:
    client = ol_client(server, ping_key, gzip=True)  # and the transport's gzip compression
    job = f"nightly_{uuid.uuid4().hex[:6]}"
    failed, aborted = new_run(), new_run()
    error = error_message_run.ErrorMessageRunFacet(
        message="division by zero",
        programmingLanguage="python",
        stackTrace='Traceback (most recent call last):\n  File "job.py"\nZeroDivisionError',
    )
    client.emit(event(RunState.START, failed, job))
    client.emit(
        event(
            RunState.FAIL,
            failed,
            job,
            at=T0 + dt.timedelta(seconds=5),
            facets={"errorMessage": error},
        )
    )
    tracker = tracker_named(server, f"spark-prod/{job}")
    assert tracker is not None
    assert tracker["state"] == "failing"
    fail = server.runs(tracker["id"])[0]
    assert fail["status"] == "failure"
    assert fail["payload"]["error"] == {
        "message": "division by zero",
        "language": "python",
        "traceback": 'Traceback (most recent call last):\n  File "job.py"\nZeroDivisionError',
    }
    assert fail["payload"]["duration"] == 5000

    client.emit(event(RunState.START, aborted, job))
    client.emit(event(RunState.ABORT, aborted, job, at=T0 + dt.timedelta(seconds=1)))
    abort = server.runs(tracker["id"])[0]
    assert (abort["status"], abort["payload"]["run_id"]) == ("cancelled", aborted)
    assert server.tracker(tracker["id"])["state"] == "failing"  # cancelled changes no state


def test_a_repeated_event_is_stored_once_and_running_other_store_nothing(
    server: LiveServer, ping_key: str
) -> None:
    client = ol_client(server, ping_key)
    job, run_id = f"repeat_{uuid.uuid4().hex[:6]}", new_run()
    client.emit(event(RunState.START, run_id, job))
    client.emit(event(RunState.RUNNING, run_id, job))
    client.emit(event(RunState.COMPLETE, run_id, job, at=T0 + dt.timedelta(seconds=2)))
    client.emit(event(RunState.COMPLETE, run_id, job, at=T0 + dt.timedelta(seconds=2)))
    client.emit(event(RunState.OTHER, run_id, job))
    tracker = tracker_named(server, f"spark-prod/{job}")
    assert tracker is not None
    assert [r["status"] for r in server.runs(tracker["id"])] == ["success", "start"]
    # a START arriving after its run's end (sent asynchronously) leaves no run open
    late = new_run()
    client.emit(event(RunState.COMPLETE, late, job, at=T0 + dt.timedelta(seconds=3)))
    client.emit(event(RunState.START, late, job))
    statuses = [(r["status"], r["payload"]["run_id"]) for r in server.runs(tracker["id"])]
    assert statuses[0] == ("success", late)
    assert ("start", late) not in statuses
    # RUNNING for a job with no tracker yet creates none
    client.emit(event(RunState.RUNNING, new_run(), f"{job}_never"))
    assert tracker_named(server, f"spark-prod/{job}_never") is None


def test_one_job_name_in_two_namespaces_is_two_trackers_and_the_parent_is_kept(
    server: LiveServer, ping_key: str
) -> None:
    client = ol_client(server, ping_key)
    job, parent_id = f"model_{uuid.uuid4().hex[:6]}", new_run()
    parent = parent_run.ParentRunFacet(
        run=parent_run.Run(runId=parent_id),
        job=parent_run.Job(namespace="dbt", name="dbt-run-jaffle"),
    )
    client.emit(
        event(RunState.COMPLETE, new_run(), job, namespace="dbt", facets={"parent": parent})
    )
    client.emit(event(RunState.COMPLETE, new_run(), job, namespace="dbt-staging"))
    first = tracker_named(server, f"dbt/{job}")
    second = tracker_named(server, f"dbt-staging/{job}")
    assert first is not None
    assert second is not None
    assert first["id"] != second["id"]
    stored = server.runs(first["id"])[0]["payload"]["parent"]
    assert stored == {
        "job": "dbt/dbt-run-jaffle",
        "slug": "dbt-dbt-run-jaffle",
        "run_id": parent_id,
    }


def test_dataset_and_job_events_are_acknowledged_and_store_nothing(
    server: LiveServer, ping_key: str
) -> None:
    client = ol_client(server, ping_key)
    before = server.api("GET", "/trackers", params={"limit": 500}).json()["items"]
    client.emit(
        DatasetEvent(
            eventTime=T0.isoformat(),
            producer=PRODUCER,
            dataset=StaticDataset(namespace="s3://lake", name="t"),
        )
    )
    client.emit(JobEvent(eventTime=T0.isoformat(), producer=PRODUCER, job=Job("ns", "j")))
    after = server.api("GET", "/trackers", params={"limit": 500}).json()["items"]
    assert after == before


def raw_event(run_id: str, job_name: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "eventType": "COMPLETE",
        "eventTime": "2026-03-01T02:00:00Z",
        "run": {"runId": run_id},
        "job": {"namespace": "raw", "name": job_name},
        "producer": PRODUCER,
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
    }
    body.update(changes)
    return body


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"run": {"runId": "not-a-uuid"}}, "run.runId: "),
        ({"eventType": "DONE"}, "eventType: "),
        ({"eventTime": "yesterday"}, "eventTime: "),
        ({"job": {"namespace": "raw"}}, "job: "),
        ({"schemaURL": "https://openlineage.io/spec/9-0-0/OpenLineage.json"}, "9-0-0"),
        ({"schemaURL": "https://example.com/x"}, "schemaURL: "),
        (
            {
                "outputs": [
                    {
                        "namespace": "s3://lake",
                        "name": "t",
                        "outputFacets": {
                            "outputStatistics": {
                                "_producer": PRODUCER,
                                "_schemaURL": "https://openlineage.io/spec/facets/1-0-2/"
                                "OutputStatisticsOutputDatasetFacet.json",
                                "rowCount": "many",
                            }
                        },
                    }
                ]
            },
            "outputs[0].outputFacets.outputStatistics.rowCount: ",
        ),
        (
            {
                "inputs": [
                    {
                        "namespace": "postgres://db",
                        "name": "t",
                        "inputFacets": {
                            "inputStatistics": {
                                "_producer": PRODUCER,
                                "_schemaURL": "https://openlineage.io/spec/facets/1-0-0/"
                                "InputStatisticsInputDatasetFacet.json",
                                "size": "big",
                            }
                        },
                    }
                ]
            },
            "inputs[0].inputFacets.inputStatistics.size: ",
        ),
        (
            {
                "run": {
                    "runId": str(uuid.uuid4()),
                    "facets": {
                        "errorMessage": {
                            "_producer": PRODUCER,
                            "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/"
                            "ErrorMessageRunFacet.json",
                            "programmingLanguage": "python",
                        }
                    },
                }
            },
            "run.facets.errorMessage: ",
        ),
    ],
)
def test_a_malformed_event_is_a_400_naming_what_is_wrong_and_stores_nothing(
    server: LiveServer, ping_key: str, changes: dict[str, Any], message: str
) -> None:
    job = f"bad_{uuid.uuid4().hex[:6]}"
    response = httpx.post(
        f"{server.base_url}/api/v1/lineage",
        json=raw_event(new_run(), job, **changes),
        headers={"Authorization": f"Bearer {ping_key}"},
    )
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert tracker_named(server, f"raw/{job}") is None


def test_bodies_that_are_not_events(server: LiveServer, ping_key: str) -> None:
    url, auth = f"{server.base_url}/api/v1/lineage", {"Authorization": f"Bearer {ping_key}"}
    assert httpx.post(url, content=b"{nope", headers=auth).status_code == 400
    assert httpx.post(url, content=b"[]", headers=auth).status_code == 400
    gz = {**auth, "Content-Encoding": "gzip"}
    assert httpx.post(url, content=b"not gzip", headers=gz).status_code == 400
    bomb = gzip.compress(b" " * 5_000_000)
    assert httpx.post(url, content=bomb, headers=gz).status_code == 413
    br = {**auth, "Content-Encoding": "br"}
    assert httpx.post(url, content=b"{}", headers=br).status_code == 415


def test_refusals_are_json_naming_the_problem(server: LiveServer, ping_key: str) -> None:
    """The route in front of the framework answers its refusals itself: JSON with ``ok``
    false and an ``error`` that says what to change, over the declared size or not."""
    url, auth = f"{server.base_url}/api/v1/lineage", {"Authorization": f"Bearer {ping_key}"}
    job = f"refused_{uuid.uuid4().hex[:6]}"

    def refused(response: httpx.Response, status: int, words: str) -> None:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        answer = response.json()
        assert answer["ok"] is False
        assert words in answer["error"]

    refused(httpx.post(url, content=b"{nope", headers=auth), 400, "not valid JSON")
    refused(httpx.post(url, content=b"[]", headers=auth), 400, "must be a JSON object")
    refused(httpx.post(url, json=raw_event(new_run(), job)), 401, "Authorization: Bearer")
    refused(
        httpx.post(url, json=raw_event(new_run(), job), headers={"Authorization": "Bearer x"}),
        401,
        "invalid key",
    )
    big = json.dumps(raw_event(new_run(), job, padding="x" * 1_000_000)).encode()
    refused(httpx.post(url, content=big, headers=auth), 413, "larger than the limit")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is counted as it comes
        for start in range(0, len(big), 65_536):
            yield big[start : start + 65_536]

    refused(httpx.post(url, content=chunks(), headers=auth), 413, "larger than the limit")
    assert tracker_named(server, f"raw/{job}") is None
    gz = {**auth, "Content-Encoding": "gzip"}
    stored = httpx.post(
        url, content=gzip.compress(json.dumps(raw_event(new_run(), job)).encode()), headers=gz
    )
    assert stored.status_code == 200, stored.text
    assert tracker_named(server, f"raw/{job}") is not None


def test_keys(server: LiveServer, ping_key: str) -> None:
    url = f"{server.base_url}/api/v1/lineage"
    job = f"keys_{uuid.uuid4().hex[:6]}"
    body = json.dumps(raw_event(new_run(), job))

    def post(headers: dict[str, str]) -> httpx.Response:
        return httpx.post(
            url, content=body, headers={"Content-Type": "application/json", **headers}
        )

    assert post({}).status_code == 401
    assert post({"Authorization": "Bearer nope"}).status_code == 401
    assert post({"Authorization": "Basic abc"}).status_code == 401
    # an API key reaches existing trackers only
    admin = {"Authorization": f"Bearer {server.api_key}"}
    missing = post(admin)
    assert missing.status_code == 404
    assert "existing trackers only" in missing.json()["error"]
    created = server.create_tracker(name=f"raw/{job}")
    assert post(admin).status_code == 200
    assert [r["status"] for r in server.runs(created["id"])] == ["success"]
    read_only = server.api("POST", "/keys", json={"name": "ro", "scope": "read"})
    assert read_only.status_code == 201, read_only.text
    answer = post({"Authorization": f"Bearer {read_only.json()['key']}"})
    assert answer.status_code == 403
    # a ping key that does not create trackers reaches existing ones only
    fixed = server.api("POST", "/ping-keys", json={"name": "fixed", "auto_create": False})
    fixed_key = {"Authorization": f"Bearer {fixed.json()['key']}"}
    other = json.dumps(raw_event(new_run(), f"{job}_other"))
    refused = httpx.post(url, content=other, headers=fixed_key)
    assert refused.status_code == 404
    assert tracker_named(server, f"raw/{job}_other") is None
    assert httpx.post(url, content=body, headers=fixed_key).status_code == 200


def test_an_older_spec_version_is_checked_against_its_own_schema(
    server: LiveServer, ping_key: str
) -> None:
    job = f"old_{uuid.uuid4().hex[:6]}"
    body = raw_event(
        new_run(),
        job,
        schemaURL="https://openlineage.io/spec/1-0-5/OpenLineage.json#/$defs/RunEvent",
    )
    response = httpx.post(
        f"{server.base_url}/api/v1/lineage",
        json=body,
        headers={"Authorization": f"Bearer {ping_key}"},
    )
    assert response.status_code == 200, response.text
    tracker = tracker_named(server, f"raw/{job}")
    assert tracker is not None
    assert tracker["state"] == "up"
