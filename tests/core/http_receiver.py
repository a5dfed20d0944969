"""A small ping receiver on loopback for delivery tests (real HTTP, real sockets).

It behaves like the reference server where delivery cares: ``POST /ping/<token>`` with a JSON
object is stored once per ``ping_id`` (a duplicate answers 200 and is not stored again), and
replies can be scripted (status, headers, delay) to play a failing, slow or rate-limiting
server. :func:`blackhole` is a port that accepts connections and never answers.
"""

from __future__ import annotations

import collections
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.live_server import free_port

__all__ = ["Receiver", "Reply", "blackhole", "free_port"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer. A ping is stored only when the answer is 2xx."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: hold the answer until the test sets this event (at most 30 s)
    gate: threading.Event | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self._connections_lock:
            for conn in self.connections:
                with suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self.connections.clear()


class Receiver:
    """Records pings; ``stored`` maps ping_id -> payload, ``received`` counts every POST."""

    def __init__(
        self, port: int = 0, *, batch: bool = False, max_batch_bytes: int | None = None
    ) -> None:
        self.port = port
        #: serve ``POST /ping/_batch`` like the reference server; else 404 it like a server
        #: without the endpoint (such 404s touch neither the script nor the counters).
        self.batch = batch
        #: a batch request body longer than this is answered 413 (as the reference server
        #: does past its limit), counted in ``batch_too_large``
        self.max_batch_bytes = max_batch_bytes
        self.batch_requests = 0
        self.batch_refusals = 0
        self.batch_too_large = 0
        self.stored: dict[str, dict[str, Any]] = {}
        self.received: collections.Counter[str] = collections.Counter()
        self.answered = 0
        #: requests that reached the handler (before any scripted delay or gate)
        self.arrived = 0
        self._script: collections.deque[Reply] = collections.deque()
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ------------------------------------------------------------------------------

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real server
            wbufsize = 65536  # headers and body in one write (no Nagle/delayed-ACK stall)
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                limit = receiver.max_batch_bytes
                if self.path.endswith("/ping/_batch") and limit is not None and length > limit:
                    with receiver._cond:
                        receiver.batch_too_large += 1
                    _answer(self, 413, {}, b'{"ok":false,"error":"body is too large"}')
                    return
                if self.path.endswith("/ping/_batch"):
                    receiver._handle_batch(self, payload)
                else:
                    receiver._handle(self, payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = _Server(("127.0.0.1", self.port), Handler)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut kept-alive connections: the server is really gone."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.cut_connections()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, token: str = "tok") -> str:
        return f"http://127.0.0.1:{self.port}/ping/{token}"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies`` in order, then 200 again."""
        with self._cond:
            self._script.extend(replies)

    def wait_for(
        self, stored: int = 0, *, answered: int = 0, arrived: int = 0, timeout: float = 10.0
    ) -> bool:
        """Wait until at least ``stored`` pings are stored, ``answered`` requests answered
        and ``arrived`` requests reached the handler."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.stored) < stored or self.answered < answered or self.arrived < arrived:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    # -- serving ------------------------------------------------------------------------------

    def _handle_batch(self, handler: BaseHTTPRequestHandler, payload: Any) -> None:
        if not self.batch:
            with self._cond:
                self.batch_refusals += 1
            _answer(handler, 404, {}, b'{"ok":false,"error":"unknown ping token"}')
            return
        with self._cond:
            reply = self._script.popleft() if self._script else Reply()
            self.batch_requests += 1
        if reply.gate is not None:
            reply.gate.wait(30)
        results = []
        with self._cond:
            for item in payload["pings"]:
                ping_id = item["body"].get("ping_id", "")
                self.received[ping_id] += 1
                duplicate = ping_id in self.stored
                if 200 <= reply.status < 300 and not duplicate:
                    self.stored[ping_id] = item["body"]
                results.append({"status": 200, "ok": True, "duplicate": duplicate})
        body = json.dumps({"results": results} if 200 <= reply.status < 300 else {}).encode()
        try:
            _answer(handler, reply.status, reply.headers, body)
        finally:
            with self._cond:
                self.answered += 1
                self._cond.notify_all()

    def _handle(self, handler: BaseHTTPRequestHandler, payload: Any) -> None:
        with self._cond:
            self.arrived += 1
            self._cond.notify_all()
            reply = self._script.popleft() if self._script else Reply()
        if reply.delay:
            time.sleep(reply.delay)
        if reply.gate is not None:
            reply.gate.wait(30)
        ping_id = payload.get("ping_id", "") if isinstance(payload, dict) else ""
        with self._cond:
            self.received[ping_id] += 1
            duplicate = ping_id in self.stored
            if 200 <= reply.status < 300 and not duplicate:
                self.stored[ping_id] = payload
        body = json.dumps({"ok": 200 <= reply.status < 300, "duplicate": duplicate}).encode()
        try:
            _answer(handler, reply.status, reply.headers, body)
        finally:
            with self._cond:
                self.answered += 1
                self._cond.notify_all()


def _answer(
    handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes
) -> None:
    try:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except OSError:  # the client gave up (timeout) before the answer
        pass


@contextmanager
def blackhole() -> Iterator[str]:
    """The base URL of a server that accepts TCP connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # never accept(): the kernel completes handshakes, nobody replies
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
