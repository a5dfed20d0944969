"""Webhooks end to end: the API, a real server delivering to a real receiver, restarts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from telemhq_server.webhooks import DEFAULT_EVENTS, verify_signature

from tests.kit import free_port, wait_until
from tests.live_server import LiveServer
from tests.server.test_webhooks import Receiver


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer() as live:
        yield live


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_it_manages_webhooks_through_the_api(server: LiveServer) -> None:
    created = server.api("POST", "/webhooks", json={"url": "https://hooks.example/x"})
    assert created.status_code == 201
    hook = created.json()
    assert hook["events"] == list(DEFAULT_EVENTS)
    assert hook["secret"].startswith("whsec_")  # shown once, at creation
    listed = server.api("GET", "/webhooks").json()["items"]
    assert [h["id"] for h in listed if h["id"] == hook["id"]] == [hook["id"]]
    assert all("secret" not in h for h in listed)
    patched = server.api(
        "PATCH",
        f"/webhooks/{hook['id']}",
        json={"events": ["tracker.down", "tracker.late"], "enabled": False},
    ).json()
    assert patched["events"] == ["tracker.down", "tracker.late"]
    assert patched["enabled"] is False
    for body, field in [
        ({"url": "ftp://x"}, "url"),
        ({"url": "https://x", "events": ["tracker.exploded"]}, "events"),
        ({"url": "https://x", "secret": "short"}, "secret"),
        ({"url": "https://x", "colour": "red"}, "colour"),
    ]:
        answer = server.api("POST", "/webhooks", json=body)
        assert answer.status_code == 422, body
        assert answer.json()["field"] == field
    reader = server.api("POST", "/keys", json={"scope": "read"}).json()["key"]
    as_reader = {"Authorization": f"Bearer {reader}"}
    assert server.api("GET", "/webhooks", headers=as_reader).status_code == 200
    denied = server.api("POST", "/webhooks", json={"url": "https://x"}, headers=as_reader)
    assert denied.status_code == 403
    assert server.client.get("/api/v1/webhooks").status_code == 401
    assert server.api("DELETE", f"/webhooks/{hook['id']}").status_code == 204
    assert server.api("GET", f"/webhooks/{hook['id']}").status_code == 404


def test_a_failing_run_is_delivered_signed_and_logged(
    server: LiveServer, receiver: Receiver
) -> None:
    hook = server.api("POST", "/webhooks", json={"url": receiver.url}).json()
    tracker = server.create_tracker(name="loader", assertions=["records_processed > 0"])
    assert server.ping(tracker, {"records_processed": 5}).json()["state"] == "up"
    assert server.ping(tracker, {"records_processed": 0}).json()["state"] == "failing"
    wait_until(lambda: receiver.requests, "the webhook")
    [(headers, body)] = receiver.requests
    assert verify_signature(hook["secret"], body, headers["X-TelemHQ-Signature"])
    doc = json.loads(body)
    assert doc["event"] == "tracker.failing"
    assert doc["tracker"]["id"] == tracker["id"]
    assert doc["run"]["payload"] == {"records_processed": 0}
    assert [a["expression"] for a in doc["failed_assertions"]] == ["records_processed > 0"]
    assert doc["dashboard_url"].endswith(f"/dashboard/trackers/{tracker['id']}")

    def delivered() -> list[Any]:
        items = server.api("GET", f"/webhooks/{hook['id']}/deliveries").json()["items"]
        return [d for d in items if d["status"] == "delivered"]

    [delivery] = wait_until(delivered, "the delivery log")
    assert delivery["event"] == "tracker.failing"
    assert [a["status_code"] for a in delivery["attempt_log"]] == [200]
    # Recovery is announced too.
    server.ping(tracker, {"records_processed": 1})
    wait_until(lambda: len(receiver.requests) == 2, "the recovery webhook")
    assert json.loads(receiver.requests[1][1])["event"] == "tracker.recovered"
    server.api("DELETE", f"/webhooks/{hook['id']}")


def test_a_stuck_webhook_receiver_does_not_slow_ingest(
    server: LiveServer, receiver: Receiver
) -> None:
    receiver.release.clear()  # the receiver accepts the request and then hangs
    hook = server.api("POST", "/webhooks", json={"url": receiver.url}).json()
    tracker = server.create_tracker(name="busy")
    server.ping(tracker, suffix="/fail")
    wait_until(lambda: receiver.requests, "the webhook request to reach the stuck receiver")
    # While the delivery hangs, pings are answered as usual.
    answers = [server.ping(tracker, {"records_processed": i}) for i in range(20)]
    assert not receiver.release.is_set()  # still hanging while all of these were answered
    assert [a.status_code for a in answers] == [200] * 20
    assert len(server.runs(tracker["id"])) == 21
    receiver.release.set()
    server.api("DELETE", f"/webhooks/{hook['id']}")


def test_an_alert_queued_before_a_restart_is_delivered_after_it() -> None:
    port = free_port()  # nobody listens here yet: the first attempt fails
    first = LiveServer()
    first.start()
    try:
        hook = first.api("POST", "/webhooks", json={"url": f"http://127.0.0.1:{port}/hook"}).json()
        tracker = first.create_tracker(name="survivor")
        first.ping(tracker, suffix="/fail")

        def failed_once() -> bool:
            items = first.api("GET", f"/webhooks/{hook['id']}/deliveries").json()["items"]
            return bool(items) and items[0]["attempts"] >= 1

        wait_until(failed_once, "a first, failed attempt")
        first.stop()  # the server goes away with the alert still pending
        receiver = Receiver(port=port)
        try:
            with LiveServer(database_url=first.database_url) as second:
                # The retry is due ~10 s after the failed attempt (first backoff step).
                wait_until(lambda: receiver.requests, "the retried webhook", timeout=60)
                items = second.api("GET", f"/webhooks/{hook['id']}/deliveries").json()["items"]
                wait_until(
                    lambda: (
                        second.api("GET", f"/webhooks/{hook['id']}/deliveries").json()["items"][0][
                            "status"
                        ]
                        == "delivered"
                    ),
                    "the delivery to be recorded",
                )
                items = second.api("GET", f"/webhooks/{hook['id']}/deliveries").json()["items"]
            [(headers, body)] = receiver.requests
            assert verify_signature(hook["secret"], body, headers["X-TelemHQ-Signature"])
            assert json.loads(body)["tracker"]["name"] == "survivor"
            log = items[0]["attempt_log"]
            assert log[0]["status_code"] is None
            assert "ConnectError" in log[0]["error"]
            assert log[-1]["status_code"] == 200
        finally:
            receiver.close()
    finally:
        first.close()
