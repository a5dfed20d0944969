"""Server settings from the environment: switches read like every other TELEMHQ_* switch."""

from __future__ import annotations

import pytest
from telemhq_server.config import Settings, load_settings


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), (" On ", True), ("TRUE", True), ("0", False), ("no", False)]
)
def test_a_switch_reads_every_spelling(raw: str, expected: bool) -> None:
    assert load_settings({"TELEMHQ_PUBLIC_DASHBOARD": raw}).public_dashboard is expected


def test_a_switch_survives_the_trip_to_a_worker_process() -> None:
    settings = Settings(public_dashboard=True)
    assert load_settings(settings.to_env()).public_dashboard is True
    assert load_settings(Settings().to_env()).public_dashboard is False


def test_an_unreadable_switch_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match=r"TELEMHQ_PUBLIC_DASHBOARD='maybe' is not a valid bool"):
        load_settings({"TELEMHQ_PUBLIC_DASHBOARD": "maybe"})
