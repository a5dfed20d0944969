"""The agent's listening sockets: a Unix socket only its user may use, and loopback TCP.

Each connection gets a thread that reads requests (:mod:`~telemhq_plugins.core.agent.protocol`)
and answers each with what ``answer(header, body)`` returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import socketserver
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from telemhq_plugins.core.agent.paths import AgentError, loopback_host, private_dir_problem
from telemhq_plugins.core.agent.protocol import (
    ProtocolError,
    encode_reply,
    read_request,
)

__all__ = ["Answer", "Listener", "listen_tcp", "listen_unix"]

logger = logging.getLogger("telemhq")

#: what the agent answers to one request
Answer = Callable[[dict[str, Any], bytes], dict[str, Any]]


class _Handler(socketserver.BaseRequestHandler):
    server: _Serving

    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            while True:
                request = read_request(sock)
                if request is None:
                    return
                sock.sendall(encode_reply(self.server.answer(*request)))
        except ProtocolError as exc:
            logger.warning("TelemHQ agent: closing a connection: %s", exc)
        except OSError:
            return  # the client went away (it exited, or gave up waiting)


class _Serving(socketserver.ThreadingMixIn, socketserver.BaseServer):
    daemon_threads = True
    block_on_close = False
    answer: Answer


class _UnixServer(_Serving, socketserver.UnixStreamServer):
    def server_bind(self) -> None:
        # Owner-only from the first instant: bind under a umask, not chmod after.
        old = os.umask(0o177)
        try:
            self.socket.bind(self.server_address)
        finally:
            os.umask(old)
        os.chmod(self.socket.getsockname(), 0o600)


class _TcpServer(_Serving, socketserver.TCPServer):
    allow_reuse_address = True


class _TcpServer6(_TcpServer):
    address_family = socket.AF_INET6


class Listener:
    """A listening socket served by a thread until :meth:`close`."""

    def __init__(self, server: _Serving, where: str, path: Path | None = None) -> None:
        self.server = server
        self.where = where
        self.path = path
        self._inode = path.stat().st_ino if path is not None else None
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            daemon=True,
            name=f"telemhq-agent-{where}",
        )
        self._thread.start()

    def close(self) -> None:
        """Stop accepting; remove the socket file if it is still this listener's."""
        self.server.shutdown()
        self.server.server_close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                if self.path.stat().st_ino == self._inode:
                    self.path.unlink()


def listen_unix(path: Path, answer: Answer, *, private_parent: bool) -> Listener:
    """Listen on the Unix socket ``path`` (mode 0600; a missing parent is created 0700).

    ``private_parent``: the folder must be this user's alone (the default path, under
    ``/tmp``). A socket file left by a dead agent is replaced; one an agent still listens
    on is an :class:`AgentError`."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(parent, 0o700)  # mkdir's mode is filtered by the umask
    if private_parent:
        problem = private_dir_problem(parent)
        if problem is not None:
            raise AgentError(f"cannot use the socket folder: {problem}; pass --socket PATH")
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise AgentError(f"{path} exists and is not a socket; pass another --socket PATH")
        if _answers(path):
            raise AgentError(f"an agent already listens on {path}")
        path.unlink()  # left by an agent that died
    try:
        server = _UnixServer(str(path), _Handler)
    except OSError as exc:
        raise AgentError(f"cannot listen on {path}: {exc.strerror}") from None
    server.answer = answer
    return Listener(server, str(path), path)


def listen_tcp(host: str, port: int, answer: Answer) -> Listener:
    """Listen on loopback ``host:port`` (anything else is an :class:`AgentError`: the agent
    has no authentication, so it is reachable from this machine only)."""
    if not loopback_host(host):
        raise AgentError(f"--tcp {host}:{port}: the agent listens on loopback addresses only")
    cls = _TcpServer6 if ":" in host else _TcpServer
    try:
        server = cls((host, port), _Handler)
    except OSError as exc:
        raise AgentError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    server.answer = answer
    bound_host, bound_port = server.socket.getsockname()[:2]
    return Listener(server, f"{bound_host}:{bound_port}")


def _answers(path: Path) -> bool:
    """Whether something accepts connections on the Unix socket ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True
