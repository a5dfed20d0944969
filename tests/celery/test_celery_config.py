"""A bad setting never changes what a real worker's tasks do: monitoring is off for the
process, with one ERROR line naming the setting, and the tasks succeed and fail as they would
without TelemHQ."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from telemhq_plugins.celery import CeleryInstrumentor
from telemhq_plugins.core import set_client
from tests.celery.server import TelemHQ

pytestmark = [pytest.mark.services, pytest.mark.usefixtures("worker")]
RESULT_TIMEOUT = 60


def test_a_bad_setting_leaves_the_tasks_outcomes_unchanged(
    tasks: dict[str, Any],
    server: TelemHQ,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("TELEMHQ_BASE_URL", server.live.base_url)
    monkeypatch.setenv("TELEMHQ_TOKEN", server.default_token)
    monkeypatch.setenv("TELEMHQ_TIMEOUT", "abc")
    caplog.set_level(logging.ERROR, logger="telemhq")
    previous = set_client(None)  # the process's client is built from the settings again
    instrumentor = CeleryInstrumentor()
    try:
        assert instrumentor.instrument()
        ok = tasks["add"].delay(2, 3)
        assert ok.get(timeout=RESULT_TIMEOUT) == 5
        failed = tasks["boom"].delay()
        with pytest.raises(ValueError, match="boom"):
            failed.get(timeout=RESULT_TIMEOUT)
    finally:
        instrumentor.uninstrument()
        set_client(previous)
    errors = [r.getMessage() for r in caplog.records if r.name == "telemhq"]
    assert errors == [
        "TelemHQ: monitoring is off, the job runs as without it: "
        "TELEMHQ_TIMEOUT='abc' (environment): not a number; "
        "expected a number of seconds above 0 (default 15)"
    ]
    assert server.runs("tests.add", ok.id) == []
    assert server.runs("tests.boom", failed.id) == []
