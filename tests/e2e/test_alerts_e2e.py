"""Alerts end to end: real server processes, real Apprise, a real receiver; ``telemhq
silence`` in a real process; a crash between a state change and its notification."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_cli_and_monitor import run_cli
from tests.kit import wait_until
from tests.live_server import LiveServer
from tests.server.test_alerts import Receiver

pytestmark = pytest.mark.slow


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_telemhq_silence_creates_a_silence(live_server: LiveServer, tmp_path: Path) -> None:
    proc = run_cli(
        "silence",
        "--tag",
        "nightly",
        "--for",
        "2h",
        "--comment",
        "warehouse upgrade",
        cwd=tmp_path,
        TELEMHQ_BASE_URL=live_server.base_url,
        TELEMHQ_API_KEY=live_server.api_key,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("silence ")
    items = live_server.api("GET", "/silences").json()["items"]
    mine = [s for s in items if s["comment"] == "warehouse upgrade"]
    assert mine[0]["selector"] == {"tags": ["nightly"]}
    assert mine[0]["active"] is True
    refused = run_cli("silence", "--for", "2h", cwd=tmp_path, TELEMHQ_BASE_URL=live_server.base_url)
    assert refused.returncode == 2
    assert "API key" in refused.stderr


def test_a_notification_survives_a_crash_and_is_sent_once(
    receiver: Receiver, tmp_path: Path
) -> None:
    with LiveServer(f"sqlite:///{tmp_path}/crash.db") as server:
        created = server.api("POST", "/channels", json={"url": receiver.url, "delay": "2s"})
        assert created.status_code == 201
        tracker = server.create_tracker(name="crashy")
        server.client.post(f"/ping/{tracker['token']}/fail").raise_for_status()
        server.kill()  # the flip is committed; its message (due in 2 s) not yet sent
        assert receiver.messages == []
        server.start()
        wait_until(lambda: receiver.messages, "the message after the restart")
        time.sleep(3)  # nothing more comes
        assert receiver.titles() == ["crashy is failing"]


def test_two_server_processes_send_each_notification_once(receiver: Receiver) -> None:
    with LiveServer(workers=2) as server:
        server.api("POST", "/channels", json={"url": receiver.url}).raise_for_status()
        names = [f"job {i}" for i in range(6)]
        for name in names:
            token = server.create_tracker(name=name)["token"]
            server.client.post(f"/ping/{token}/fail").raise_for_status()
        wait_until(lambda: len(receiver.messages) >= len(names), "every message")
        time.sleep(3)
        assert sorted(receiver.titles()) == sorted(f"{n} is failing" for n in names)
