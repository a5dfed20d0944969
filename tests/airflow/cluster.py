"""A real Airflow deployment for the production-path tests: a scheduler with the
LocalExecutor, a DAG processor and an API server in a temporary ``AIRFLOW_HOME``, with DAG
files of the test's own; and triggering a DAG run in it.

Each task runs in a process the executor's supervisor forks and ends with ``os._exit``: a ping
gets out only if the adapter flushes (or hands) it before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.kit import free_port, new_ping_key
from tests.live_server import LiveServer, dies_with_parent

__all__ = ["RUN", "STARTUP", "airflow_cluster", "listener_env", "trigger"]

#: bounds for a busy 2-core machine, not speed assertions.
STARTUP = 300.0
RUN = 300.0


def _airflow() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def listener_env(server: LiveServer, **extra: str) -> dict[str, str]:
    """The environment that switches the listener plugin on in every component (loaded
    through its entry point), reporting to ``server`` on a new ping key, start pings too."""
    return {
        "TELEMHQ_BASE_URL": server.base_url,
        "TELEMHQ_PING_KEY": new_ping_key(server),
        "TELEMHQ_AIRFLOW_AUTO": "1",
        "TELEMHQ_SEND_START": "1",
        "TELEMHQ_TIMEOUT": "5",
        **extra,
    }


@contextlib.contextmanager
def airflow_cluster(
    home: Path, dag_files: dict[str, str], extra_env: dict[str, str]
) -> Iterator[dict[str, str]]:
    """The three components running on ``home`` with ``dag_files`` (file name -> source) as
    the DAGs folder; ``extra_env`` on top of an environment with no ``AIRFLOW*`` or
    ``TELEMHQ_*`` variable of the caller's. Yields the environment (for ``trigger``)."""
    (home / "dags").mkdir(parents=True)
    for name, source in dag_files.items():
        (home / "dags" / name).write_text(source)
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TELEMHQ_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            **extra_env,
        }
    )
    subprocess.run(
        [_airflow(), "db", "migrate"], env=env, check=True, capture_output=True, timeout=STARTUP
    )
    procs: list[subprocess.Popen[bytes]] = []
    logs = {}
    for component in ("api-server", "scheduler", "dag-processor"):
        logs[component] = home / f"{component}.log"
        with logs[component].open("wb") as out:
            procs.append(
                subprocess.Popen(
                    dies_with_parent([_airflow(), component]),
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    try:
        _wait_until_healthy(f"http://127.0.0.1:{api_port}/api/v2/monitor/health", procs, logs)
        yield env
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _wait_until_healthy(
    url: str, procs: list[subprocess.Popen[bytes]], logs: dict[str, Path]
) -> None:
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        for proc, (name, log) in zip(procs, logs.items(), strict=True):
            if proc.poll() is not None:
                raise AssertionError(f"airflow {name} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise AssertionError(f"the API server did not answer {url} within {STARTUP} s")


def trigger(env: dict[str, str], dag_id: str) -> None:
    """Trigger once the DAG processor has parsed the file (the command fails before)."""
    deadline = time.monotonic() + STARTUP
    while True:
        done = subprocess.run(
            [_airflow(), "dags", "trigger", dag_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=STARTUP,
            check=False,
        )
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"airflow dags trigger {dag_id}: {done.stdout}{done.stderr}")
        time.sleep(3)
