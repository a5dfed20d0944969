"""``telemhq agent`` (run the agent until SIGTERM/SIGINT) and ``telemhq agent status``."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import IO

from telemhq_plugins.core.agent.paths import (
    AgentError,
    default_socket_path,
    default_spool_dir,
    loopback_host,
)
from telemhq_plugins.core.agent.protocol import ProtocolError, encode_request, read_reply
from telemhq_plugins.core.agent.server import Agent, status_json
from telemhq_plugins.core.config import load_settings

__all__ = ["add_agent_parser", "agent_command"]

DESCRIPTION = """\
Run the local agent: processes on this machine hand their pings to it over a Unix socket
(TELEMHQ_AGENT=auto or the socket's path) and exit at once; the agent acknowledges each ping
once it is synced to its spool, then delivers it to TELEMHQ_BASE_URL with retries. SIGTERM or
SIGINT stops it: it delivers what it can within TELEMHQ_FLUSH_TIMEOUT, the rest stays in the
spool for its next start. `telemhq agent status` prints its counters (see docs/agent.md)."""


def add_agent_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = sub.add_parser(
        "agent",
        help="run the local agent that takes pings over a Unix socket and delivers them",
        description=DESCRIPTION,
    )
    agent.add_argument(
        "action", nargs="?", choices=["status"], help="status: print a running agent's counters"
    )
    agent.add_argument(
        "--socket",
        type=Path,
        help=f"the Unix socket (default: {default_socket_path()})",
    )
    agent.add_argument(
        "--tcp",
        metavar="HOST:PORT",
        help="also listen on this loopback address (e.g. 127.0.0.1:7717)",
    )
    agent.add_argument(
        "--spool", type=Path, help=f"the spool folder (default: {default_spool_dir()})"
    )
    agent.add_argument(
        "--max-bytes",
        type=int,
        help="refuse pings beyond this many bytes in the spool (default: TELEMHQ_SPOOL_MAX_BYTES)",
    )


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not loopback_host(host):
        raise AgentError(f"--tcp {text}: expected a loopback HOST:PORT, e.g. 127.0.0.1:7717")
    return host, int(port)


def agent_command(args: argparse.Namespace, out: IO[str]) -> int:
    """Run ``telemhq agent`` or ``telemhq agent status``; AgentError for a usage problem."""
    if args.action == "status":
        return _status(args, out)
    settings = load_settings()
    tcp = _host_port(args.tcp) if args.tcp else None
    agent = Agent(
        settings,
        spool_dir=args.spool or default_spool_dir(),
        socket_path=args.socket or default_socket_path(),
        tcp=tcp,
        max_bytes=args.max_bytes,
    )
    _log_to_stderr()
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    agent.start()
    where = ", ".join(listener.where for listener in agent.listeners)
    print(
        f"telemhq agent: listening on {where}; spool {agent.spool_dir}; "
        f"delivering to {settings.base_url}",
        file=sys.stderr,
        flush=True,
    )
    while not stop.wait(0.5):
        pass
    agent.stop()
    print("telemhq agent: stopped", file=sys.stderr, flush=True)
    return 0


def _log_to_stderr() -> None:
    """The agent is a service: its warnings (a server down, a spool that cannot be written)
    go to stderr, for the service manager's journal."""
    log = logging.getLogger("telemhq")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def _status(args: argparse.Namespace, out: IO[str]) -> int:
    if args.tcp:
        host, port = _host_port(args.tcp)
        sock = socket.create_connection((host, port), timeout=5.0)
        where = args.tcp
    else:
        path = args.socket or default_socket_path()
        where = str(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5.0)
        try:
            sock.connect(str(path))
        except OSError as exc:
            sock.close()
            raise AgentError(f"no agent answers on {path}: {exc.strerror}") from None
    try:
        sock.sendall(encode_request({"op": "status"}))
        reply = read_reply(sock)
    except (OSError, ProtocolError) as exc:
        raise AgentError(f"the agent on {where} did not answer: {exc}") from None
    finally:
        sock.close()
    print(status_json(reply.get("status", reply)), file=out)
    return 0
