"""Airflow benchmark: a 100-task DAG's wall time with the TelemHQ listener and without.

Run: ``.venvs/airflow/bin/python benchmarks/airflow_overhead.py [--tasks N] [--rounds R]
[--rtt MS]``

A real Airflow 3 in a temporary ``AIRFLOW_HOME`` (SQLite, migrated first) runs one DAG of N
independent no-op tasks with ``dag.test()`` (every task through the Task SDK's runner, in this
process), in three modes: without the listener (``plain``), with it delivering to the server
itself (``direct``) and with it handing the pings to a local ``telemhq agent`` (``agent``, the
client's ``TELEMHQ_AGENT``). The listener is registered and taken off between runs, in the
order plain, direct, agent, agent, direct, plain, ... (R rounds after a warm-up run in each
mode, not counted: the first ``dag.test()`` of a process imports and parses for seconds, and
the first monitored run has the server create a tracker per task), so all modes see the
machine in the same state. With the listener on, every task try sends its ping over HTTP to
the reference server (a subprocess on loopback, SQLite) and the adapter flushes after each
task, as it does in production (where Airflow ends the task's process next); through the agent
the flush waits for the agent's acknowledgement only. Every ping is checked to have been
stored.

``--rtt MS`` puts the server across a network: delivery (the agent's too) goes through a
loopback proxy adding ``MS`` per round trip (``delay_proxy.py``). Under ``dag.test()`` the
tasks share one process, which keeps its connection to the server from task to task; a task
process in production opens a new one: a round trip more (two or three more over TLS).

Prints each run's wall time and, side by side, each mode's median per run, its ratio to
``plain`` and the milliseconds added per task; then the same for the time the listener's
flushes at the ends of tasks took (the wait the agent removes; the rest of the added time is
the listener's own work).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from delivery_modes import MODES, LocalAgent, alternating, print_comparison, remote

from tests.kit import wait_for_runs
from tests.live_server import LiveServer

DAG_FILE = """
import datetime as dt

from airflow.sdk import dag, task


@dag(schedule=None, start_date=dt.datetime(2024, 1, 1), catchup=False)
def bench_{n}():
    @task
    def noop(i: int) -> None:
        pass

    for i in range({n}):
        noop.override(task_id=f"t{{i:03d}}")(i)


bench_dag = bench_{n}()
"""


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2, help="each: every mode twice")
    parser.add_argument("--rtt", type=float, help="ms per round trip to the server (a proxy)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="telemhq-bench-airflow-"))
    dags = work / "dags"
    dags.mkdir()
    (dags / "bench_dag.py").write_text(DAG_FILE.format(n=args.tasks))
    os.environ.update(
        {
            "AIRFLOW_HOME": str(work),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
        }
    )
    os.environ.pop("TELEMHQ_AIRFLOW_AUTO", None)
    subprocess.run([_bin("airflow"), "db", "migrate"], check=True, capture_output=True)
    try:
        with (
            LiveServer(database_url=f"sqlite:///{work}/telemhq.db") as server,
            remote(server.base_url, args.rtt) as target,
            LocalAgent(target) as agent,
        ):
            return run(args, dags, server, target, agent)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(
    args: argparse.Namespace, dags: Path, server: LiveServer, target: str, agent: LocalAgent
) -> int:
    import importlib.util

    from telemhq_plugins.airflow import AirflowInstrumentor
    from telemhq_plugins.core import Client, load_settings, set_client

    key = server.api("POST", "/ping-keys", json={"name": "bench", "auto_create": True})
    settings = {"config_file": os.devnull, "base_url": target, "ping_key": key.json()["key"]}
    clients = {
        "direct": Client(load_settings(env={}, **settings)),
        "agent": Client(load_settings(env={"TELEMHQ_AGENT": agent.socket}, **settings)),
    }

    spec = importlib.util.spec_from_file_location("bench_dag", dags / "bench_dag.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag: Any = module.bench_dag

    instrumentor = AirflowInstrumentor()
    # The seconds the listener's flush at the end of each task waits (the part of the added
    # time the agent is for), per run; measured around the client's own method.
    flushing = [0.0]
    flush_or_spool = Client.flush_or_spool

    def timed_flush(self: Client, timeout: float | None = None) -> bool:
        started = time.perf_counter()
        try:
            return flush_or_spool(self, timeout)
        finally:
            flushing[0] += time.perf_counter() - started

    Client.flush_or_spool = timed_flush  # type: ignore[method-assign]

    def switch(mode: str) -> None:
        if mode == "plain":
            instrumentor.uninstrument()
        else:
            set_client(clients[mode])
            instrumentor.instrument()

    def timed(mode: str) -> float:
        switch(mode)
        flushing[0] = 0.0
        started = time.perf_counter()
        dag_run = dag.test()
        elapsed = time.perf_counter() - started
        assert dag_run.state == "success", dag_run.state
        return elapsed

    # Not counted: the first run imports and parses; the first monitored run has the server
    # create a tracker per task (a ping key creates one on a job's first ping).
    for mode in MODES:
        print(f"warm-up run, {mode} (not counted): {timed(mode):.2f} s")
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    flushes: dict[str, list[float]] = {mode: [] for mode in MODES}
    for mode in alternating(MODES, args.rounds):
        times[mode].append(timed(mode))
        flushes[mode].append(flushing[0])
        per_task = flushing[0] / args.tasks * 1000
        print(f"{mode:8} {times[mode][-1]:7.2f} s   end-of-task flush {per_task:6.2f} ms per task")
    switch("plain")
    for client in clients.values():
        assert client.flush(30)

    runs = len(times["direct"]) + len(times["agent"]) + 2
    stored = len(wait_for_runs(server, f"bench-{args.tasks}-t000", runs, timeout=120))
    assert stored == runs, f"expected {runs} pings for one task, got {stored}"
    handed = clients["agent"].stats()
    assert handed["handed"] > 0, handed
    print_comparison("a run of the DAG", times, per_run=args.tasks, unit="task", rtt_ms=args.rtt)
    print_comparison(
        "the flushes at the ends of a run's tasks",
        flushes,
        per_run=args.tasks,
        unit="task",
        rtt_ms=args.rtt,
    )
    print(
        f"\nagent mode: {handed['handed']} pings handed to the agent, "
        f"{handed['delivered']} delivered directly (the agent took longer than 50 ms)"
    )
    print(f"the agent: {agent.summary()}")
    for client in clients.values():
        client.close(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
