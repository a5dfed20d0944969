"""A real ``telemhq agent`` process for the agent's tests: started on a socket and spool in a
test's folder, delivering to a live reference server (or any base URL), and the pings tests
hand to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from telemhq_plugins.core.agent.handoff import AgentLink
from telemhq_plugins.core.agent.paths import AgentAddress
from telemhq_plugins.core.agent.protocol import encode_request, read_reply
from telemhq_plugins.core.delivery import Client
from telemhq_plugins.core.payload import Ping
from tests.kit import client_for, wait_until
from tests.live_server import LiveServer, dies_with_parent

__all__ = ["AgentProcess", "agent_status", "hand", "job_client", "ping_triple"]

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
