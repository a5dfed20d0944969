"""Fixtures for the Prefect adapter tests: a real Prefect API server (``prefect server start``
on SQLite in a temporary ``PREFECT_HOME``, once per test session). The reference server, its
ping key and the process's delivery client are the test kit's (``live_server``, ``ping_key``,
``client``).

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

import httpx
import pytest

from tests.kit import free_port
from tests.live_server import LiveServer, dies_with_parent

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


class PrefectAPI:
    """``prefect server start`` on this session's port and SQLite file; restartable (the
    watcher's reconnection test stops it and starts it again on the same database)."""

    def __init__(self) -> None:
        self.url = PREFECT_ENV["PREFECT_API_URL"]
        self.log = Path(_HOME) / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                dies_with_parent(
                    [
                        str(Path(sys.executable).with_name("prefect")),
                        "server",
                        "start",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(_PORT),
                    ]
                ),
                env={**os.environ, **PREFECT_ENV},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prefect server did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.25)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[PrefectAPI]:
    """A real Prefect API server for the whole session (about 25 s to start on a busy
    machine); the modules that run flows use it (``usefixtures``)."""
    api = PrefectAPI()
    try:
        api.start()
        yield api
    finally:
        api.stop()
        shutil.rmtree(_HOME, ignore_errors=True)


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
