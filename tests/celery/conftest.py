"""Fixtures for the Celery adapter tests: a real Redis broker on this test run's own database
number and key prefix, the test kit's reference server with a tracker per task, a real worker,
and instrumentation that is always taken off again."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker

from telemhq_plugins.celery import CeleryInstrumentor
from telemhq_plugins.core import Client
from tests.celery.server import TelemHQ
from tests.celery.tasks import configure, register
from tests.kit import client_for, process_client
from tests.live_server import LiveServer


@pytest.fixture(scope="session")
def redis_db(redis_url: str) -> Iterator[tuple[str, str]]:
    """``(broker URL, key prefix)`` of this run: a database number from the pid, a prefix from
    the pid too (another run on the same number still cannot collide); keys deleted after."""
    db = 1 + os.getpid() % 15
    prefix = f"telemhq-celery-test-{os.getpid()}-"
    url = f"{redis_url}/{db}"
    yield url, prefix
    conn = redis.Redis.from_url(url)
    try:
        keys = list(conn.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            conn.delete(*keys)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def server(session_live_server: LiveServer) -> TelemHQ:
    """The kit's reference server with a tracker per test task, for the whole session (the
    session's Celery app names one of its tokens)."""
    return TelemHQ(session_live_server)


def make_client(server: TelemHQ, **overrides: Any) -> Client:
    """The kit's client for the live server, each task to its own tracker
    (``TELEMHQ_TRACKERS``), the default tracker for the rest; ``overrides`` win."""
    settings: dict[str, Any] = {
        "token": server.default_token,
        "trackers": server.trackers_map,
        **overrides,
    }
    return client_for(server.live, **settings)


@pytest.fixture
def client(server: TelemHQ) -> Iterator[Client]:
    """The process-wide delivery client, pointed at the server for this test."""
    with process_client(make_client(server)) as current:
        yield current


@pytest.fixture
def instrumented(client: Client) -> Iterator[CeleryInstrumentor]:
    instrumentor = CeleryInstrumentor()
    instrumentor.instrument()
    yield instrumentor
    instrumentor.uninstrument()


def close_app(app: Celery) -> None:
    """Close what ``Celery.close()`` leaves open (it only forgets its broker pool): the broker
    connections and this thread's result backend connections, so no socket is left to the
    garbage collector (a ``ResourceWarning``, an error under ``filterwarnings = error``)."""
    try:
        backend = app._backend  # this thread's, without creating one
        if backend is not None:
            consumer = getattr(backend, "result_consumer", None)
            if consumer is not None:
                consumer.stop()
            client = getattr(backend, "client", None)
            if client is not None:
                client.connection_pool.disconnect()
        if app._pool is not None:
            app._pool.force_close_all()
    finally:
        app.close()


@pytest.fixture(scope="session")
def celery_app(redis_db: tuple[str, str], server: TelemHQ) -> Iterator[Celery]:
    app = Celery("telemhq_tests_inprocess", set_as_current=False)
    configure(app, *redis_db)
    app.tasks_for_tests = register(app, server.special_token)  # type: ignore[attr-defined]
    yield app
    close_app(app)


@pytest.fixture(scope="session")
def tasks(celery_app: Celery) -> dict[str, Any]:
    return celery_app.tasks_for_tests  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(scope="session")
def worker(celery_app: Celery) -> Iterator[Any]:
    """A real worker (solo pool) in a thread of this process, consuming the test queue."""
    with start_worker(celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING") as w:
        yield w


# Celery's Redis result backend (5.7) calls redis-py's deprecated ``setex``; that is theirs,
# not ours, and would otherwise turn every stored result into an error under
# ``filterwarnings = error``. Only that one message is ignored.
SETEX_WARNING = "ignore:Call to deprecated setex:DeprecationWarning"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.filterwarnings(SETEX_WARNING))
