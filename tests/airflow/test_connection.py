"""The provider: the ``telemhq`` connection type, ``TelemHQHook``, and ``telemhq_default`` in
place of ``TELEMHQ_*`` variables under a real ``dag.test()``."""

from __future__ import annotations

import json
import os

import pytest
from airflow.sdk.definitions.connection import Connection

from telemhq_plugins.airflow import TelemHQHook
from telemhq_plugins.airflow.hooks import connection_api_key, connection_settings
from telemhq_plugins.core import Client, load_settings
from tests.airflow.dags.telemhq_test_dags import DAGS
from tests.airflow.helpers import runs_of
from tests.kit import new_ping_key, process_client
from tests.live_server import LiveServer


def test_a_connection_stands_for_base_url_secret_and_api_key() -> None:
    as_json = Connection(
        conn_id="telemhq_default",
        conn_type="telemhq",
        host="https://telemhq.example/",
        password="pk123",
        extra=json.dumps({"api_key": "thq_abc"}),
    )
    assert connection_settings(as_json) == {
        "base_url": "https://telemhq.example",
        "ping_key": "pk123",
    }
    assert connection_api_key(as_json) == "thq_abc"

    as_uri = Connection.from_uri(
        "telemhq://token:tok456@127.0.0.1:8123?scheme=http", conn_id="telemhq_default"
    )
    assert connection_settings(as_uri) == {"base_url": "http://127.0.0.1:8123", "token": "tok456"}
    assert connection_api_key(as_uri) is None


def test_the_hook_builds_settings_from_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_TELEMHQ_OTHER",
        json.dumps(
            {"conn_type": "telemhq", "host": "http://h:1", "login": "token", "password": "t"}
        ),
    )
    hook = TelemHQHook("telemhq_other")
    settings = hook.settings()
    assert settings.base_url == "http://h:1"
    assert settings.ping_url_for("any.job") == "http://h:1/ping/t"
    assert hook.api_key is None
    client = hook.get_conn()
    try:
        assert client.settings == settings
    finally:
        client.close()


def test_the_provider_declares_the_telemhq_connection_type() -> None:
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    manager = ProvidersManagerTaskRuntime()
    assert "telemhq-plugins" in manager.providers
    hook = manager.hooks["telemhq"]
    assert hook is not None
    assert hook.hook_class_name == "telemhq_plugins.airflow.hooks.TelemHQHook"


@pytest.mark.usefixtures("airflow_db")
def test_the_telemhq_default_connection_replaces_telemhq_variables(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_ping_key(server)
    monkeypatch.setenv(
        "AIRFLOW_CONN_TELEMHQ_DEFAULT",
        json.dumps({"conn_type": "telemhq", "host": server.base_url, "password": key}),
    )
    # The process's own settings name no target (no TELEMHQ_* at all).
    bare = Client(load_settings(env={}, config_file=os.devnull, timeout=2.0, max_retries=0))
    with process_client(bare):
        dag_run = DAGS["conn_dag"].test()
    assert dag_run.state == "success"
    (task_ping,) = runs_of(server, "conn_dag.work", 1)
    assert task_ping["status"] == "success"
    assert task_ping["payload"]["rows"] == 1
    (dag_ping,) = runs_of(server, "conn_dag", 1)
    assert dag_ping["status"] == "success"
