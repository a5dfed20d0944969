"""``TargetCache``: a job's target resolved once per delivery client."""

from __future__ import annotations

from collections.abc import Callable

from telemhq_plugins.core.delivery import Client
from telemhq_plugins.core.runs import Target, resolve_target
from telemhq_plugins.core.targets import TargetCache
from tests.core.recording import Recorder, close_after_test


def test_a_target_is_resolved_once_per_key_and_client() -> None:
    first, second = Recorder(), Recorder(token="other")
    close_after_test(first.client)
    close_after_test(second.client)
    cache: TargetCache[str] = TargetCache()
    asked: list[tuple[str, Client]] = []

    def resolver(job: str) -> Callable[[Client], Target | None]:
        def resolve(client: Client) -> Target | None:
            asked.append((job, client))
            return resolve_target(job, client=client)

        return resolve

    one = cache.get("etl.load", resolver("etl.load"), client=first.client)
    again = cache.get("etl.load", resolver("etl.load"), client=first.client)
    assert one is again
    assert one is not None
    assert one.url.endswith("/ping/tok")
    assert cache.client is first.client
    assert cache.entries == {"etl.load": one}
    other = cache.get("etl.load", resolver("etl.load"), client=second.client)
    assert other is not None
    assert other.url.endswith("/ping/other")  # a new client: resolved again
    assert asked == [("etl.load", first.client), ("etl.load", second.client)]


def test_not_monitored_is_remembered_too() -> None:
    rec = Recorder()
    close_after_test(rec.client)
    cache: TargetCache[str] = TargetCache()
    calls: list[Client] = []

    def resolve(client: Client) -> Target | None:
        calls.append(client)
        return None

    assert cache.get("scratch", resolve, client=rec.client) is None
    assert cache.get("scratch", resolve, client=rec.client) is None
    assert calls == [rec.client]
    cache.clear()
    assert cache.get("scratch", resolve, client=rec.client) is None
    assert len(calls) == 2
