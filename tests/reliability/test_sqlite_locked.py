"""SQLite locked by another process: the real server keeps answering reads, ``/healthz``,
``/metrics`` and errors promptly while pings wait for the lock, and every waiting ping is
stored once the lock goes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import httpx
import pytest

from tests.live_server import LiveServer

pytestmark = pytest.mark.slow

LOCK_SECONDS = 8.0
#: "promptly" on a busy 2-core machine (the lock is held far longer)
PROMPT = 2.0
WAITING_PINGS = 5

HOLDER = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("UPDATE trackers SET name = name")  # really holding the write lock
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
    print("released", flush=True)
    """
)


def test_a_lock_held_elsewhere_stalls_writes_only(tmp_path: Any) -> None:
    path = tmp_path / "telemhq.db"
    with LiveServer(f"sqlite:///{path}") as server:
        tracker = server.create_tracker(name="locked")
        assert server.ping(tracker, {"ping_id": "before"}).status_code == 200
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), str(LOCK_SECONDS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            locked_at = time.monotonic()
            answers: dict[str, int] = {}

            def ping(ping_id: str) -> None:
                with httpx.Client(timeout=60) as http:
                    url = f"{server.base_url}/ping/{tracker['token']}"
                    answers[ping_id] = http.post(url, json={"ping_id": ping_id}).status_code

            writers = [
                threading.Thread(target=ping, args=(f"waiting-{i}",)) for i in range(WAITING_PINGS)
            ]
            for writer in writers:
                writer.start()
            time.sleep(0.5)  # the pings are waiting for the lock now

            reads = {
                "/healthz": 200,
                "/metrics": 200,
                f"/api/v1/trackers/{tracker['id']}": 200,
                f"/api/v1/trackers/{tracker['id']}/runs": 200,
                "/api/v1/trackers/999999": 404,
                f"/ping/{tracker['token']}": 200,  # the instructions page
                "/ping/no-such-token": 404,
                "/badge/no-such-key.svg": 404,
            }
            for path_, expected in reads.items():
                started = time.monotonic()
                answer = server.client.get(path_, headers=server.headers)
                took = time.monotonic() - started
                assert answer.status_code == expected, (path_, answer.text)
                assert took < PROMPT, f"GET {path_} took {took:.1f}s behind the lock"
            unknown = server.client.post("/ping/no-such-token", json={})
            assert unknown.status_code == 404
            assert time.monotonic() - locked_at < LOCK_SECONDS - 1, "checked after the lock"
            assert not answers, f"a ping was answered while the lock was held: {answers}"

            for writer in writers:
                writer.join(timeout=60)
            assert holder.wait(timeout=30) == 0
        finally:
            holder.kill()
            holder.wait(timeout=10)
            if holder.stdout is not None:
                holder.stdout.close()
        assert answers == {f"waiting-{i}": 200 for i in range(WAITING_PINGS)}
        stored = {run["ping_id"] for run in server.runs(tracker["id"])}
        assert stored == {"before", *answers}
