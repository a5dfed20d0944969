"""Where the agent listens and keeps its spool by default, and what ``TELEMHQ_AGENT`` names.

* socket: ``$XDG_RUNTIME_DIR/telemhq/agent.sock``, else ``/tmp/telemhq-<uid>/agent.sock``
  (per user: another user's agent is never used, nor can another user squat the path: see
  :func:`private_dir_problem`);
* spool: ``$XDG_STATE_HOME/telemhq/agent``, else ``~/.local/state/telemhq/agent``.

``TELEMHQ_AGENT`` is ``auto`` (the default socket, when it exists), an absolute socket path,
or ``tcp://127.0.0.1:PORT`` (an agent listening on loopback TCP).
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "AgentAddress",
    "AgentError",
    "default_socket_path",
    "default_spool_dir",
    "loopback_host",
    "parse_agent",
    "private_dir_problem",
]


def default_socket_path() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "telemhq" / "agent.sock"
    # Not tempfile.gettempdir(): TMPDIR may differ between the agent and its clients.
    return Path("/tmp") / f"telemhq-{os.getuid()}" / "agent.sock"


def default_spool_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state else Path.home() / ".local" / "state"
    return base / "telemhq" / "agent"


def private_dir_problem(directory: Path) -> str | None:
    """Why ``directory`` is not this user's private folder (None when it is): the default
    socket's folder in ``/tmp`` could have been made by another user to catch our pings."""
    try:
        info = directory.lstat()
    except OSError as exc:
        return f"{directory}: {exc.strerror}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{directory} is not a directory"
    if info.st_uid != os.getuid():
        return f"{directory} belongs to another user (uid {info.st_uid})"
    if info.st_mode & 0o077:
        return f"{directory} is open to other users (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses: the only TCP the agent speaks."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class AgentAddress:
    """Where a client reaches the agent: a Unix socket ``path``, or loopback ``host:port``.
    ``auto``: the default socket, used only when it exists in a private folder."""

    path: Path | None = None
    host: str | None = None
    port: int = 0
    auto: bool = False


def parse_agent(value: str) -> AgentAddress | None:
    """``TELEMHQ_AGENT``'s value as an address; None for an empty value (no agent).
    ValueError, with what is expected, for anything else."""
    text = value.strip()
    if not text:
        return None
    if text == "auto":
        return AgentAddress(path=default_socket_path(), auto=True)
    if text.startswith("tcp://"):
        host, sep, port = text.removeprefix("tcp://").rpartition(":")
        host = host.strip("[]")
        if sep and port.isdigit() and 0 < int(port) < 65536 and loopback_host(host):
            return AgentAddress(host=host, port=int(port))
        raise ValueError("expected tcp://127.0.0.1:PORT (a loopback address and a port)")
    if os.path.isabs(text):
        return AgentAddress(path=Path(text))
    raise ValueError("expected auto, an absolute socket path or tcp://127.0.0.1:PORT")


class AgentError(Exception):
    """The agent cannot start (its socket or spool is taken, a path is unusable): the
    message says which and what to do."""
