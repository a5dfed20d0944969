"""Alerts end to end: real server processes, real Apprise, a real receiver; ``telemhq
silence`` in a real process; a crash between a state change and its notification."""

from __future__ import annotations

import datetime as dt
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


def test_a_message_links_the_run_and_its_reminder_and_recovery_share_its_incident(
    receiver: Receiver,
) -> None:
    """A real server process told where Airflow's UI is: the failed task's message links the
    run there (built from the ids the ping carries); the reminder and the recovery carry the
    first message's incident id, and the recovery resolves it."""
    env = {"TELEMHQ_ALERT_GROUP_WINDOW": "1", "TELEMHQ_AIRFLOW_UI_URL": "http://airflow.example"}
    with LiveServer(env=env) as server:
        channel = {"url": receiver.url, "repeat_every": "1s", "max_repeats": 1}
        server.api("POST", "/channels", json=channel).raise_for_status()
        token = server.create_tracker(name="etl.load")["token"]
        failed = {
            "orchestrator": "airflow",
            "airflow": {"dag_id": "etl", "run_id": "manual__1", "task_id": "load"},
        }
        server.client.post(f"/ping/{token}/fail", json=failed).raise_for_status()
        wait_until(lambda: len(receiver.messages) >= 2, "the message and its reminder")
        server.client.post(f"/ping/{token}", json={"orchestrator": "airflow"}).raise_for_status()
        wait_until(lambda: len(receiver.messages) >= 3, "the recovery")
        assert receiver.titles() == [
            "etl.load is failing",
            "Reminder 1: etl.load is failing",
            "etl.load has recovered",
        ]
        link = "Run in Airflow: http://airflow.example/dags/etl/runs/manual__1/tasks/load"
        assert link in receiver.messages[0]["message"]
        assert [m["type"] for m in receiver.messages] == ["failure", "failure", "success"]
        assert len({h["X-TelemHQ-Incident"] for h in receiver.headers}) == 1


def _when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_resumed_tracker_alerts_a_period_and_a_grace_after_its_resume(
    receiver: Receiver,
) -> None:
    """Pinged, paused past its next expected ping, resumed: nothing at the resume; late one
    period after it, down a grace later (the real detector, every 5 s). A late message waits
    for others late with it for the group window: one second here."""
    with LiveServer(env={"TELEMHQ_ALERT_GROUP_WINDOW": "1"}) as server:
        channel = {"url": receiver.url, "events": ["late", "down", "recovered"]}
        server.api("POST", "/channels", json=channel).raise_for_status()
        schedule = {"kind": "period", "period_seconds": 8, "grace_seconds": 4}
        made = server.create_tracker(name="resumed", schedule=schedule)
        server.client.post(f"/ping/{made['token']}").raise_for_status()
        server.api("POST", f"/trackers/{made['id']}/pause").raise_for_status()
        time.sleep(10)  # past the ping that was expected 8 s after the last
        resumed = server.api("POST", f"/trackers/{made['id']}/resume").json()
        at = _when(resumed["state_changed_at"])
        time.sleep(6)  # a detector pass or more: it does not flip a tracker just resumed
        assert server.tracker(made["id"])["state"] == "new"
        assert receiver.messages == []
        wait_until(lambda: server.tracker(made["id"])["state"] == "down", "down", timeout=60)
        flips = server.api("GET", f"/trackers/{made['id']}/flips").json()["items"]
        changes = {f["new_state"]: _when(f["created_at"]) for f in flips}
        assert changes["late"] >= at + dt.timedelta(seconds=8)
        assert changes["down"] >= at + dt.timedelta(seconds=12)
        wait_until(lambda: len(receiver.messages) >= 2, "the late and down messages")
        assert receiver.titles() == ["resumed is late", "resumed is down"]
