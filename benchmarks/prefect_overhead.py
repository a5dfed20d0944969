"""Prefect benchmark: what instrument-all (flows and tasks) costs a flow of 200 tasks.

Run: ``.venvs/prefect/bin/python benchmarks/prefect_overhead.py [--tasks N] [--rounds R]``
from the repository root. It starts a real Prefect API server (``prefect server start`` on
SQLite in a temporary ``PREFECT_HOME``, about half a minute) and the reference server, then
runs one flow of N trivial tasks (default 200) repeatedly in this process, in the order off,
on, on, off, off, on, ... (``R`` rounds of one pair each), with ``instrument(tasks=True)``
switched on and off between runs. Every instrumented run's pings (one per flow run and one per
task run) go over HTTP to the reference server and are checked to have been stored.

Prints, per mode, the wall time and this process's CPU time (both threads: the flow's and
TelemHQ's delivery) of each run, their medians, the ratios instrumented / not and the time
added per task run. Most of a flow's wall time is spent waiting for the Prefect API server (its
own process), so on a shared, busy machine the wall times of one mode spread widely; the CPU
time of this process, which holds all of TelemHQ's work, is the steadier figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.live_server import LiveServer, free_port

HOME = tempfile.mkdtemp(prefix="telemhq-prefect-bench-")
PORT = free_port()
os.environ.update(
    PREFECT_HOME=HOME,
    PREFECT_API_URL=f"http://127.0.0.1:{PORT}/api",
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    PREFECT_SERVER_UI_ENABLED="false",
    PREFECT_LOGGING_TO_API_ENABLED="false",
    PREFECT_LOGGING_LEVEL="WARNING",
    PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{HOME}/prefect.db",
)


def start_prefect() -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("prefect")),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(PORT),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{PORT}/api/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise SystemExit("the Prefect API server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=6, help="pairs of runs (off/on)")
    args = parser.parse_args()

    prefect_proc = start_prefect()
    try:
        # Every run is counted: the server's retention (1,000 runs per tracker) raised.
        with LiveServer(env={"TELEMHQ_RETENTION_RUNS": "1000000"}) as server:
            return bench(server, args.tasks, args.rounds)
    finally:
        os.killpg(prefect_proc.pid, signal.SIGTERM)
        prefect_proc.wait(timeout=30)
        shutil.rmtree(HOME, ignore_errors=True)


def bench(server: LiveServer, n_tasks: int, rounds: int) -> int:
    from prefect import flow, task

    from telemhq_plugins.core import Client, load_settings, set_client
    from telemhq_plugins.prefect import instrument, uninstrument

    key = server.api("POST", "/ping-keys", json={"name": "bench"}).json()["key"]
    client = Client(
        load_settings(env={}, config_file=os.devnull, base_url=server.base_url, ping_key=key)
    )
    set_client(client)

    @task(name="step")
    def step(i: int) -> int:
        return i + 1

    @flow(name="bench-200")
    def many() -> int:
        return sum(step(i) for i in range(n_tasks))

    many()  # warm-up (imports, first API calls), not measured
    times: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    order = [m for r in range(rounds) for m in ((False, True) if r % 2 == 0 else (True, False))]
    for on in order:
        if on:
            instrument(tasks=True)
        started, started_cpu = time.perf_counter(), time.process_time()
        many()
        if on:
            client.flush(60)  # the delivery thread's work for this run, counted in this run
        times[on].append(time.perf_counter() - started)
        cpu[on].append(time.process_time() - started_cpu)
        if on:
            uninstrument()
    client.flush(60)
    # The server answers a batch before its writer has stored every run: wait for them.
    expected_tasks = rounds * n_tasks
    deadline = time.monotonic() + 60
    while True:
        stored_flows = len(server.runs("bench-200"))
        stored_tasks = len(server.runs("bench-200-step"))
        if (stored_flows, stored_tasks) == (rounds, expected_tasks) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    delivery = client.stats()
    client.close()

    print(f"Prefect {n_tasks}-task flow, {rounds} runs per mode, interleaved, one process")
    for label, data in (("wall", times), ("CPU ", cpu)):
        off, on_ = statistics.median(data[False]), statistics.median(data[True])
        for mode, name in ((False, "not instrumented"), (True, "instrumented")):
            runs = ", ".join(f"{t:.2f}" for t in data[mode])
            print(f"  {label} {name:<17} median {statistics.median(data[mode]):7.3f} s ({runs})")
        print(
            f"  {label} ratio instrumented / not: {on_ / off:.3f} ({(on_ / off - 1) * 100:+.1f}%),"
            f" {(on_ - off) / (n_tasks + 1) * 1e6:+.0f} µs per task run"
        )
    print(f"  stored: {stored_flows}/{rounds} flow runs, {stored_tasks}/{expected_tasks} task runs")
    print(f"  delivery: {delivery}")
    return 0 if (stored_flows, stored_tasks) == (rounds, expected_tasks) else 1


if __name__ == "__main__":
    sys.exit(main())
