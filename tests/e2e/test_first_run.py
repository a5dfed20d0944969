"""A job whose first run never comes: ``sync()`` declares it to the real server with a
period of a few seconds, nothing ever pings, and the server's own detector (its background
pass, on the real clock) takes the tracker down and sends the webhook."""

from __future__ import annotations

import json
import time

import pytest

from telemhq_plugins.core import JobSchedule, sync
from tests.kit import client_for
from tests.live_server import LiveServer
from tests.server.test_webhooks import Receiver

#: The server's detector passes every few seconds; this leaves room for a loaded machine.
WAIT = 60.0


@pytest.mark.slow
def test_a_synced_job_that_never_runs_goes_down_without_any_ping(
    live_server: LiveServer,
) -> None:
    receiver = Receiver()
    client = client_for(live_server)
    try:
        live_server.api("POST", "/webhooks", json={"url": receiver.url})
        done = sync(
            [JobSchedule("never.runs", 2, grace_seconds=1)],
            client=client,
            api_key=live_server.api_key,
            background=False,
            cached=False,
        )
        (result,) = done.results
        assert result.outcome == "created"
        tracker = live_server.tracker(result.tracker_id or "")
        assert tracker["state"] == "new"
        assert tracker["schedule"] == {"kind": "period", "period_seconds": 2, "grace_seconds": 1}
        assert tracker["next_expected_at"] is not None  # its first ping is due already
        deadline = time.monotonic() + WAIT
        while live_server.tracker(tracker["id"])["state"] != "down":
            assert time.monotonic() < deadline, live_server.tracker(tracker["id"])
            time.sleep(0.2)
        while not receiver.requests:
            assert time.monotonic() < deadline, "no webhook arrived"
            time.sleep(0.1)
    finally:
        client.close()
        receiver.close()
    stored = live_server.tracker(tracker["id"])
    assert stored["last_ping_at"] is None
    assert live_server.runs(tracker["id"]) == []
    changes = [(f["old_state"], f["new_state"]) for f in live_server.flips(tracker["id"])]
    # One pass may find it past the grace already: straight to down, else late then down.
    assert changes in ([("new", "down")], [("new", "late"), ("late", "down")]), changes
    expected_at = stored["next_expected_at"]
    assert live_server.flips(tracker["id"])[0]["reason"].startswith(
        f"expected a first ping at {expected_at}"
    )
    bodies = [json.loads(body) for _, body in receiver.requests]
    assert [b["event"] for b in bodies] == ["tracker.down"]
    assert bodies[0]["tracker"]["id"] == tracker["id"]
    assert bodies[0]["reason"].startswith("expected a first ping")
