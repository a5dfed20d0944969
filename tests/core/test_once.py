"""``OnceSet``: the first report of an event claims it, within a bound."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from telemhq_plugins.core.once import OnceSet


def test_an_event_is_claimed_once() -> None:
    seen = OnceSet(limit=10)
    assert seen.claim(("run-1", 1, "end")) is True
    assert seen.claim(("run-1", 1, "end")) is False
    assert seen.claim(("run-1", 2, "end")) is True  # the next attempt is its own event
    assert ("run-1", 1, "end") in seen
    assert len(seen) == 2


def test_the_oldest_events_are_forgotten_past_the_bound() -> None:
    seen = OnceSet(limit=3)
    for n in range(5):
        assert seen.claim(n)
    assert len(seen) == 3
    assert 0 not in seen
    assert 1 not in seen
    assert seen.claim(0) is True  # forgotten, so claimed again
    assert seen.claim(4) is False


def test_concurrent_reporters_claim_an_event_once() -> None:
    seen = OnceSet(limit=100)
    start = threading.Barrier(8)

    def claim(_: int) -> bool:
        start.wait()
        return seen.claim("event")

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(claim, range(8)))
    assert sorted(results) == [False] * 7 + [True]
