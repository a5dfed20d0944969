"""Fixtures for the Prefect adapter tests: a real Prefect API server (``prefect server start``
on SQLite in a temporary ``PREFECT_HOME``, once per test session), the real reference server
with a ping key (trackers created per job on first ping), and the process's delivery client
pointed at it.

Prefect reads its settings when it is imported, so this module sets ``PREFECT_*`` before any
test module imports Prefect."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live_server import LiveServer, free_port

_HOME = tempfile.mkdtemp(prefix="telemhq-prefect-")
_PORT = free_port()
PREFECT_ENV = {
    "PREFECT_HOME": _HOME,
    "PREFECT_API_URL": f"http://127.0.0.1:{_PORT}/api",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{_HOME}/prefect.db",
}
os.environ.update(PREFECT_ENV)
for _name in ("TELEMHQ_PREFECT_AUTO", "TELEMHQ_PREFECT_TASKS", "PREFECT_PLUGINS_ENABLED"):
    os.environ.pop(_name, None)

from telemhq_plugins.core import Client, load_settings, set_client  # noqa: E402


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    """The reference server (a real subprocess on SQLite), one per test module."""
    with LiveServer() as server:
        yield server


@pytest.fixture(scope="session", autouse=True)
def prefect_api() -> Iterator[str]:
    """A real Prefect API server for the whole session (about 25 s to start on a busy
    machine); its URL."""
    log = Path(_HOME) / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("prefect")),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(_PORT),
            ],
            env={**os.environ, **PREFECT_ENV},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = PREFECT_ENV["PREFECT_API_URL"]
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="module")
def ping_key(live_server: LiveServer) -> str:
    """A ping key of the module's server: each job's tracker is made by its first ping."""
    response = live_server.api("POST", "/ping-keys", json={"name": "prefect tests"})
    response.raise_for_status()
    key: str = response.json()["key"]
    return key


def make_client(**settings: Any) -> Client:
    """A delivery client from explicit settings only (the environment never leaks in)."""
    options: dict[str, Any] = {"timeout": 2.0, "max_retries": 0, "flush_timeout": 10.0}
    options.update(settings)
    return Client(load_settings(env={}, config_file=os.devnull, **options))


@pytest.fixture
def client(live_server: LiveServer, ping_key: str) -> Iterator[Client]:
    """The process-wide delivery client, pointed at the server for this test."""
    current = make_client(base_url=live_server.base_url, ping_key=ping_key)
    previous = set_client(current)
    yield current
    current.close()
    set_client(previous)


def telemhq_env(live_server: LiveServer, ping_key: str) -> dict[str, str]:
    """Environment of a flow run in a subprocess: Prefect's API and TelemHQ's server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
    env.update(PREFECT_ENV)
    env.update(
        TELEMHQ_BASE_URL=live_server.base_url,
        TELEMHQ_PING_KEY=ping_key,
        TELEMHQ_CONFIG=os.devnull,
        TELEMHQ_TIMEOUT="2",
        TELEMHQ_MAX_RETRIES="0",
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    return env


def wait_for_runs(
    server: LiveServer, slug: str, count: int, *, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """The tracker's runs (newest first) once there are ``count``; fails with what it saw."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if server.api("GET", f"/trackers/{slug}").status_code == 200:
            seen = server.runs(slug)
            if len(seen) >= count:
                return seen
        time.sleep(0.1)
    raise AssertionError(f"{slug}: expected {count} runs, saw {[r['status'] for r in seen]}")


def statuses(runs: list[dict[str, Any]]) -> list[str]:
    """Statuses oldest first."""
    return [r["status"] for r in reversed(runs)]


# An async flow run by ``asyncio.run`` leaves one of Prefect's own client sockets to its API
# for the garbage collector (seen with no TelemHQ code involved, at 3.9): a ResourceWarning, an
# error under ``filterwarnings = error``. Only sockets to this session's Prefect API are ignored.
_PREFECT_SOCKET = rf"unclosed <socket\.socket .*'127\.0\.0\.1', {_PORT}\)>"
PREFECT_SOCKET_WARNINGS = (
    f"ignore:{_PREFECT_SOCKET}:ResourceWarning",
    rf"ignore:Exception ignored in. <socket\.socket .*'127\.0\.0\.1', {_PORT}\)>"
    ":pytest.PytestUnraisableExceptionWarning",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            for rule in PREFECT_SOCKET_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(rule))
