"""A real ``telemhq-server`` in a subprocess, for tests of any part.

    from tests.live_server import LiveServer

    with LiveServer() as server:                       # SQLite file in a temporary folder
        tracker = server.create_tracker(name="etl", assertions=["records_processed > 0"])
        httpx.post(tracker["ping_url"], json={"records_processed": 3})
        assert server.runs(tracker["id"])[0]["passed"] is True
        assert server.tracker(tracker["id"])["state"] == "up"

Or as the test kit's fixture ``live_server`` (``tests/kit.py``: one server per test module,
SQLite). ``LiveServer(database_url=...)`` runs it on another database (e.g. a PostgreSQL
schema: ``...?options=-csearch_path%3Dmy_schema``).

Interface (kept stable): ``base_url``, ``api_key``, ``start()``, ``stop()``, ``kill()`` (SIGKILL,
then ``start()`` again on the same database and port), context manager,
``create_tracker(**fields) -> dict``, ``tracker(id) -> dict``, ``runs(tracker_id, **params)
-> list`` (newest first), ``flips(tracker_id) -> list``, ``ping(tracker, body=None,
suffix="") -> httpx.Response``, ``api(method, path, **kwargs) -> httpx.Response``, ``output``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

__all__ = ["LiveServer", "dies_with_parent", "free_port"]

_SETPRIV = shutil.which("setpriv") if sys.platform == "linux" else None


def dies_with_parent(command: list[str]) -> list[str]:
    """``command`` made to end with the test process: on Linux it runs under ``setpriv
    --pdeathsig TERM`` (the kernel sends it SIGTERM when its parent dies; ``exec`` keeps the
    process id), so a server or a watcher does not outlive a pytest that was killed before its
    teardown. Without setpriv the command is returned as it is."""
    return [_SETPRIV, "--pdeathsig", "TERM", "--", *command] if _SETPRIV else command


DEFAULT_API_KEY = "thq_test_admin_key_0123456789abcdef"


def free_port() -> int:
    """A loopback port nothing listens on (for now): connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: The server's own environment (``make env-server``): the core's environment has the client
#: only, and its tests reach the server as a user's job does, as another program.
SERVER_ENV = Path(__file__).resolve().parent.parent / ".venvs" / "server" / "bin"


def _server_command() -> list[str]:
    """``telemhq-server serve`` from this interpreter's environment when it has the server's
    dependencies, else from the server's own."""
    folder = Path(sys.executable).parent
    has_server = all(importlib.util.find_spec(m) is not None for m in ("sqlalchemy", "granian"))
    if not has_server and (SERVER_ENV / "telemhq-server").exists():
        folder = SERVER_ENV
    script = folder / "telemhq-server"
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-m", "telemhq_server", "serve"]


class LiveServer:
    """Start with :meth:`start` (or ``with``); stopped cleanly by :meth:`stop`."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        api_key: str = DEFAULT_API_KEY,
        env: Mapping[str, str] | None = None,
        workers: int = 1,
        port: int | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self._tmp = tempfile.mkdtemp(prefix="telemhq-live-")
        self.database_url = database_url or f"sqlite:///{self._tmp}/telemhq.db"
        self.api_key = api_key
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.startup_timeout = startup_timeout
        self._extra_env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = Path(self._tmp) / "server.log"
        self.client = httpx.Client(base_url=self.base_url, timeout=15)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> LiveServer:
        env = {
            **os.environ,
            "TELEMHQ_API_KEY": self.api_key,
            "TELEMHQ_DATABASE_URL": self.database_url,
            "TELEMHQ_WORKERS": str(self.workers),
            **self._extra_env,
        }
        log = self._log_path.open("wb")
        self._proc = subprocess.Popen(
            dies_with_parent([*_server_command(), "--host", "127.0.0.1", "--port", str(self.port)]),
            env=env,
            cwd=self._tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"telemhq-server exited early:\n{self.output}")
            try:
                if self.client.get("/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"telemhq-server did not answer /healthz in time:\n{self.output}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.client.close()

    def kill(self) -> None:
        """SIGKILL the server and its worker processes at once (a crash: no shutdown at all);
        ``start()`` brings it back on the same database and port."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    @property
    def pid(self) -> int | None:
        """The server's process id (its workers are in its process group)."""
        return None if self._proc is None else self._proc.pid

    def close(self) -> None:
        """Stop and delete the temporary folder (SQLite file, log)."""
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def output(self) -> str:
        """What the server printed so far (banner, logs)."""
        try:
            return self._log_path.read_text(errors="replace")
        except OSError:
            return ""

    # --- API helpers -----------------------------------------------------------------------

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to ``/api/v1`` + ``path`` with the admin key."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.request(method, "/api/v1" + path, headers=headers, **kwargs)

    def _ok(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise AssertionError(
                f"{response.request.method} {response.request.url} -> "
                f"{response.status_code}: {response.text}"
            )
        return response.json()

    def create_tracker(self, **fields: Any) -> dict[str, Any]:
        fields.setdefault("name", f"tracker-{time.monotonic_ns()}")
        result: dict[str, Any] = self._ok(self.api("POST", "/trackers", json=fields))
        return result

    def tracker(self, tracker_id: int | str) -> dict[str, Any]:
        result: dict[str, Any] = self._ok(self.api("GET", f"/trackers/{tracker_id}"))
        return result

    def runs(self, tracker_id: int | str, **params: Any) -> list[dict[str, Any]]:
        """Runs of a tracker, newest first (every page)."""
        items: list[dict[str, Any]] = []
        query: dict[str, Any] = {"limit": 500, **params}
        while True:
            page = self._ok(self.api("GET", f"/trackers/{tracker_id}/runs", params=query))
            items.extend(page["items"])
            if not page["next"]:
                return items
            query["cursor"] = page["next"]

    def flips(self, tracker_id: int | str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._ok(
            self.api("GET", f"/trackers/{tracker_id}/flips", params={"limit": 500})
        )["items"]
        return items

    def ping(
        self, tracker: Mapping[str, Any] | str, body: Any = None, suffix: str = ""
    ) -> httpx.Response:
        """POST a ping to a tracker (its dict or token), JSON ``body`` if given."""
        token = tracker if isinstance(tracker, str) else tracker["token"]
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        return self.client.post(f"/ping/{token}{suffix}", **kwargs)
