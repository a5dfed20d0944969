"""A bad setting never changes what a real worker's tasks do: monitoring is off for the
process, with one ERROR line naming the setting, and the tasks succeed and fail as they would
without TelemHQ."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from telemhq_plugins.celery import CeleryInstrumentor
from tests.celery.server import TelemHQ
from tests.kit import TIMEOUT_ABC, settings_client, telemhq_warnings

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
    instrumentor = CeleryInstrumentor()
    with settings_client():
        try:
            assert instrumentor.instrument()
            ok = tasks["add"].delay(2, 3)
            assert ok.get(timeout=RESULT_TIMEOUT) == 5
            failed = tasks["boom"].delay()
            with pytest.raises(ValueError, match="boom"):
                failed.get(timeout=RESULT_TIMEOUT)
        finally:
            instrumentor.uninstrument()
    assert telemhq_warnings(caplog.records) == [TIMEOUT_ABC]
    assert server.runs("tests.add", ok.id) == []
    assert server.runs("tests.boom", failed.id) == []
