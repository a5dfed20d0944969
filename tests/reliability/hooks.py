"""Webhook receivers on loopback for the reliability tests: a healthy one that records each
delivery, and hostile ones (hang, drip, redirect, 500) that a dispatcher must not wait on.

Each :class:`HookReceiver` is a real threaded HTTP server; ``deliveries`` records what a healthy
receiver got (arrival time, event, delivery id, whether the signature checked out).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from telemhq_server.webhooks import SIGNATURE_HEADER, verify_signature

__all__ = ["SECRET", "Delivery", "HookReceiver"]

SECRET = "whsec_reliability_tests_0123456789"
Mode = Literal["ok", "hang", "drip", "redirect", "error"]


@dataclass(frozen=True)
class Delivery:
    at: float  # time.monotonic() on arrival
    event: str
    delivery_id: str
    signed: bool
    body: bytes


class HookReceiver:
    """``mode``: ``ok`` answers 200; ``hang`` reads the request and never answers; ``drip``
    answers headers, then one body byte every 2 s; ``redirect`` answers 307 to itself;
    ``error`` answers 500. Every request is counted in ``hits``."""

    def __init__(self, mode: Mode = "ok") -> None:
        self.mode = mode
        self.deliveries: list[Delivery] = []
        self.hits = 0
        self.closing = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.handle(self, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        with self._lock:
            self.hits += 1
        if self.mode == "ok":
            signature = handler.headers.get(SIGNATURE_HEADER, "")
            with self._lock:
                self.deliveries.append(
                    Delivery(
                        time.monotonic(),
                        handler.headers.get("X-TelemHQ-Event", ""),
                        handler.headers.get("X-TelemHQ-Delivery", ""),
                        verify_signature(SECRET, body, signature),
                        body,
                    )
                )
            self._answer(handler, 200, b"ok")
        elif self.mode == "error":
            self._answer(handler, 500, b"broken")
        elif self.mode == "redirect":
            handler.send_response(307)
            handler.send_header("Location", self.url)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        elif self.mode == "hang":
            self.closing.wait(120)
        else:  # drip: headers now, then a byte every 2 s (each read finishes in time)
            handler.send_response(200)
            handler.send_header("Content-Length", "1000")
            handler.end_headers()
            handler.wfile.flush()
            for _ in range(60):
                if self.closing.wait(2):
                    return
                try:
                    handler.wfile.write(b".")
                    handler.wfile.flush()
                except OSError:
                    return

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def events(self) -> list[str]:
        with self._lock:
            return [d.event for d in self.deliveries]

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
