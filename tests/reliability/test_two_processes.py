"""Two server processes on one PostgreSQL database under concurrent load: no ping lost or
stored twice, one flip per state change, one signed webhook per alert (not one per process)."""

from __future__ import annotations

import collections
import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.live_server import LiveServer
from tests.reliability.hooks import SECRET, HookReceiver

pytestmark = [pytest.mark.slow, pytest.mark.services]

PHASES = ["success", "failure", "success", "failure", "success"]
CLIENTS = 6
PINGS_PER_CLIENT = 15


def _post_until_acked(base_urls: list[str], token: str, bodies: list[dict[str, str]]) -> int:
    """Post each body, alternating servers, retrying 503s with the same ping_id."""
    servers = itertools.cycle(base_urls)
    with httpx.Client(timeout=10) as http:
        for body in bodies:
            for _ in range(50):
                answer = http.post(f"{next(servers)}/ping/{token}", json=body)
                if answer.status_code == 200:
                    break
                assert answer.status_code == 503, answer.text
                time.sleep(0.1)
            else:
                raise AssertionError(f"ping {body['ping_id']} never acknowledged")
    return len(bodies)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_servers_on_one_postgresql_lose_nothing_and_alert_once(db_url: str) -> None:
    receiver = HookReceiver("ok")
    try:
        with LiveServer(db_url) as first, LiveServer(db_url) as second:
            hook = first.api("POST", "/webhooks", json={"url": receiver.url, "secret": SECRET})
            assert hook.status_code == 201, hook.text
            tracker = first.create_tracker(name="shared", failure_threshold=1)
            urls = [first.base_url, second.base_url]
            acked = 0
            with ThreadPoolExecutor(CLIENTS) as pool:
                for phase, status in enumerate(PHASES):
                    batches = [
                        [
                            {"ping_id": f"p{phase}-c{c}-{i}", "status": status}
                            for i in range(PINGS_PER_CLIENT)
                        ]
                        for c in range(CLIENTS)
                    ]
                    jobs = [
                        pool.submit(
                            _post_until_acked, urls[c % 2 :] + urls[: c % 2], tracker["token"], b
                        )
                        for c, b in enumerate(batches)
                    ]
                    acked += sum(job.result(timeout=120) for job in jobs)

            runs = first.runs(tracker["id"])
            stored = collections.Counter(run["ping_id"] for run in runs)
            assert len(stored) == acked == len(PHASES) * CLIENTS * PINGS_PER_CLIENT
            assert max(stored.values()) == 1

            flips = [(f["old_state"], f["new_state"]) for f in reversed(first.flips(tracker["id"]))]
            assert flips == [
                ("new", "up"),
                ("up", "failing"),
                ("failing", "up"),
                ("up", "failing"),
                ("failing", "up"),
            ]
            expected = ["tracker.failing", "tracker.recovered"] * 2
            deadline = time.monotonic() + 30
            while len(receiver.events()) < len(expected) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2.5)  # a second process's duplicate would arrive by now
            by_alert = sorted(receiver.deliveries, key=lambda d: int(d.delivery_id))
            assert [d.event for d in by_alert] == expected
            assert all(d.signed for d in receiver.deliveries)
            assert len({d.delivery_id for d in receiver.deliveries}) == len(expected)
    finally:
        receiver.close()
