"""Every route that reads a request body refuses an oversized one early (413), on the real
server: the client declares (or streams, chunked) far more than any limit, and the answer must
come long before that much was sent. Nothing reads an unbounded body into memory."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from telemhq_server.app import create_app
from telemhq_server.config import Settings

from tests.live_server import LiveServer

pytestmark = pytest.mark.slow

DECLARED = 128 * 1024 * 1024
#: The client stops sending here; a route that reads everything never answers.
GIVE_UP_AFTER = 24 * 1024 * 1024
ANSWER_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer() as live:
        yield live


@pytest.fixture(scope="module")
def targets(server: LiveServer) -> dict[str, str]:
    """Concrete paths for every path pattern that takes a body."""
    tracker = server.create_tracker(name="limits", slug="limits")
    hook = server.api("POST", "/webhooks", json={"url": "http://127.0.0.1:9/hook"}).json()
    ping_key = server.api("POST", "/ping-keys", json={"name": "limits"}).json()
    channel = server.api("POST", "/channels", json={"url": "json://127.0.0.1:9/x"}).json()
    return {
        "/api/v1/trackers": "/api/v1/trackers",
        "/api/v1/trackers/{tracker}": f"/api/v1/trackers/{tracker['id']}",
        "/api/v1/trackers/{tracker}/pause": f"/api/v1/trackers/{tracker['id']}/pause",
        "/api/v1/trackers/{tracker}/resume": f"/api/v1/trackers/{tracker['id']}/resume",
        "/api/v1/trackers/{tracker}/rotate-token": f"/api/v1/trackers/{tracker['id']}/rotate-token",
        "/api/v1/keys": "/api/v1/keys",
        "/api/v1/ping-keys": "/api/v1/ping-keys",
        "/api/v1/webhooks": "/api/v1/webhooks",
        "/api/v1/lineage": "/api/v1/lineage",
        "/api/v1/webhooks/{webhook_id}": f"/api/v1/webhooks/{hook['id']}",
        "/api/v1/channels": "/api/v1/channels",
        "/api/v1/channels/{channel_id}": f"/api/v1/channels/{channel['id']}",
        "/api/v1/channels/{channel_id}/test": f"/api/v1/channels/{channel['id']}/test",
        "/api/v1/silences": "/api/v1/silences",
        "/dashboard/login": "/dashboard/login",
        "/dashboard/logout": "/dashboard/logout",
        "/ping/{token}": f"/ping/{tracker['token']}",
        "/ping/{token}/start": f"/ping/{tracker['token']}/start",
        "/ping/{ping_key}/{slug}": f"/ping/{ping_key['key']}/limits",
        "/ping/_batch": "/ping/_batch",
    }


def _body_routes() -> list[tuple[str, str]]:
    """(method, path pattern) of every Starlette route that accepts a body."""
    app = create_app(Settings(database_url="sqlite:///:memory:"))
    found: list[tuple[str, str]] = []
    for route in app.starlette.routes:
        for method in sorted(getattr(route, "methods", None) or ()):
            if method in ("POST", "PATCH", "PUT"):
                found.append((method, route.path))  # type: ignore[attr-defined]
    app.engine.dispose()
    return found


PING_ROUTES = [
    ("POST", "/ping/{token}"),
    ("POST", "/ping/{token}/start"),
    ("POST", "/ping/{ping_key}/{slug}"),
    ("POST", "/ping/_batch"),
]
ROUTES = _body_routes() + PING_ROUTES
#: Routes that answer without reading a body at all (any early answer is right).
NO_BODY = {("POST", "/dashboard/logout")}


def _send_oversized(
    port: int, method: str, path: str, headers: dict[str, str], *, chunked: bool
) -> tuple[int | None, int]:
    """Send ``method path`` with a huge body as fast as the server takes it; returns the
    answer's status (None: no answer within the timeout) and how many body bytes were sent
    before the answer came."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {DECLARED}"
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", framing]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    piece = b" " * 65536
    if chunked:
        piece = b"%x\r\n%s\r\n" % (len(piece), piece)
    sent, pending, closed = 0, b"", False
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sock.setblocking(False)
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while time.monotonic() < deadline:
            writable = [sock] if sent < GIVE_UP_AFTER and not closed else []
            readable, can_write, _ = select.select([sock], writable, [], 0.5)
            if readable:
                try:
                    data = sock.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                answer += data
                if b"\r\n" in answer or not data:
                    break
            elif can_write:
                pending = pending or piece
                try:
                    n = sock.send(pending)
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    closed = True  # the server stopped reading: read what it answered
                    continue
                sent += n
                pending = pending[n:]
    if not answer.startswith(b"HTTP/1.1 "):
        return None, sent
    return int(answer[9:12]), sent


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("method", "pattern"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_an_oversized_body_is_refused_early(
    server: LiveServer, targets: dict[str, str], method: str, pattern: str, chunked: bool
) -> None:
    assert pattern in targets, f"{method} {pattern} takes a body: add it to this test"
    headers: dict[str, Any] = {}
    if pattern.startswith("/api/"):
        headers = server.headers
    elif pattern == "/dashboard/login":
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
    started = time.monotonic()
    status, sent = _send_oversized(server.port, method, targets[pattern], headers, chunked=chunked)
    assert status is not None, (
        f"no answer after {sent} bytes in {time.monotonic() - started:.1f}s: the body is read "
        "beyond any limit"
    )
    if (method, pattern) not in NO_BODY:
        assert status == 413, status
    assert sent < GIVE_UP_AFTER
    # The server is fine afterwards.
    assert server.client.get("/healthz").status_code == 200


def test_the_sign_in_form_still_works_within_its_limit(server: LiveServer) -> None:
    answer = server.client.post(
        "/dashboard/login", data={"api_key": server.api_key, "next": "/dashboard/"}
    )
    assert answer.status_code == 303
