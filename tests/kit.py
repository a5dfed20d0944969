"""The test kit every suite loads as a pytest plugin (``pytest_plugins`` in ``tests/conftest.py``):
a real reference server, a ping key, the process's delivery client pointed at them, waiting for
what the server stored, and the helpers behind "the adapter failing never fails the job" and
"instrumented twice sends one ping".

Fixtures (no import needed):

- ``live_server``: a real ``telemhq-server`` on SQLite, one per test module;
- ``session_live_server``: the same, one per session (for a suite's session-wide fixtures);
- ``ping_key``: a ping key of ``live_server`` (one per module): a tracker per job, by its slug;
- ``client``: the process's delivery client (``set_client``) on ``live_server``/``ping_key``;
- ``local_agent``: a real ``telemhq agent`` delivering to ``live_server`` (one per test).

For tests of the local agent itself: :class:`AgentProcess` (the agent in a subprocess, on a
socket and spool of the test's), :func:`hand` (pings handed as a client does),
:func:`ping_triple`, :func:`agent_status`, :func:`job_client`.

    def test_a_task_reports(live_server, client):
        ...run the orchestrator's job; the adapter sends through ``client``...
        runs = wait_for_runs(live_server, "etl-load", 2)
        assert statuses_oldest_first(runs) == ["start", "success"]
        assert_one_ping_per_event(runs)

Everything here talks to the real server over HTTP; nothing is mocked but ``breaking_core``,
which exists to make core fail on purpose.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import httpx
import pytest

from telemhq_plugins.core.agent.handoff import AgentLink
from telemhq_plugins.core.agent.paths import AgentAddress
from telemhq_plugins.core.agent.protocol import encode_request, read_reply
from telemhq_plugins.core.config import load_settings
from telemhq_plugins.core.delivery import Client, set_client
from telemhq_plugins.core.payload import Ping
from tests.live_server import LiveServer, dies_with_parent, free_port

__all__ = [
    "TELEMHQ",
    "TIMEOUT_ABC",
    "AgentProcess",
    "CoreBroken",
    "HeldEndpoint",
    "agent_status",
    "assert_one_ping_per_event",
    "breaking_core",
    "client_for",
    "dead_endpoint",
    "free_port",
    "hand",
    "job_client",
    "new_ping_key",
    "ping_triple",
    "process_client",
    "require_tool",
    "runs_everywhere",
    "settings_client",
    "statuses_oldest_first",
    "telemhq_warnings",
    "tracker_by_slug",
    "unavailable",
    "wait_for_agent_delivery",
    "wait_for_runs",
    "wait_until",
]

T = TypeVar("T")

REQUIRE_ENV = "TELEMHQ_REQUIRE_SERVICES"


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(name="live_server", scope="module")
def fixture_live_server() -> Iterator[LiveServer]:
    """A real server on SQLite for the tests of one module."""
    with LiveServer() as server:
        yield server


@pytest.fixture(name="session_live_server", scope="session")
def fixture_session_live_server() -> Iterator[LiveServer]:
    """A real server on SQLite for the whole session."""
    with LiveServer() as server:
        yield server


@pytest.fixture(name="ping_key", scope="module")
def fixture_ping_key(live_server: LiveServer) -> str:
    """A ping key of the module's server: each job's tracker is made by its first ping."""
    return new_ping_key(live_server)


@pytest.fixture(name="client")
def fixture_client(live_server: LiveServer, ping_key: str) -> Iterator[Client]:
    """The process's delivery client for one test, on the module's server and ping key."""
    with process_client(client_for(live_server, ping_key=ping_key)) as current:
        yield current


@pytest.fixture(name="local_agent")
def fixture_local_agent(live_server: LiveServer) -> Iterator[AgentProcess]:
    """A real ``telemhq agent`` delivering to ``live_server``, stopped after the test; its
    socket (``local_agent.socket``, what ``TELEMHQ_AGENT`` names) in a short temporary folder,
    as a Unix socket's path has at most 107 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="thq-agent-"))
    try:
        with AgentProcess(live_server.base_url, folder) as agent:
            yield agent
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- helpers -----------------------------------------------------------------------------------


def client_for(server: LiveServer, **overrides: Any) -> Client:
    """A delivery client for ``server`` from explicit settings only (the developer's
    environment and config file never leak in): short timeout, no retries. ``overrides`` win
    (``ping_key=...``, ``token=...``, ``trackers=...``). Close it (``client.close()``) when done,
    or hand it to :func:`process_client` when the adapter sends through the process's client."""
    settings: dict[str, Any] = {
        "base_url": server.base_url,
        "timeout": 2.0,
        "max_retries": 0,
        "flush_timeout": 10.0,
        **overrides,
    }
    return Client(load_settings(env={}, config_file=os.devnull, **settings))


@contextlib.contextmanager
def process_client(client: Client) -> Iterator[Client]:
    """``client`` as the process's delivery client (what adapters send through) for the block;
    then it is closed and the previous client is back."""
    previous = set_client(client)
    try:
        yield client
    finally:
        client.close()
        set_client(previous)


def new_ping_key(server: LiveServer, *, auto_create: bool = True) -> str:
    """A new ping key (through the management API): ``/ping/<key>/<slug of the job>`` then
    reaches a tracker per job, created on its first ping when ``auto_create``."""
    response = server.api(
        "POST",
        "/ping-keys",
        json={"name": f"kit-{time.monotonic_ns()}", "auto_create": auto_create},
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


def tracker_by_slug(server: LiveServer, slug: str) -> dict[str, Any] | None:
    """The tracker with this slug, or None when there is none (yet)."""
    response = server.api("GET", f"/trackers/{slug}")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    tracker: dict[str, Any] = response.json()
    return tracker


def wait_until(
    check: Callable[[], T | None],
    what: str | Callable[[], str],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
) -> T:
    """The first truthy answer of ``check()``, asked every ``interval`` seconds. After
    ``timeout`` seconds (a bound for a busy machine, not a speed assertion) it fails naming
    ``what``: a text, or a function that says at that moment what was seen instead."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            description = what if isinstance(what, str) else what()
            raise AssertionError(f"timed out after {timeout:g} s waiting for {description}")
        time.sleep(interval)


def wait_for_runs(
    server: LiveServer, slug_or_id: str | int, count: int, *, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """The tracker's runs (newest first, as the server lists them) once it has at least
    ``count``; the tracker may not exist yet (a ping key creates it on the first ping). Fails
    after ``timeout`` seconds with what the server did store."""
    seen: list[dict[str, Any]] | None = None  # None: no such tracker (yet)

    def enough() -> list[dict[str, Any]] | None:
        nonlocal seen
        response = server.api("GET", f"/trackers/{slug_or_id}/runs", params={"limit": 500})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise AssertionError(f"runs of {slug_or_id}: {response.status_code} {response.text}")
        seen = response.json()["items"]
        return seen if len(seen) >= count else None

    def stored() -> str:
        got = "no such tracker" if seen is None else f"{len(seen)} run(s): {_summary(seen)}"
        return f"{slug_or_id}: expected {count} run(s), got {got}"

    return wait_until(enough, stored, timeout=timeout)


def wait_for_agent_delivery(agent: AgentProcess, count: int) -> dict[str, Any]:
    """The counters of ``agent`` (``telemhq agent status``) once it delivered ``count``
    pings, the pings a test's processes handed it (fails after 60 s with what it counted)."""

    def delivered() -> dict[str, Any] | None:
        status = agent.status()
        return status if status["delivered"] >= count else None

    return wait_until(delivered, lambda: f"{count} delivered: {agent.status()}", timeout=60)


def runs_everywhere(server: LiveServer, run_id_prefix: str = "") -> list[dict[str, Any]]:
    """Every run the server stored, in every tracker, whose ``run_id`` starts with
    ``run_id_prefix``, each with its tracker's ``slug`` added: what an orchestrator's run sent,
    wherever it went (a ping to an unexpected tracker included). Flush the client first."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 500}
    while True:
        response = server.api("GET", "/trackers", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        for tracker in page["items"]:
            for run in server.runs(tracker["id"]):
                if str(run.get("run_id") or "").startswith(run_id_prefix):
                    found.append({**run, "slug": tracker["slug"]})
        if not page["next"]:
            return found
        params["cursor"] = page["next"]


def statuses_oldest_first(runs: list[dict[str, Any]]) -> list[str]:
    """The statuses of stored ``runs`` in the order the server stored them, oldest first,
    whatever the order of the list (``wait_for_runs`` answers newest first)."""
    return [run["status"] for run in sorted(runs, key=lambda run: int(run["id"]))]


def unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason`` (a missing service or program), or fail it when
    TELEMHQ_REQUIRE_SERVICES=1 (CI), so that nothing is skipped there silently."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 requires it")
    pytest.skip(f"{reason}; install or start it to run this test (CI requires it)")


def require_tool(name: str, why: str = "") -> str:
    """The path of the program ``name`` (``curl``, ``node``...); when it is missing, the test
    is :func:`unavailable` (``why`` says what it is needed for)."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed" + (f" ({why})" if why else ""))
    return path


def assert_one_ping_per_event(runs: list[dict[str, Any]]) -> None:
    """No two stored runs are the same event: (run id, status, attempt) appears once. What an
    adapter instrumented twice, or reporting one end from two places, would break."""
    counts = Counter(_event(run) for run in runs)
    repeated = {event: n for event, n in counts.items() if n > 1}
    assert not repeated, f"events stored more than once (run_id, status, attempt): {repeated}"


class CoreBroken(RuntimeError):
    """What core raises inside :func:`breaking_core`."""


@contextlib.contextmanager
def breaking_core() -> Iterator[list[str]]:
    """Make core's delivery path raise inside the adapter: every ``Client.enqueue`` (how a
    run's start and end reach delivery) raises :class:`CoreBroken`, in this process and in
    children forked while it is on. Yields the job names core was asked to queue, so a test
    can show the adapter did reach core (and the job still succeeded)."""
    reached: list[str] = []
    original = Client.enqueue

    def enqueue(self: Client, ping: Any, url: str) -> bool:
        reached.append(str(getattr(ping, "job", "")))
        raise CoreBroken("core failed on purpose (breaking_core)")

    Client.enqueue = enqueue  # type: ignore[method-assign]
    try:
        yield reached
    finally:
        Client.enqueue = original  # type: ignore[method-assign]


def dead_endpoint() -> str:
    """A loopback base URL nothing listens on: connections are refused at once."""
    url = f"http://127.0.0.1:{free_port()}"
    with contextlib.suppress(httpx.TransportError):
        httpx.get(url, timeout=1)
        raise AssertionError(f"{url} answered; it was meant to be dead")
    return url


class HeldEndpoint:
    """A loopback endpoint that forwards every request to ``target`` (a base URL), but not
    before :meth:`release`: a delivery as slow as a test wants, with nothing lost. Use it as a
    context manager (requests still held at exit are forwarded then); give the client a
    timeout longer than the hold."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self._released = threading.Event()
        held = self

        class Forward(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                held._released.wait()
                skip = {"host", "content-length", "connection"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                answer = httpx.request(
                    self.command, held.target + self.path, headers=headers, content=body,
                    timeout=30,
                )  # fmt: skip
                self.send_response(answer.status_code)
                for name in ("content-type", "retry-after"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def release(self) -> None:
        """Forward what is held, and every request from now on at once."""
        self._released.set()

    def __enter__(self) -> HeldEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()


#: what a bad ``TELEMHQ_TIMEOUT=abc`` makes core log, once: monitoring off, the job untouched.
TIMEOUT_ABC = (
    "TelemHQ: monitoring is off, the job runs as without it: TELEMHQ_TIMEOUT='abc' "
    "(environment): not a number; expected a number of seconds above 0 (default 15)"
)


@contextlib.contextmanager
def settings_client() -> Iterator[None]:
    """The process's client is built from the settings (environment, config file) on first
    use, as in production, and the previous one is put back after."""
    previous = set_client(None)
    try:
        yield
    finally:
        set_client(previous)


def telemhq_warnings(records: list[Any]) -> list[str]:
    """What the ``telemhq`` logger said at WARNING and above (``caplog.records``)."""
    return [r.getMessage() for r in records if r.name == "telemhq" and r.levelno >= 30]


def _event(run: dict[str, Any]) -> tuple[Any, Any, Any]:
    payload = run.get("payload") or {}
    return (run.get("run_id") or payload.get("run_id"), run["status"], payload.get("attempt"))


def _summary(runs: list[dict[str, Any]]) -> list[tuple[Any, Any, Any]]:
    return [_event(run) for run in reversed(runs)]


# --- the local agent -------------------------------------------------------------------------


TELEMHQ = [sys.executable, "-m", "telemhq_plugins.core.cli"]


def job_client(server: LiveServer, key: str, job: str, agent: str) -> tuple[Client, str]:
    """A client of ``server`` (ping key ``key``) with ``TELEMHQ_AGENT=agent``, and the ping
    URL of ``job``."""
    client = client_for(server, ping_key=key, agent=agent)
    url = client.settings.ping_url_for(job)
    assert url is not None
    return client, url


def ping_triple(url: str, run_id: str) -> tuple[str, str, bytes]:
    """``(ping_id, url, body)`` of a success ping with this ``run_id``, as a client hands it."""
    ping = Ping(status="success", run_id=run_id)
    return ping.ping_id, url, ping.to_json()


def hand(socket_path: Path, pings: list[tuple[str, str, bytes]], timeout: float = 10.0) -> bool:
    """Hand ``pings`` to the agent as a client does (one request); True once acknowledged.
    ``timeout``: longer than a client's 50 ms, so a busy test machine does not decide."""
    link = AgentLink(AgentAddress(path=socket_path), timeout=timeout)
    try:
        return link.hand_off(pings)
    finally:
        link.close()


def agent_status(socket_path: Path) -> dict[str, Any]:
    """The counters of the agent on ``socket_path`` (its ``status`` request)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5.0)
        sock.connect(str(socket_path))
        sock.sendall(encode_request({"op": "status"}))
        status: dict[str, Any] = read_reply(sock)["status"]
        return status


class AgentProcess:
    """``telemhq agent`` in a subprocess; :meth:`start` returns once it listens."""

    def __init__(
        self, base_url: str, folder: Path, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        self.base_url = base_url
        self.socket = folder / "run" / "agent.sock"
        self.spool = folder / "spool"
        self.extra = list(extra)
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.log = folder / "agent.log"

    def command(self) -> list[str]:
        return [
            *TELEMHQ,
            "agent",
            "--socket",
            str(self.socket),
            "--spool",
            str(self.spool),
            *self.extra,
        ]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
        env.update(
            {
                "TELEMHQ_BASE_URL": self.base_url,
                "TELEMHQ_CONFIG": os.devnull,
                "TELEMHQ_TIMEOUT": "2",
                "TELEMHQ_REPLAY_INTERVAL": "1",
                **self.env,
            }
        )
        return env

    def start(self) -> AgentProcess:
        with self.log.open("a") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                dies_with_parent(self.command()),
                env=self.environment(),
                stdout=subprocess.DEVNULL,
                stderr=log,
                text=True,
            )
        wait_until(self._listening, lambda: f"the agent to listen: {self.output()}")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the agent exited: {self.output()}")
        try:
            agent_status(self.socket)
        except OSError:
            return False
        return True

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def status(self) -> dict[str, Any]:
        return agent_status(self.socket)

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
