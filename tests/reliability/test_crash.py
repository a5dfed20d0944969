"""kill -9 of the real server during a stream of pings from several clients, then a restart:
every ping answered 2xx is stored, and no ping is stored twice (clients retry an unanswered
ping with the same ``ping_id``, as the plugins' delivery does). SQLite and PostgreSQL."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import httpx
import pytest

from tests.live_server import LiveServer

pytestmark = pytest.mark.slow

CLIENTS = 4
TRACKERS = 3
CRASHES = 2
#: acknowledged pings to wait for between crashes (the stream is really flowing)
PER_ROUND = 150


class Stream:
    """``CLIENTS`` threads posting pings with unique ids, each retried until answered 2xx."""

    def __init__(self, server: LiveServer, trackers: list[dict[str, Any]]) -> None:
        self.server = server
        self.trackers = trackers
        self.sent: set[str] = set()
        self.acked: set[str] = set()
        self.refused: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)
        ]

    def __enter__(self) -> Stream:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.acked_count() < count:
            assert time.monotonic() < deadline, f"only {self.acked_count()} pings answered"
            assert not self.refused, self.refused[:3]
            time.sleep(0.05)

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.server.base_url, timeout=5) as http:
            n = 0
            while not self.stop.is_set():
                ping_id = f"c{index}-{n}"
                tracker = self.trackers[n % len(self.trackers)]
                with self.lock:
                    self.sent.add(ping_id)
                while not self.stop.is_set():
                    try:
                        answer = http.post(f"/ping/{tracker['token']}", json={"ping_id": ping_id})
                    except httpx.TransportError:
                        time.sleep(0.05)  # down or restarting: retry the same ping
                        continue
                    if answer.status_code == 200:
                        with self.lock:
                            self.acked.add(ping_id)
                        break
                    if answer.status_code != 503:
                        self.refused.append(f"{answer.status_code} {answer.text}")
                        return
                    time.sleep(0.05)
                n += 1


def test_kill_9_during_a_stream_of_pings_loses_and_duplicates_nothing(db_url: str) -> None:
    with LiveServer(db_url) as server:
        trackers = [server.create_tracker(name=f"crash {i}") for i in range(TRACKERS)]
        with Stream(server, trackers) as stream:
            for round_ in range(1, CRASHES + 1):
                stream.wait_for(round_ * PER_ROUND)
                server.kill()
                time.sleep(0.3)
                server.start()
            stream.wait_for((CRASHES + 1) * PER_ROUND)
        assert not stream.refused, stream.refused[:3]
        stored = collections.Counter(
            run["ping_id"] for tracker in trackers for run in server.runs(tracker["id"])
        )
    twice = [ping_id for ping_id, count in stored.items() if count > 1]
    assert twice == []
    lost = stream.acked - set(stored)
    assert lost == set(), f"{len(lost)} acknowledged pings were not stored"
    assert set(stored) <= stream.sent
    assert len(stream.acked) >= (CRASHES + 1) * PER_ROUND
