"""Channels and silences through the API, with real Apprise against real receivers: a loopback
SMTP server (aiosmtpd) for ``mailto://``, a loopback HTTP receiver for ``json://``; for services
on the internet (Slack, PagerDuty) the request Apprise would send is captured at the HTTP layer
(``requests``' transport adapter) and checked.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from aiosmtpd.controller import Controller
from telemhq_server.app import create_app
from telemhq_server.config import Settings

from tests.kit import wait_until
from tests.server.helpers import ADMIN_KEY, AppClient, flips_of, make_tracker
from tests.server.test_alerts import Receiver

SLACK = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
SLACK_SECRET = "TIiajkdnlazkcOXrIdevi7FQ"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class Mailbox:
    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((envelope.mail_from, envelope.rcpt_tos, envelope.content.decode()))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[requests.PreparedRequest]:
    """Requests Apprise sends to the internet, answered 200 without leaving the machine."""
    sent: list[requests.PreparedRequest] = []

    def send(self: Any, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        sent.append(request)
        response = requests.Response()
        # What each service answers a good request with (Slack's webhooks: "ok").
        slack = "hooks.slack.com" in (request.url or "")
        response.status_code = 200 if slack else 202
        # (Opsgenie: the requestId of the alert it will create)
        response._content = b"ok" if slack else b'{"status": "success", "requestId": "r-1"}'
        response.request = request
        return response

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    return sent


def test_it_manages_channels_and_never_returns_the_secret(
    client: AppClient, captured: list[requests.PreparedRequest], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {
        "name": "data-team",
        "url": SLACK,
        "events": ["failing", "down", "recovered"],
        "after_failures": 1,
        "repeat_every": "1h",
        "max_repeats": 3,
        "delay": "0s",
        "selector": {"tags": ["team:data"], "orchestrator": "airflow", "name": "etl_*"},
    }
    created = client.post("/api/v1/channels", json=body)
    assert created.status_code == 201, created.text
    channel = created.json()
    assert channel["repeat_every"] == "1h"
    assert channel["max_repeats"] == 3
    assert channel["selector"] == body["selector"]
    assert channel["url_hint"].startswith("slack://T...2/")
    one = f"/api/v1/channels/{channel['id']}"
    patched = client.patch(one, json={"delay": "30m", "enabled": False}).json()
    assert (patched["delay"], patched["enabled"]) == ("30m", False)
    tested = client.post(one + "/test").json()
    assert tested["ok"] is True
    [request] = captured
    assert request.url == f"https://hooks.slack.com/services/{SLACK[8:]}"
    assert "TelemHQ test message" in json.dumps(json.loads(request.body or b"{}"))
    for answer in (created, client.get(one), client.get("/api/v1/channels")):
        assert SLACK_SECRET not in answer.text
    assert SLACK_SECRET not in caplog.text
    for bad, field in [
        ({"url": "nope://x"}, "url"),
        ({"url": SLACK, "events": ["exploded"]}, "events"),
        ({"url": SLACK, "repeat_every": "0s"}, "repeat_every"),
        ({"url": SLACK, "selector": {"team": "x"}}, "selector.team"),
        ({"url": SLACK, "after_failures": 0}, "after_failures"),
    ]:
        answer = client.post("/api/v1/channels", json=bad)
        assert answer.status_code == 422, bad
        assert field in answer.text
        assert SLACK_SECRET not in answer.text
    assert client.delete(one).status_code == 204
    assert client.get(one).status_code == 404


def test_pagerduty_gets_the_event_apprise_builds(
    client: AppClient, captured: list[requests.PreparedRequest]
) -> None:
    channel = client.post(
        "/api/v1/channels", json={"url": "pagerduty://integrationkey@apikey"}
    ).json()
    assert client.post(f"/api/v1/channels/{channel['id']}/test").json()["ok"] is True
    [request] = captured
    assert request.url == "https://events.pagerduty.com/v2/enqueue"
    event = json.loads(request.body or b"{}")
    assert event["routing_key"] == "integrationkey"
    assert event["event_action"] == "trigger"
    assert event["payload"]["summary"]


def test_a_failing_ping_reaches_email_and_json_channels(
    client: AppClient, receiver: Receiver, smtp: tuple[Mailbox, int]
) -> None:
    box, port = smtp
    mail = f"mailto://127.0.0.1:{port}?from=telemhq@example.com&to=ops@example.com"
    client.post("/api/v1/channels", json={"name": "mail", "url": mail}).raise_for_status()
    client.post("/api/v1/channels", json={"name": "hook", "url": receiver.url}).raise_for_status()
    tracker = make_tracker(client, name="etl_daily", assertions=["records_processed > 0"])
    answer = client.post(f"/ping/{tracker['token']}", json={"records_processed": 0})
    assert answer.json()["state"] == "failing"
    wait_until(lambda: receiver.messages, "the json:// message")
    wait_until(lambda: box.mails, "the e-mail")
    assert receiver.messages[0]["title"] == "etl_daily is failing"
    assert "records_processed > 0: records_processed was 0" in receiver.messages[0]["message"]
    sender, recipients, content = box.mails[0]
    assert (sender, recipients) == ("telemhq@example.com", ["ops@example.com"])
    assert "Subject: etl_daily is failing" in content
    client.post(f"/ping/{tracker['token']}", json={"records_processed": 5}).raise_for_status()
    wait_until(lambda: len(receiver.messages) == 2, "the recovery")
    assert receiver.messages[1]["title"] == "etl_daily has recovered"
    channels = client.get("/api/v1/channels").json()["items"]
    hook = next(c for c in channels if c["name"] == "hook")
    history = client.get(f"/api/v1/channels/{hook['id']}/deliveries").json()["items"]
    assert [(d["event"], d["status"]) for d in history] == [
        ("recovered", "delivered"),
        ("failing", "delivered"),
    ]
    assert history[1]["attempt_log"][0]["ok"] is True
    assert history[0]["incident"] == history[1]["incident"]  # the recovery ends that incident
    assert receiver.headers[0]["X-TelemHQ-Incident"] == history[1]["incident"]
    metrics = client.get("/metrics").text
    assert f'telemhq_alerts_sent_total{{channel="{hook["id"]}"}} 2' in metrics


def test_a_silence_holds_notifications_and_ending_it_sends_one(
    client: AppClient, receiver: Receiver
) -> None:
    client.post("/api/v1/channels", json={"url": receiver.url}).raise_for_status()
    tracker = make_tracker(client, name="nightly load", tags=["nightly"])
    created = client.post(
        "/api/v1/silences",
        json={"selector": {"tags": ["nightly"]}, "duration": "2h", "comment": "upgrade"},
    )
    assert created.status_code == 201, created.text
    silence = created.json()
    assert silence["active"] is True
    assert silence["comment"] == "upgrade"
    client.post(f"/ping/{tracker['token']}/fail").raise_for_status()
    time.sleep(1.5)  # the sender looks at least once a second: it holds the message
    assert receiver.messages == []
    assert [f["new_state"] for f in flips_of(client, tracker["id"])] == ["failing"]  # recorded
    assert client.delete(f"/api/v1/silences/{silence['id']}").status_code == 204
    wait_until(lambda: receiver.messages, "the held message")
    assert receiver.titles() == ["nightly load is failing"]
    assert client.get(f"/api/v1/silences/{silence['id']}").json()["active"] is False
    for bad, field in [
        ({"selector": {}}, "ends_at"),
        ({"cron": "not cron", "duration": "1h"}, "cron"),
        ({"cron": "0 2 * * 6", "duration": "1h", "timezone": "Mars/Base"}, "timezone"),
        ({"starts_at": "2026-01-01T00:00:00", "duration": "1h"}, "starts_at"),
    ]:
        answer = client.post("/api/v1/silences", json=bad)
        assert answer.status_code == 422, bad
        assert field in answer.text


AIRFLOW_RUN = "http://airflow.example/dags/etl/runs/manual__1/tasks/load"


@pytest.fixture
def quick(settings: Settings) -> Iterator[AppClient]:
    """The server with a one-second group window: a lone task's failure waits that long."""
    app = create_app(settings.with_overrides(alert_group_window=1.0))
    with AppClient(app, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        yield client


def failed_task_ping(client: AppClient, token: str) -> None:
    """What the Airflow adapter sends for a failed task: its block carries the run's link."""
    answer = client.post(
        f"/ping/{token}/fail",
        json={
            "orchestrator": "airflow",
            "airflow": {
                "dag_id": "etl",
                "run_id": "manual__1",
                "task_id": "load",
                "ui_url": AIRFLOW_RUN,
            },
            "error": {"type": "KeyError", "message": "'customer_id'"},
        },
    )
    assert answer.json()["state"] == "failing"


def test_messages_link_the_run_in_the_orchestrators_ui_and_ntfy_gets_them(
    quick: AppClient, receiver: Receiver
) -> None:
    """A local HTTP receiver stands for an ntfy server (Apprise's ntfy plugin posts JSON to a
    private host) and for a json:// endpoint."""
    client = quick
    port = receiver.url.split(":")[2].split("/")[0]
    ntfy = f"ntfy://127.0.0.1:{port}/data-alerts"
    client.post("/api/v1/channels", json={"name": "ntfy", "url": ntfy}).raise_for_status()
    tracker = make_tracker(client, name="etl.load")
    failed_task_ping(client, tracker["token"])
    wait_until(lambda: receiver.messages, "the ntfy message")
    [message], [headers] = receiver.messages, receiver.headers
    assert message["topic"] == "data-alerts"
    assert message["title"] == "etl.load is failing"
    assert f"Run in Airflow: {AIRFLOW_RUN}" in message["message"]
    assert "Error: KeyError: 'customer_id'" in message["message"]
    assert headers["X-Click"] == AIRFLOW_RUN  # tapping the notification opens the run
    assert "failure" in headers["X-Icon"]  # Apprise's icon of a failure


def test_opsgenie_and_pagerduty_get_one_incident_and_the_runs_link(
    quick: AppClient, captured: list[requests.PreparedRequest]
) -> None:
    """Opsgenie de-duplicates on the alias: the first message and its reminder carry one.
    Apprise's PagerDuty plugin sends no dedup_key (every event is its own incident), but the
    run's link goes in ``links``."""
    client = quick
    for url in ("opsgenie://genie-api-key", "pagerduty://integrationkey@apikey"):
        body = {"url": url, "repeat_every": "1s", "max_repeats": 1}
        client.post("/api/v1/channels", json=body).raise_for_status()
    tracker = make_tracker(client, name="etl.load")
    failed_task_ping(client, tracker["token"])
    wait_until(lambda: len(captured) >= 4, "two messages and a reminder each")
    genie = [json.loads(r.body or b"{}") for r in captured if "opsgenie" in (r.url or "")]
    duty = [json.loads(r.body or b"{}") for r in captured if "pagerduty" in (r.url or "")]
    assert len(genie) == len(duty) == 2
    assert genie[0]["alias"] == genie[1]["alias"]
    assert genie[0]["alias"].startswith(f"telemhq-{tracker['id']}-")
    assert genie[1]["message"] == "Reminder 1: etl.load is failing"
    assert genie[0]["details"]["type"] == "failure"
    assert all(e["event_action"] == "trigger" and "dedup_key" not in e for e in duty)
    assert duty[0]["payload"]["severity"] == "critical"
    assert duty[0]["links"] == [{"href": AIRFLOW_RUN}]
    assert f"Run in Airflow: {AIRFLOW_RUN}" in duty[0]["payload"]["summary"]
