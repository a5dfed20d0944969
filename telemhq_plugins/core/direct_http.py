"""A lean HTTP/1.1 POST for delivery's batch requests: ``http.client`` on one kept-alive
connection per server.

Why not httpx for these: a batch request is sent from a thread that shares the GIL with the
job (a busy Celery worker), and its CPU cost is the job's loss. httpx spends several times the
standard library's CPU on one request, in its client, transport and connection-pool layers,
for the same bytes (measured in docs/benchmarks.md).
httpx stays the path for everything else: single pings with their retries, ``Client.send``,
custom transports (tests) and proxies.

It is used only where httpx would connect directly: :func:`proxied` tells when the environment
names a proxy for the URL's scheme (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, any case),
and then delivery keeps httpx, which honours it. TLS trusts what httpx trusts
(``httpx.create_ssl_context()``: certifi, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``).
"""

from __future__ import annotations

import http.client
import select
import ssl
import urllib.request
from typing import Final
from urllib.parse import urlsplit

import httpx

__all__ = ["DirectPoster", "proxied"]

#: what a kept-alive connection the server has closed raises when reused.
_STALE: Final = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    BrokenPipeError,
)


def proxied(url: str) -> bool:
    """True when the environment names a proxy for ``url``'s scheme (httpx would use it)."""
    proxies = urllib.request.getproxies()
    return bool(proxies.get(urlsplit(url).scheme) or proxies.get("all"))


class DirectPoster:
    """POSTs bodies over one kept-alive connection per server (``scheme://host:port``).

    For one thread at a time (delivery's worker). :meth:`post` raises ``OSError`` or
    ``http.client.HTTPException`` when no answer came, after one retry on a fresh connection
    if a reused one turned out closed (the server may have received the request: delivery's
    batches are idempotent, the server keeps one run per ``ping_id``)."""

    def __init__(self, timeout: float, headers: dict[str, str]) -> None:
        self.timeout = timeout
        self.headers = headers
        self._connections: dict[tuple[str, str], http.client.HTTPConnection] = {}
        self._tls: ssl.SSLContext | None = None

    def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        """Send ``body`` to ``url``: the answer's status code and body."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise http.client.InvalidURL(f"cannot POST to {url!r}")
        key = (parts.scheme, parts.netloc)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn = self._connections.get(key)
        if conn is not None and _closed_by_peer(conn):
            conn.close()
            conn = None
        if conn is not None:
            try:
                return self._exchange(conn, target, body)
            except _STALE:
                conn.close()
        conn = self._connections[key] = self._connect(parts.scheme, parts.netloc)
        try:
            return self._exchange(conn, target, body)
        except BaseException:
            conn.close()
            del self._connections[key]
            raise

    def close(self) -> None:
        connections, self._connections = self._connections, {}
        for conn in connections.values():
            conn.close()

    def _connect(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        if scheme == "https":
            if self._tls is None:
                self._tls = httpx.create_ssl_context()
            return http.client.HTTPSConnection(netloc, timeout=self.timeout, context=self._tls)
        return http.client.HTTPConnection(netloc, timeout=self.timeout)

    def _exchange(
        self, conn: http.client.HTTPConnection, target: str, body: bytes
    ) -> tuple[int, bytes]:
        conn.request("POST", target, body=body, headers=self.headers)
        response = conn.getresponse()
        data = response.read()
        if response.will_close:
            conn.close()  # the next request opens a new connection
        return response.status, data


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection with something to read has been closed by the server
    (or sent what no request asked for): not reusable. As httpcore checks before reuse."""
    sock = conn.sock
    if sock is None:
        return False  # not connected: ``request`` connects
    try:
        if hasattr(select, "poll"):  # no descriptor limit, unlike select()
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
