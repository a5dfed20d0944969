"""The local agent under kill -9: every ping it acknowledged reaches the server exactly once
after a restart, and the acknowledgement comes only after the spool's write was synced to
disk (seen with ``strace``)."""

from __future__ import annotations

import collections
import os
import re
import signal
import threading
from pathlib import Path

import pytest

from tests.kit import (
    AgentProcess,
    hand,
    new_ping_key,
    ping_triple,
    require_tool,
    wait_for_runs,
    wait_until,
)
from tests.live_server import LiveServer

pytestmark = pytest.mark.slow

SENDERS = 4
BATCH = 5
#: acknowledged pings to wait for before the kill (the stream is really flowing)
BEFORE_KILL = 150


def test_every_acknowledged_ping_is_delivered_once_after_kill_9(
    live_server: LiveServer, tmp_path: Path
) -> None:
    key = new_ping_key(live_server)
    url = f"{live_server.base_url}/ping/{key}/agent-kill"
    agent = AgentProcess(live_server.base_url, tmp_path).start()
    acked: list[str] = []
    handed: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(number: int) -> None:
        n = 0
        while not stop.is_set():
            run_ids = [f"s{number}-{n + i}" for i in range(BATCH)]
            n += BATCH
            with lock:
                handed.extend(run_ids)
            # A refused or unanswered batch is the client's to deliver: not counted here.
            if hand(agent.socket, [ping_triple(url, run_id) for run_id in run_ids], timeout=5):
                with lock:
                    acked.extend(run_ids)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(SENDERS)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(acked) >= BEFORE_KILL, "the stream to flow")
    agent.kill()  # mid-stream: some pings delivered, some in flight, some only on disk
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    with AgentProcess(live_server.base_url, tmp_path) as restarted:
        runs = wait_for_runs(live_server, "agent-kill", len(acked), timeout=60)
        wait_until(lambda: restarted.status()["spool_pings"] == 0, "the spool to empty")
        runs = wait_for_runs(live_server, "agent-kill", len(acked))
    stored = collections.Counter(r["run_id"] for r in runs)
    assert set(acked) <= set(stored), "an acknowledged ping was lost"
    assert max(stored.values()) == 1, "a ping was stored twice"
    # Pings the agent wrote but could not acknowledge before it died may arrive too.
    assert set(stored) <= set(handed)


def test_the_acknowledgement_follows_the_sync_to_disk(
    live_server: LiveServer, tmp_path: Path
) -> None:
    strace = require_tool("strace", "to watch the agent's system calls")
    key = new_ping_key(live_server)
    trace = tmp_path / "agent.trace"
    agent = AgentProcess(live_server.base_url, tmp_path)
    command = agent.command()
    traced = [strace, "-f", "-s", "200", "-e", "trace=fsync,fdatasync,sendto,write,recvfrom",
              "-o", str(trace), *command]  # fmt: skip
    agent.command = lambda: traced  # type: ignore[method-assign]
    agent.start()
    url = f"{live_server.base_url}/ping/{key}/synced-ack"
    assert hand(agent.socket, [ping_triple(url, "synced-1")])
    wait_for_runs(live_server, "synced-ack", 1)
    os.kill(agent.status()["pid"], signal.SIGTERM)  # the agent itself, not strace
    assert agent.proc is not None
    agent.proc.wait(timeout=60)
    lines = trace.read_text().splitlines()
    request = next(i for i, line in enumerate(lines) if '\\"op\\":\\"pings\\"' in line)
    reply = next(i for i, line in enumerate(lines) if '\\"acked\\":1' in line)
    thread = lines[reply].split()[0]  # strace -f: each line starts with the thread's id
    synced = [
        line
        for line in lines[request:reply]
        if line.split()[0] == thread and re.search(r"\b(fsync|fdatasync)\(", line)
    ]
    assert synced, "\n".join(lines[request : reply + 1])
