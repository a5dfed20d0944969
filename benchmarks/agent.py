"""The local agent's own throughput: pings it accepts from local processes, each acknowledged
once synced to disk, and how fast it delivers them to the reference server.

Run: ``.venvs/server/bin/python benchmarks/agent.py [--processes 16] [--pings 500]``

A real ``telemhq agent`` (its spool on the machine's disk: the acknowledgement waits for an
fsync) delivers to the reference server (a subprocess on loopback, SQLite on tmpfs when there
is one). Every hand-off goes through the client's own code (``AgentLink``), one ping per
request, as a task process hands its pings before it exits; the wait for the acknowledgement
is raised from the client's 50 ms to 5 s, so that what is measured is how long the agent takes,
and the share of hand-offs over 50 ms (those a client would have delivered itself) is printed.

1. One process, one hand-off at a time: the acknowledgement's latency, against a ping sent
   straight to the server in the same run (one HTTP request on a kept-alive connection: what
   a process's flush waits for without an agent, on loopback).
2. ``--processes`` processes at once, ``--pings`` hand-offs each: pings/s accepted, the
   latency under that load, against the same processes sending each ping straight to the
   server; then the agent's delivery: pings/s from the first hand-off until the server has
   stored them all, against one process's client delivering as many with its batching.

Every ping is checked to have been stored once.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from delivery_modes import LocalAgent

from telemhq_plugins.core import Client, load_settings
from telemhq_plugins.core.agent.handoff import ACK_TIMEOUT, AgentLink
from telemhq_plugins.core.agent.paths import AgentAddress
from telemhq_plugins.core.payload import Ping
from tests.live_server import LiveServer

#: seconds a hand-off may wait here (the client itself gives up after ACK_TIMEOUT)
WAIT = 5.0


def pings(url: str, run: str, count: int) -> list[tuple[str, str, bytes]]:
    """``count`` success pings of one job, as a client hands them: (ping_id, url, body)."""
    made = (Ping(status="success", run_id=f"{run}-{i}", duration=12.5) for i in range(count))
    return [(ping.ping_id, url, ping.to_json()) for ping in made]


def hand_all(socket_path: str, todo: list[tuple[str, str, bytes]]) -> list[float]:
    """Hand ``todo`` to the agent one ping per request; each acknowledgement's seconds."""
    link = AgentLink(AgentAddress(path=Path(socket_path)), timeout=WAIT)
    latencies = []
    for ping in todo:
        started = time.perf_counter()
        assert link.hand_off([ping]), "the agent did not take a ping"
        latencies.append(time.perf_counter() - started)
    link.close()
    return latencies


def post_all(todo: list[tuple[str, str, bytes]]) -> list[float]:
    """Send ``todo`` straight to the server, one request per ping; each request's seconds."""
    latencies = []
    with httpx.Client(timeout=WAIT) as http:
        for _, url, body in todo:
            started = time.perf_counter()
            response = http.post(url, content=body, headers={"Content-Type": "application/json"})
            assert response.status_code < 300, response.text
            latencies.append(time.perf_counter() - started)
    return latencies


def worker(mode: str, target: str, todo: list[tuple[str, str, bytes]], go: Any, out: Any) -> None:
    """One of the concurrent processes: say it is ready, wait for ``go``, then hand or post
    ``todo``; puts (first start, last end, latencies) on ``out`` (``time.monotonic`` is the
    machine's)."""
    out.put("ready")
    go.wait()
    started = time.monotonic()
    latencies = hand_all(target, todo) if mode == "agent" else post_all(todo)
    out.put((started, time.monotonic(), latencies))


def concurrent(
    mode: str, target: str, jobs: list[list[tuple[str, str, bytes]]]
) -> tuple[float, float, list[float]]:
    """``jobs`` (one list per process) handed (``agent``) or posted (``direct``) at once;
    (first start, last end, every latency)."""
    context = multiprocessing.get_context("spawn")
    go, out = context.Event(), context.Queue()
    procs = [context.Process(target=worker, args=(mode, target, job, go, out)) for job in jobs]
    for proc in procs:
        proc.start()
    for _ in procs:  # all imported and waiting: the clock starts for all at once
        assert out.get(timeout=600) == "ready"
    go.set()
    results = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(60)
    return (
        min(r[0] for r in results),
        max(r[1] for r in results),
        [latency for r in results for latency in r[2]],
    )


def ms(values: list[float], share: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * share))] * 1000


def line(label: str, latencies: list[float]) -> str:
    over = sum(1 for value in latencies if value > ACK_TIMEOUT) / len(latencies) * 100
    return (
        f"{label:34} p50 {ms(latencies, 0.5):6.2f} ms  p99 {ms(latencies, 0.99):7.2f} ms  "
        f"max {max(latencies) * 1000:7.1f} ms  over 50 ms {over:4.1f}%"
    )


def stored_count(server: LiveServer, slugs: list[str]) -> int:
    total = 0
    for slug in slugs:
        response = server.api("GET", f"/trackers/{slug}")
        if response.status_code == 200:
            total += len(server.runs(slug))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--pings", type=int, default=500, help="per process")
    parser.add_argument("--single", type=int, default=300, help="hand-offs of phase 1")
    args = parser.parse_args()

    scratch = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with (
        tempfile.TemporaryDirectory(dir=scratch) as folder,
        LiveServer(database_url=f"sqlite:///{folder}/telemhq.db") as server,
        LocalAgent(server.base_url) as agent,
    ):
        key = server.api("POST", "/ping-keys", json={"name": "bench"}).json()["key"]

        def url(job: str) -> str:
            return f"{server.base_url}/ping/{key}/{job}"

        # Warm-up (not counted): the trackers' creation, the first connections.
        hand_all(agent.socket, pings(url("single-agent"), "warm", 5))
        post_all(pings(url("single-direct"), "warm", 5))

        print(f"1. one process, one ping at a time ({args.single} each, alternating)")
        single: dict[str, list[float]] = {"agent": [], "direct": []}
        for block in range(10):
            todo = args.single // 10
            single["agent"] += hand_all(agent.socket, pings(url("single-agent"), f"{block}", todo))
            single["direct"] += post_all(pings(url("single-direct"), f"{block}", todo))
        print(line("to the agent (fsync'd ack)", single["agent"]))
        print(line("straight to the server (baseline)", single["direct"]))

        n, each = args.processes, args.pings
        print(f"\n2. {n} processes at once, {each} pings each, one per request")
        slugs = [f"proc-{mode}-{i:02d}" for mode in ("agent", "direct") for i in range(n)]
        for slug in slugs:  # the trackers exist before the clock starts
            post_all(pings(url(slug), "warm", 1))
        delivered_before = agent.status()["delivered"]
        jobs = [pings(url(f"proc-agent-{i:02d}"), "run", each) for i in range(n)]
        first, last, latencies = concurrent("agent", agent.socket, jobs)
        while agent.status()["delivered"] - delivered_before < n * each:
            time.sleep(0.05)
        all_delivered = time.monotonic()
        accepted_rate = n * each / (last - first)
        print(line("to the agent (fsync'd ack)", latencies))
        print(f"{'':34} {accepted_rate:8.0f} pings/s accepted")
        jobs = [pings(url(f"proc-direct-{i:02d}"), "run", each) for i in range(n)]
        d_first, d_last, d_latencies = concurrent("direct", "", jobs)
        direct_rate = n * each / (d_last - d_first)
        print(line("straight to the server (baseline)", d_latencies))
        print(f"{'':34} {direct_rate:8.0f} pings/s stored")
        print(f"accepted by the agent / sent straight: {accepted_rate / direct_rate:.2f}")

        delivery_rate = n * each / (all_delivered - first)
        print(
            f"\nthe agent's delivery: {delivery_rate:.0f} pings/s from the first hand-off to "
            f"the last delivered ({all_delivered - last:.2f} s after the last acknowledgement)"
        )
        client = Client(load_settings(env={}, config_file=os.devnull, base_url=server.base_url))
        batch = [Ping(status="success", run_id=f"run-{i}") for i in range(n * each)]
        target = url("batched")
        started = time.perf_counter()
        for ping in batch:
            client.enqueue(ping, target)
        assert client.flush(120)
        batched_rate = n * each / (time.perf_counter() - started)
        client.close(10)
        print(f"one process's client, batched (baseline): {batched_rate:.0f} pings/s")
        print(f"agent delivery / client batched: {delivery_rate / batched_rate:.2f}")

        every = [f"proc-agent-{i:02d}" for i in range(n)]
        assert stored_count(server, every) == n * (each + 1), "a ping of the agent was lost"
        status = agent.status()
        assert status["refused"] == 0, status
        print(f"\nthe agent: {agent.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
