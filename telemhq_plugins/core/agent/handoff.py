"""The client's side of the agent: hand a batch of pings over and wait for the acknowledgement.

One connection per process, opened on first use and kept. Every failure (no socket, a dead
agent, a refusal, no answer within :data:`ACK_TIMEOUT`) returns False and the caller delivers
the pings itself, as it would without an agent; the agent is then left alone for
:data:`COOL_DOWN` seconds (not after a refusal of these pings only: a URL of another
server), so a hung agent costs one ``ACK_TIMEOUT`` per cool-down, and an absent one a failed
``connect`` (microseconds).

A timeout after the agent kept the pings means both deliver them: the server drops the second
copy by ``ping_id``.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Final

from telemhq_plugins.core.agent.paths import AgentAddress, private_dir_problem
from telemhq_plugins.core.agent.protocol import ProtocolError, pings_request, read_reply
from telemhq_plugins.core.logs import log_once

__all__ = ["ACK_TIMEOUT", "COOL_DOWN", "AgentLink"]

logger = logging.getLogger("telemhq")

#: seconds the client waits for the agent to acknowledge a batch before delivering it itself
ACK_TIMEOUT: Final = 0.05
#: seconds the client leaves the agent alone after it failed to take a batch
COOL_DOWN: Final = 5.0


#: no SIGPIPE when the agent went away: a process that restored its default action (some
#: command-line programs do) would be killed by it, with its job
_NO_SIGNAL: Final = getattr(socket, "MSG_NOSIGNAL", 0)


def _send(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[sock.send(view, _NO_SIGNAL) :]


class AgentLink:
    """One process's connection to the agent at ``address``. Used by the delivery thread
    only (not thread-safe)."""

    def __init__(self, address: AgentAddress, *, timeout: float = ACK_TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._skip_until = 0.0
        #: batches the agent acknowledged, and batches it did not take (refused or failed)
        self.handed = 0
        self.missed = 0

    def hand_off(self, pings: list[tuple[str, str, bytes]]) -> bool:
        """Give ``(ping_id, url, body)`` to the agent; True once it acknowledged all of them
        (they are on its disk), False when the caller must deliver them. Never raises."""
        if time.monotonic() < self._skip_until:
            return False
        request = pings_request(pings)
        while True:
            reused = self._sock is not None
            try:
                sock = self._sock or self._connect()
                if sock is None:
                    return self._missed(None)
                _send(sock, request)
                reply = read_reply(sock)
                break
            except (OSError, ProtocolError) as exc:
                self.close()
                if reused and not isinstance(exc, TimeoutError):
                    continue  # the agent restarted since: once more on a new connection
                return self._missed(f"{type(exc).__name__}: {exc}")
        if reply.get("ok") is True:
            self.handed += 1
            return True
        why = f"refused: {reply.get('error', 'no reason given')}"
        return self._missed(why, cool_down=reply.get("cool_down") is not False)

    def _connect(self) -> socket.socket | None:
        address = self.address
        if address.path is not None:
            if address.auto:
                # The default path: only an agent of this user, in a folder of this user's.
                if not address.path.exists():
                    return None
                problem = private_dir_problem(address.path.parent)
                if problem is not None:
                    log_once(
                        logger,
                        logging.WARNING,
                        ("agent-dir", problem),
                        "TelemHQ: TELEMHQ_AGENT=auto: not using %s (%s); delivering directly",
                        address.path,
                        problem,
                    )
                    return None
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: str | tuple[str, int] = str(address.path)
        else:
            assert address.host is not None
            family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            target = (address.host, address.port)
        sock.settimeout(self.timeout)
        try:
            sock.connect(target)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        return sock

    def _missed(self, why: str | None, *, cool_down: bool = True) -> bool:
        self.missed += 1
        if cool_down:
            self._skip_until = time.monotonic() + COOL_DOWN
        if why is not None:
            log_once(
                logger,
                logging.WARNING,
                ("agent-missed", why.split(":")[0]),
                "TelemHQ: the agent did not take pings (%s); delivering them directly",
                why,
            )
        return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def abandon(self) -> list[object]:
        """In a forked child: forget the parent's connection without closing it (it is the
        parent's); returns it, for the caller to keep referenced."""
        kept: list[object] = [self._sock] if self._sock is not None else []
        self._sock = None
        self._skip_until = 0.0
        return kept
