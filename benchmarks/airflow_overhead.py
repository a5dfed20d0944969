"""Airflow benchmark: a 100-task DAG's wall time with the TelemHQ listener and without.

Run: ``.venvs/airflow/bin/python benchmarks/airflow_overhead.py [--tasks N] [--pairs P]``

A real Airflow 3 in a temporary ``AIRFLOW_HOME`` (SQLite, migrated first) runs one DAG of N
independent no-op tasks with ``dag.test()`` (every task through the Task SDK's runner, in this
process). The listener is registered and taken off between runs, in the order off, on, on,
off, off, on, ... (P pairs after a warm-up run in each mode, not counted: the first
``dag.test()`` of a process imports and parses for seconds, and the first run with the listener
has the server create a tracker per task), so both modes see the machine in the same state.
With the listener on, every task try sends its ping over HTTP to the reference server (a
subprocess on loopback, SQLite) and the adapter flushes after each task, as it does in
production; every ping is checked to have been stored.

Prints each run's wall time, the mean per mode, the ratio on/off and the milliseconds added per
task.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

API_KEY = "thq_bench_admin_key_0123456789abcdef"

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


def start_server(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
    env.update(TELEMHQ_API_KEY=API_KEY, TELEMHQ_DATABASE_URL=f"sqlite:///{work}/telemhq.db")
    with (work / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [_bin("telemhq-server"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return proc, base_url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the reference server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=3)
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
    server, base_url = start_server(work)
    try:
        return run(args, dags, base_url)
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, dags: Path, base_url: str) -> int:
    import importlib.util

    from telemhq_plugins.airflow import AirflowInstrumentor
    from telemhq_plugins.core import Client, load_settings, set_client

    api = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"})
    key = api.post("/api/v1/ping-keys", json={"name": "bench", "auto_create": True}).json()["key"]
    client = Client(load_settings(env={}, config_file=os.devnull, base_url=base_url, ping_key=key))
    set_client(client)

    spec = importlib.util.spec_from_file_location("bench_dag", dags / "bench_dag.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag: Any = module.bench_dag

    instrumentor = AirflowInstrumentor()

    def switch(on: bool) -> None:
        if on:
            instrumentor.instrument()
        else:
            instrumentor.uninstrument()

    def timed(on: bool) -> float:
        switch(on)
        started = time.perf_counter()
        dag_run = dag.test()
        elapsed = time.perf_counter() - started
        assert dag_run.state == "success", dag_run.state
        return elapsed

    # Not counted: the first run imports and parses; the first run with the listener has the
    # server create a tracker per task (a ping key creates one on a job's first ping).
    print(f"warm-up run, plain (not counted): {timed(False):.2f} s")
    print(f"warm-up run, listener (not counted): {timed(True):.2f} s")
    plan = [m for i in range(args.pairs) for m in ((False, True) if i % 2 == 0 else (True, False))]
    times: dict[bool, list[float]] = {False: [], True: []}
    for on in plan:
        elapsed = timed(on)
        times[on].append(elapsed)
        print(f"{'listener' if on else 'plain   '} {elapsed:7.2f} s")
    switch(False)
    client.flush(30)

    runs_on = len(times[True]) + 1
    stored = api.get(f"/api/v1/trackers/bench-{args.tasks}-t000/runs").json()["items"]
    assert len(stored) == runs_on, f"expected {runs_on} pings for one task, got {len(stored)}"
    plain, on = statistics.mean(times[False]), statistics.mean(times[True])
    print(f"\n{args.tasks} tasks, {args.pairs} pairs of runs (alternating)")
    print(f"without the listener: {plain:.2f} s per run  ({args.tasks / plain:.1f} tasks/s)")
    print(f"with the listener:    {on:.2f} s per run  ({args.tasks / on:.1f} tasks/s)")
    print(f"ratio with/without:   {on / plain:.3f}")
    print(f"added per task:       {(on - plain) / args.tasks * 1000:.1f} ms")
    client.close(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
