"""DirectPoster (delivery's batch requests over ``http.client``) against real sockets: a
scripted HTTP/1.1 server that says exactly when it closes a kept-alive connection."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest

from telemhq_plugins.core import Client, load_settings
from telemhq_plugins.core.direct_http import DirectPoster, proxied
from telemhq_plugins.core.payload import Ping
from tests.kit import require_tool

from .http_receiver import Receiver

#: what the server does with request ``n`` (0-based) of connection ``c``.
Action = Literal["answer", "answer-close", "answer-hangup", "drop"]
Policy = Callable[[int, int], Action]


class ScriptedServer:
    """HTTP/1.1 on loopback, one thread per connection; records every request."""

    def __init__(self, policy: Policy, tls: ssl.SSLContext | None = None) -> None:
        self.policy = policy
        self.tls = tls
        self.connections = 0
        self.requests: list[tuple[int, str, dict[str, str], bytes]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            index = self.connections
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock, index), daemon=True).start()

    def _serve(self, sock: socket.socket, index: int) -> None:
        try:
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
            stream = sock.makefile("rb")
            for n in range(1_000):
                line = stream.readline()
                if not line:
                    return
                headers: dict[str, str] = {}
                while (header := stream.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = stream.read(int(headers.get("content-length", "0")))
                self.requests.append((index, line.decode().strip(), headers, body))
                action = self.policy(index, n)
                if action == "drop":
                    return
                answer = b'{"results":[]}'
                extra = b"Connection: close\r\n" if action == "answer-close" else b""
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + extra
                    + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
                if action in ("answer-close", "answer-hangup"):
                    return
        except (OSError, ssl.SSLError):
            return
        finally:
            sock.close()

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(policy: Policy = lambda c, n: "answer", **kw: ssl.SSLContext) -> ScriptedServer:
        servers.append(ScriptedServer(policy, **kw))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def poster() -> DirectPoster:
    return DirectPoster(5.0, {"User-Agent": "t", "Content-Type": "application/json"})


def test_it_posts_over_one_kept_alive_connection(serve: Callable[..., ScriptedServer]) -> None:
    server = serve()
    p = poster()
    url = f"http://127.0.0.1:{server.port}/ping/_batch?x=1"
    for i in range(3):
        assert p.post(url, b'{"n":%d}' % i) == (200, b'{"results":[]}')
    assert server.connections == 1
    (_, line, headers, body) = server.requests[2]
    assert line == "POST /ping/_batch?x=1 HTTP/1.1"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "t"
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert body == b'{"n":2}'
    p.close()


def test_it_reconnects_when_the_server_closed_the_idle_connection(
    serve: Callable[..., ScriptedServer],
) -> None:
    # The server closes after every answer without saying so (no "Connection: close", as a
    # server's keep-alive timeout does): the next post sees the closed socket before sending
    # anything on it, and opens another.
    server = serve(lambda c, n: "answer-hangup")
    p = poster()
    url = f"http://127.0.0.1:{server.port}/ping/_batch"
    assert p.post(url, b"1")[0] == 200
    time.sleep(0.05)  # the server's FIN arrives
    assert p.post(url, b"2")[0] == 200
    assert [(c, body) for c, _, _, body in server.requests] == [(0, b"1"), (1, b"2")]
    p.close()


def test_it_sends_again_once_when_a_kept_alive_connection_dies_under_a_request(
    serve: Callable[..., ScriptedServer],
) -> None:
    closing = serve(lambda c, n: "drop" if n == 1 else "answer")
    p = poster()
    url = f"http://127.0.0.1:{closing.port}/ping/_batch"
    assert p.post(url, b"1")[0] == 200
    # The second request on the first connection is dropped unanswered (a keep-alive race:
    # the server gave up on the connection as the request arrived): sent again, once.
    assert p.post(url, b"2")[0] == 200
    assert [(c, body) for c, _, _, body in closing.requests] == [(0, b"1"), (0, b"2"), (1, b"2")]
    p.close()


def test_it_opens_a_new_connection_after_connection_close(
    serve: Callable[..., ScriptedServer],
) -> None:
    server = serve(lambda c, n: "answer-close")
    p = poster()
    url = f"http://127.0.0.1:{server.port}/ping/_batch"
    assert [p.post(url, b"x")[0] for _ in range(3)] == [200, 200, 200]
    assert server.connections == 3
    p.close()


def test_it_raises_when_no_answer_comes_on_a_fresh_connection(
    serve: Callable[..., ScriptedServer],
) -> None:
    server = serve(lambda c, n: "drop")
    p = poster()
    with pytest.raises(http.client.RemoteDisconnected):
        p.post(f"http://127.0.0.1:{server.port}/ping/_batch", b"x")
    assert server.connections == 1  # not retried: a fresh connection is not stale
    with pytest.raises(http.client.InvalidURL):
        p.post("ftp://127.0.0.1/ping/_batch", b"x")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    require_tool("openssl", "a certificate for the TLS test")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_it_posts_over_tls_trusting_what_httpx_trusts(
    serve: Callable[..., ScriptedServer],
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert, key = certificate
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = serve(tls=tls)
    url = f"https://127.0.0.1:{server.port}/ping/_batch"
    with pytest.raises(ssl.SSLCertVerificationError):  # self-signed: not trusted by default
        poster().post(url, b"x")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # as httpx honours it
    p = poster()
    assert p.post(url, b"secret")[0] == 200
    assert p.post(url, b"again")[0] == 200
    assert [body for _, _, _, body in server.requests][-2:] == [b"secret", b"again"]
    assert server.connections == 2  # the refused handshake, then one kept-alive connection
    p.close()


def test_it_tells_when_the_environment_names_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    assert not proxied("http://telemhq.test/ping/_batch")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    assert proxied("https://telemhq.test/ping/_batch")
    assert not proxied("http://telemhq.test/ping/_batch")
    monkeypatch.setenv("ALL_PROXY", "http://proxy.test:3128")
    assert proxied("http://telemhq.test/ping/_batch")


def test_a_client_behind_a_proxy_sends_its_batches_through_it(
    serve: Callable[..., ScriptedServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a proxy in the environment, batches go through httpx, which uses it: the proxy
    (this scripted server) sees the absolute URL of the real destination."""
    proxy = serve()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    settings = load_settings(
        env={}, config_file=os.devnull, base_url="http://telemhq.test", token="tok"
    )
    client = Client(settings)
    url = settings.ping_url_for("job", None)
    assert url is not None
    for _ in range(3):
        client.enqueue(Ping(job="job"), url)
    client.flush(10)
    lines = [line for _, line, _, _ in proxy.requests]
    assert "POST http://telemhq.test/ping/_batch HTTP/1.1" in lines


def test_a_client_sends_batches_directly_to_a_real_receiver() -> None:
    """Without a proxy, batch requests take DirectPoster (a real server counts them) and the
    pings arrive, over one connection."""
    with Receiver(batch=True) as receiver:
        settings = load_settings(
            env={},
            config_file=os.devnull,
            base_url=f"http://127.0.0.1:{receiver.port}",
            token="tok",
        )
        client = Client(settings)
        url = settings.ping_url_for("job", None)
        assert url is not None
        pings = [Ping(job="job") for _ in range(5)]
        for ping in pings:
            client.enqueue(ping, url)
        assert client.flush(10)
        assert client.transport.direct is not None  # the batch went through DirectPoster
        assert set(receiver.stored) == {p.ping_id for p in pings}
        assert receiver.batch_requests >= 1
        client.close()
        assert client.transport.direct is None
