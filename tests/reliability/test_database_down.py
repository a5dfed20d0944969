"""PostgreSQL goes away under the real server (a TCP relay between them is cut), then comes
back: pings are answered 503 and nothing is recorded, ``/healthz`` and the API say 503, and
once the database is back the same pings are stored, once, with no restart."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.live_server import LiveServer, free_port

pytestmark = [pytest.mark.slow, pytest.mark.services]


class Relay:
    """A TCP relay from a local port to PostgreSQL that can be cut and restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        with self._lock:
            if self._listener is not None:
                with contextlib.suppress(OSError):  # wakes the accept() in its thread
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except (OSError, ValueError):
            return


@pytest.fixture
def relay() -> Iterator[Relay]:
    relay = Relay(("127.0.0.1", 5432))
    yield relay
    relay.cut()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_pings_wait_for_a_database_that_comes_back(db_url: str, relay: Relay) -> None:
    relayed = db_url.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
    with LiveServer(relayed) as server:
        tracker = server.create_tracker(name="db-down")
        assert server.ping(tracker, {"ping_id": "before"}).status_code == 200

        relay.cut()
        started = time.monotonic()
        down = server.ping(tracker, {"ping_id": "while-down"})
        assert down.status_code == 503, down.text
        assert down.json() == {"ok": False, "error": "storage unavailable, nothing was recorded"}
        assert time.monotonic() - started < 30
        health = server.client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "error"
        assert server.api("GET", f"/trackers/{tracker['id']}").status_code == 503

        relay.restore()
        deadline = time.monotonic() + 30
        while (answer := server.ping(tracker, {"ping_id": "while-down"})).status_code != 200:
            assert answer.status_code == 503, answer.text
            assert time.monotonic() < deadline, "the server did not recover"
            time.sleep(0.5)
        assert server.client.get("/healthz").status_code == 200
        again = server.ping(tracker, {"ping_id": "while-down"})
        assert again.json()["duplicate"] is True
        stored = [run["ping_id"] for run in server.runs(tracker["id"])]
        assert sorted(stored) == ["before", "while-down"]
