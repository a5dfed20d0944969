"""``conf``: the ``[telemhq]`` section of Airflow's config first, then ``TELEMHQ_*``, then the
default (Airflow reads ``AIRFLOW__TELEMHQ__<OPTION>`` as that section)."""

from __future__ import annotations

import logging

import pytest

from telemhq_plugins.airflow import conf


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in ("AUTO", "INCLUDE", "EXCLUDE", "SEND_START", "SYNC_SCHEDULES", "CONN_ID"):
        monkeypatch.delenv(f"AIRFLOW__TELEMHQ__{option}", raising=False)
    for name in (
        "TELEMHQ_AIRFLOW_AUTO",
        "TELEMHQ_AIRFLOW_INCLUDE",
        "TELEMHQ_AIRFLOW_EXCLUDE",
        "TELEMHQ_SEND_START",
        "TELEMHQ_AIRFLOW_SYNC",
        "TELEMHQ_AIRFLOW_CONN_ID",
    ):
        monkeypatch.delenv(name, raising=False)


def test_the_defaults() -> None:
    assert conf.auto() is False
    assert conf.include() == ()
    assert conf.exclude() == ()
    assert conf.send_start() is None
    assert conf.sync_schedules() is True
    assert conf.conn_id() == "telemhq_default"


def test_the_environment_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMHQ_AIRFLOW_AUTO", "yes")
    monkeypatch.setenv("TELEMHQ_AIRFLOW_INCLUDE", "a*, ,b")
    monkeypatch.setenv("TELEMHQ_AIRFLOW_EXCLUDE", "c")
    monkeypatch.setenv("TELEMHQ_AIRFLOW_SYNC", "off")
    monkeypatch.setenv("TELEMHQ_AIRFLOW_CONN_ID", "other")
    assert conf.auto() is True
    assert conf.include() == ("a*", "b")
    assert conf.exclude() == ("c",)
    assert conf.sync_schedules() is False
    assert conf.conn_id() == "other"
    assert conf.send_start() is None  # TELEMHQ_SEND_START is core's own setting


def test_airflows_config_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMHQ_AIRFLOW_AUTO", "1")
    monkeypatch.setenv("AIRFLOW__TELEMHQ__AUTO", "False")
    monkeypatch.setenv("TELEMHQ_AIRFLOW_INCLUDE", "from_env")
    monkeypatch.setenv("AIRFLOW__TELEMHQ__INCLUDE", "from_cfg_*")
    monkeypatch.setenv("AIRFLOW__TELEMHQ__SEND_START", "True")
    monkeypatch.setenv("AIRFLOW__TELEMHQ__CONN_ID", "cfg_conn")
    assert conf.auto() is False
    assert conf.include() == ("from_cfg_*",)
    assert conf.send_start() is True
    assert conf.conn_id() == "cfg_conn"


def test_an_unusable_switch_keeps_the_default_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW__TELEMHQ__AUTO", "perhaps")
    with caplog.at_level(logging.WARNING, logger="telemhq"):
        assert conf.auto() is False
    assert "[telemhq] auto" in caplog.text
    assert "perhaps" in caplog.text
