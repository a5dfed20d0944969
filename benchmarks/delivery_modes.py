"""What the orchestrator benchmarks share to compare delivery side by side: a server made
remote by the delay proxy, a local agent, the order of the modes and the printed comparison.

The modes, in one run:

- ``plain``: no monitoring (the baseline);
- ``direct``: the adapter on, the process delivering to the server itself (what every task
  process does without an agent: a bounded flush before it ends);
- ``agent``: the adapter on, the process handing its pings to a local ``telemhq agent``
  (``TELEMHQ_AGENT``), which delivers them to the server on its own time.

With ``--rtt MS`` the server is reached through ``delay_proxy`` in both monitored modes (the
agent's deliveries too), as a server across a network would be.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import delay_proxy

from telemhq_plugins.core.agent.protocol import encode_request, read_reply

__all__ = ["MODES", "LocalAgent", "alternating", "print_comparison", "remote"]

MODES = ("plain", "direct", "agent")


def alternating(modes: Sequence[str], rounds: int) -> list[str]:
    """``modes`` in order, then reversed, ``rounds`` times (a, b, c, c, b, a, ...): every mode
    meets the same drift of a shared machine."""
    return [*modes, *reversed(modes)] * rounds


@contextlib.contextmanager
def remote(base_url: str, rtt_ms: float | None) -> Iterator[str]:
    """The base URL the monitored modes deliver to: ``base_url`` itself without ``rtt_ms``,
    else a delay proxy to it adding ``rtt_ms`` per round trip."""
    if rtt_ms is None:
        yield base_url
        return
    with delay_proxy.running(base_url, rtt_ms) as url:
        yield url


def _telemhq() -> str:
    return str(Path(sys.executable).with_name("telemhq"))


class LocalAgent:
    """A ``telemhq agent`` subprocess on a socket in a temporary folder, delivering to
    ``base_url`` with ``env`` (``TELEMHQ_*`` of the machine's config); stopped by SIGTERM at
    the end of the ``with`` block, which lets it flush what it holds."""

    def __init__(self, base_url: str, env: dict[str, str] | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="telemhq-bench-agent-"))
        self.socket = str(self.folder / "agent.sock")
        self.spool = str(self.folder / "spool")
        clean = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
        self.env = {**clean, "TELEMHQ_BASE_URL": base_url, **(env or {})}
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalAgent:
        with (self.folder / "agent.log").open("wb") as log:
            self._proc = subprocess.Popen(
                [_telemhq(), "agent", "--socket", self.socket, "--spool", self.spool],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while not os.path.exists(self.socket):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the agent did not start:\n{self.log()}")
            time.sleep(0.05)
        return self

    def status(self) -> dict[str, Any]:
        """The agent's counters (what ``telemhq agent status`` prints), asked on its socket:
        cheap enough to poll."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(self.socket)
            sock.sendall(encode_request({"op": "status"}))
            status: dict[str, Any] = read_reply(sock)["status"]
        return status

    def summary(self) -> str:
        """The counters that say what went through the agent, on one line."""
        status = self.status()
        names = ("received", "acked", "refused", "delivered", "retrying", "spool_pings")
        return ", ".join(f"{name} {status[name]}" for name in names)

    def log(self) -> str:
        return (self.folder / "agent.log").read_text(errors="replace")

    def __exit__(self, *_: object) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def print_comparison(
    what: str, values: dict[str, list[float]], *, per_run: int, unit: str, rtt_ms: float | None
) -> None:
    """``what`` side by side: each mode's median in seconds (with the least and the most), its
    ratio to ``plain``, and the milliseconds it adds per ``unit`` (``per_run`` of them in one
    value: the tasks of a run, or 1)."""
    where = "loopback" if rtt_ms is None else f"a {rtt_ms:g} ms round trip (delay proxy)"
    counts = sorted({len(found) for found in values.values()})
    print(f"\n{what}: {per_run} {unit}(s) each, {'-'.join(map(str, counts))} per mode; {where}")
    added_label = f"added per {unit}"
    print(f"{'mode':8} {'median':>9} {'min':>9} {'max':>9} {'ratio':>7} {added_label:>16}")
    plain = statistics.median(values["plain"])
    for mode, found in values.items():
        median = statistics.median(found)
        added = (median - plain) / per_run * 1000
        ratio = f"{median / plain:7.3f}" if plain else f"{'-':>7}"
        print(
            f"{mode:8} {median:8.3f}s {min(found):8.3f}s {max(found):8.3f}s "
            f"{ratio} {added:+13.1f} ms"
        )
