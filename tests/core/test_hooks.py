"""pluggy hooks: enrich, scrub/drop, observe; a broken plugin never loses a ping."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import telemhq_plugins
from telemhq_plugins.core import Client, load_settings
from telemhq_plugins.core.delivery import DeliveryResult
from telemhq_plugins.core.payload import Ping
from telemhq_plugins.core.runs import Run
from tests.core.http_receiver import Receiver
from tests.core.recording import Recorder


class Team:
    @telemhq_plugins.hookimpl
    def telemhq_enrich_ping(self, ping: Ping) -> None:
        ping.fields["team"] = "data-platform"


class Scrubber:
    @telemhq_plugins.hookimpl
    def telemhq_filter_ping(self, ping: Ping) -> bool | None:
        ping.fields.pop("password", None)
        return False if ping.job == "noisy" else None


class Observer:
    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str]] = []

    @telemhq_plugins.hookimpl
    def telemhq_delivery_result(self, ping: Ping, result: DeliveryResult) -> None:
        self.seen.append((ping.job, result.outcome))


class Broken:
    @telemhq_plugins.hookimpl
    def telemhq_enrich_ping(self, ping: Ping) -> None:
        raise RuntimeError("plugin bug")


@pytest.fixture
def plugins() -> Iterator[list[object]]:
    registered: list[object] = []
    yield registered
    for plugin in registered:
        telemhq_plugins.plugin_manager().unregister(plugin)


def test_it_enriches_scrubs_drops_and_reports(recorder: Recorder, plugins: list[object]) -> None:
    observer = Observer()
    for plugin in (Team(), Scrubber(), observer):
        telemhq_plugins.plugin_manager().register(plugin)
        plugins.append(plugin)
    with telemhq_plugins.monitored("etl") as r:
        r.report(password="hunter2", rows=3)
    with telemhq_plugins.monitored("noisy"):
        pass
    [body] = recorder.bodies()
    assert body["team"] == "data-platform"
    assert body["rows"] == 3
    assert "password" not in body
    assert sorted(observer.seen) == [("etl", "delivered"), ("noisy", "filtered")]


def test_it_sends_the_ping_when_a_plugin_raises(
    recorder: Recorder, plugins: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    broken = Broken()
    telemhq_plugins.plugin_manager().register(broken)
    plugins.append(broken)
    with telemhq_plugins.monitored("etl"):
        pass
    [body] = recorder.bodies()
    assert body["job"] == "etl"
    assert "telemhq_enrich_ping hook raised" in caplog.text


def test_hooks_see_every_ping_of_a_batch_of_runs(plugins: list[object]) -> None:
    """Runs are queued as they are and built on the delivery thread: into ``Ping`` objects
    when a hook wants them, in a real batch request to a real receiver."""
    observer = Observer()
    for plugin in (Team(), Scrubber(), observer):
        telemhq_plugins.plugin_manager().register(plugin)
        plugins.append(plugin)
    with Receiver(batch=True) as receiver:
        settings = load_settings(
            env={}, config_file=os.devnull, base_url=f"http://127.0.0.1:{receiver.port}"
        )
        client = Client(settings, linger=0.5)
        for job in ("a", "b", "noisy", "c"):
            run = Run(job, url=receiver.url(), client=client)
            run.report(password="hunter2")
            run.finish("success")
        assert client.flush(10)
        client.close()
    assert receiver.batch_requests == 1
    assert sorted(p["job"] for p in receiver.stored.values()) == ["a", "b", "c"]
    assert all(p["team"] == "data-platform" for p in receiver.stored.values())
    assert not any("password" in p for p in receiver.stored.values())
    assert sorted(observer.seen) == [
        ("a", "delivered"),
        ("b", "delivered"),
        ("c", "delivered"),
        ("noisy", "filtered"),
    ]
