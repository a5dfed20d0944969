"""A tracker that a ping key creates looks like the job: a core Run's first ping names it after
the job and tags it with the orchestrator and the run's tags (real client, real server)."""

from __future__ import annotations

from telemhq_plugins.core import start_run
from tests.kit import client_for, new_ping_key
from tests.live_server import LiveServer


def test_a_runs_first_ping_names_and_tags_its_new_tracker(live_server: LiveServer) -> None:
    client = client_for(live_server, ping_key=new_ping_key(live_server))
    try:
        run = start_run(
            "etl_daily.Load Orders",
            orchestrator="airflow",
            details={"dag_id": "etl_daily"},
            send_start=False,
            bind=False,
            client=client,
        )
        assert run.finish("success", tags=["team-data", "nightly"], rows=12)
        second = start_run(
            "etl_daily.Load Orders", orchestrator="airflow", bind=False, client=client
        )
        assert second.finish("success")
        assert client.flush(10)
    finally:
        client.close()
    tracker = live_server.tracker("etl-daily-load-orders")
    assert tracker["name"] == "etl_daily.Load Orders"
    assert tracker["tags"] == ["airflow", "team-data", "nightly"]
    runs = live_server.runs(tracker["id"])
    assert len(runs) == 2
    first = runs[-1]["payload"]  # oldest: the pings of a batch are stored in order
    assert (first["rows"], first["tags"]) == (12, ["team-data", "nightly"])
    assert first["airflow"] == {"dag_id": "etl_daily"}
