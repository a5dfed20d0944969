"""The ``ui_url`` of the ``airflow`` block, from Airflow's ``[api] base_url``, under a real
``dag.test()`` against the real server."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest

from telemhq_plugins.airflow import _links
from telemhq_plugins.core import Client
from tests.airflow.dags.telemhq_test_dags import DAGS
from tests.airflow.helpers import block, runs_of
from tests.live_server import LiveServer

pytestmark = pytest.mark.usefixtures("airflow_db")

BASE = "https://airflow.example.com/ui"


@pytest.fixture
def base_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``[api] base_url`` set as Airflow reads it from the environment; the adapter reads it
    once per process, so its memory of it is cleared around the test."""
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE + "/")
    _links.base_url.cache_clear()
    yield BASE
    _links.base_url.cache_clear()


def test_it_links_the_task_instance_and_the_dag_run(
    server: LiveServer, client: Client, base_url: str
) -> None:
    dag_run = DAGS["cb_success"].test()
    assert dag_run.state == "success"
    run_id = quote(dag_run.run_id, safe="")
    assert run_id != dag_run.run_id  # dag.test()'s run ids hold a ':' and a '+', quoted here

    (task,) = runs_of(server, "cb_success.load", 1)
    assert block(task)["ui_url"] == f"{base_url}/dags/cb_success/runs/{run_id}/tasks/load"
    (dag,) = runs_of(server, "cb_success", 1)
    assert block(dag)["ui_url"] == f"{base_url}/dags/cb_success/runs/{run_id}"


def test_a_mapped_task_links_its_map_index(
    server: LiveServer, client: Client, base_url: str
) -> None:
    dag_run = DAGS["cb_mapped"].test()
    assert dag_run.state == "success"
    run_id = quote(dag_run.run_id, safe="")

    runs = runs_of(server, "cb_mapped.part", 3)
    links = sorted(block(r)["ui_url"] for r in runs)
    task = f"{base_url}/dags/cb_mapped/runs/{run_id}/tasks/part"
    assert links == [f"{task}/mapped/{n}" for n in range(3)]


def test_without_a_base_url_there_is_no_link(
    server: LiveServer, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    _links.base_url.cache_clear()
    assert DAGS["cb_skipped"].test().state == "success"
    (run,) = runs_of(server, "cb_skipped.after", 1)
    assert "ui_url" not in block(run)
