"""Webhook receivers that hang, drip one byte every 2 s, redirect or answer 500 delay nobody
else's alerts: a healthy receiver gets each alert within a few seconds of the ping that caused
it, on the real server (SQLite and PostgreSQL), and the hostile ones' alerts are retried."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.live_server import LiveServer
from tests.reliability.hooks import SECRET, HookReceiver

pytestmark = pytest.mark.slow

#: A delivery is polled for every second; generous for a busy 2-core machine.
WITHIN = 6.0
HOSTILE = ("hang", "drip", "redirect", "error")


@pytest.fixture
def receivers() -> Iterator[dict[str, HookReceiver]]:
    made = {mode: HookReceiver(mode) for mode in ("ok", *HOSTILE)}
    yield made
    for receiver in made.values():
        receiver.close()


def test_hostile_receivers_do_not_delay_a_healthy_ones_alerts(
    db_url: str, receivers: dict[str, HookReceiver]
) -> None:
    with LiveServer(db_url) as server:
        # Hostile receivers first, several hooks each: their deliveries start first.
        for mode in HOSTILE:
            for _ in range(3):
                made = server.api("POST", "/webhooks", json={"url": receivers[mode].url})
                assert made.status_code == 201, made.text
        made = server.api("POST", "/webhooks", json={"url": receivers["ok"].url, "secret": SECRET})
        assert made.status_code == 201, made.text
        tracker = server.create_tracker(name="alerts", failure_threshold=1)
        healthy = receivers["ok"]
        delays = []
        expected: list[str] = []
        for status, event in [
            ("success", None),
            ("failure", "tracker.failing"),
            ("success", "tracker.recovered"),
            ("failure", "tracker.failing"),
            ("success", "tracker.recovered"),
        ]:
            sent = time.monotonic()
            assert server.ping(tracker, {"status": status}).status_code == 200
            if event is None:
                continue
            expected.append(event)
            while len(healthy.deliveries) < len(expected):
                assert time.monotonic() - sent < WITHIN, (
                    f"{event} not delivered within {WITHIN}s (got {healthy.events()})"
                )
                time.sleep(0.05)
            delays.append(healthy.deliveries[-1].at - sent)
        assert healthy.events() == expected
        assert all(d.signed for d in healthy.deliveries)
        # The hostile ones were tried (and will be retried), each within its deadline.
        assert all(receivers[mode].hits >= 1 for mode in HOSTILE)
        # Each hostile attempt ends by its deadline (5 s) and is logged, to be retried.
        hooks = [
            h for h in server.api("GET", "/webhooks").json()["items"] if h["url"] != healthy.url
        ]
        deadline = time.monotonic() + 30
        for hook in hooks:
            while True:
                path = f"/webhooks/{hook['id']}/deliveries"
                tried = [d for d in server.api("GET", path).json()["items"] if d["attempt_log"]]
                if tried or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert tried, f"no attempt logged for {hook['url']}"
            for delivery in tried:
                assert delivery["status"] == "pending"  # to be retried, not given up
                assert all(a["duration_ms"] < 10_000 for a in delivery["attempt_log"])
    print(f"healthy receiver delays: {[round(d, 2) for d in delays]}")
