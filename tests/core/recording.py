"""A client whose HTTP edge records what it is sent (for unit tests of what pings contain).

The ``recorder`` fixture installs one as the process-wide client for the test."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from telemhq_plugins.core.config import load_settings
from telemhq_plugins.core.delivery import Client, set_client
from telemhq_plugins.core.hookspecs import hookimpl
from telemhq_plugins.core.payload import Ping
from telemhq_plugins.core.plugins import plugin_manager
from telemhq_plugins.core.results import DeliveryResult


class Recorder:
    def __init__(self, **settings: Any) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        transport = httpx.MockTransport(self._handle)
        options = {"base_url": "http://telemhq.test", "token": "tok", **settings}
        self.client = Client(load_settings(env={}, **options), transport=transport)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/ping/_batch"):  # a server without batches
            return httpx.Response(404, json={"ok": False})
        self.requests.append((str(request.url), json.loads(request.content)))
        return httpx.Response(200, json={"ok": True})

    def bodies(self) -> list[dict[str, Any]]:
        assert self.client.flush(5)
        return [body for _, body in self.requests]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    previous = set_client(rec.client)
    yield rec
    set_client(previous)
    rec.client.close()


_made: list[Client] = []


def close_after_test(client: Client) -> Client:
    """Have ``client`` closed (its kept-alive sockets too) when the test ends."""
    _made.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Close the clients a test made, as an application would."""
    yield
    while _made:
        _made.pop().close(5)


class Results:
    """A plugin noting the last delivery result per ping id, the ping it was about, and the
    threads the hook ran on."""

    def __init__(self) -> None:
        self.results: dict[str, DeliveryResult] = {}
        self.pings: dict[str, Ping] = {}
        self.threads: set[str] = set()

    @hookimpl
    def telemhq_delivery_result(self, ping: Ping, result: DeliveryResult) -> None:
        self.results[ping.ping_id] = result
        self.pings[ping.ping_id] = ping
        self.threads.add(threading.current_thread().name)

    def outcome(self, ping_id: str) -> str | None:
        result = self.results.get(ping_id)
        return None if result is None else result.outcome


@pytest.fixture
def results() -> Iterator[Results]:
    """A :class:`Results` plugin registered for the test."""
    plugin = Results()
    plugin_manager().register(plugin)
    yield plugin
    plugin_manager().unregister(plugin)
