"""The outbox between ping-making threads and the delivery thread: bound, hand-off, done."""

from __future__ import annotations

import threading
import time

from telemhq_plugins.core.outbox import Outbox


def test_it_refuses_items_beyond_its_bound_and_keeps_the_earlier_ones() -> None:
    box: Outbox[int] = Outbox(3)
    assert [box.put(i) for i in range(5)] == [True, True, True, False, False]
    taken: list[int] = []
    assert box.take(taken, 10) == 3
    assert taken == [0, 1, 2]


def test_pending_counts_what_was_taken_until_it_is_done() -> None:
    box: Outbox[str] = Outbox(10)
    box.put("a")
    box.put("b")
    taken: list[str] = []
    box.take(taken, 1)
    assert (len(box), box.pending()) == (1, 2)  # one waiting, one in the consumer's hands
    assert box.wait_done(0.05) is False
    box.done(1)
    box.take(taken, 5)
    box.done(1)
    assert box.pending() == 0
    assert box.wait_done(0.05) is True


def test_wait_done_returns_once_the_consumer_reports_the_last_item() -> None:
    box: Outbox[int] = Outbox(10)
    box.put(1)
    taken: list[int] = []
    box.take(taken, 10)

    def finish_later() -> None:
        time.sleep(0.2)
        box.done(1)

    threading.Thread(target=finish_later).start()
    assert box.wait_done(10) is True
    assert box.pending() == 0


def test_wait_wakes_the_consumer_when_an_item_is_put() -> None:
    box: Outbox[int] = Outbox(10)
    woke = threading.Event()

    def consumer() -> None:
        if box.wait(10):
            woke.set()

    thread = threading.Thread(target=consumer)
    thread.start()
    time.sleep(0.1)  # the consumer is asleep by now
    assert not woke.is_set()
    box.put(7)
    thread.join(10)
    assert woke.is_set()
    assert box.wait(0) is True  # still waiting to be taken


def test_several_producers_and_one_consumer_lose_and_repeat_nothing() -> None:
    box: Outbox[tuple[int, int]] = Outbox(100_000)
    producers, per_producer = 4, 5_000
    received: list[tuple[int, int]] = []
    finished = threading.Event()

    def consume() -> None:
        while not (finished.is_set() and box.pending() == 0):
            if box.wait(0.01):
                batch: list[tuple[int, int]] = []
                box.take(batch, 250)
                received.extend(batch)
                box.done(len(batch))

    def produce(p: int) -> None:
        for i in range(per_producer):
            assert box.put((p, i))
            if i % 500 == 0:
                time.sleep(0.001)  # let the consumer fall asleep now and then

    consumer = threading.Thread(target=consume)
    consumer.start()
    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert box.wait_done(30)
    finished.set()
    consumer.join(30)
    assert sorted(received) == [(p, i) for p in range(producers) for i in range(per_producer)]
    for p in range(producers):  # each producer's items in the order it put them
        assert [i for q, i in received if q == p] == list(range(per_producer))


def test_pop_all_empties_what_waits_without_touching_what_the_consumer_holds() -> None:
    box: Outbox[int] = Outbox(10)
    for i in range(4):
        box.put(i)
    held: list[int] = []
    box.take(held, 1)
    assert box.pop_all() == [1, 2, 3]
    assert box.pending() == 1
    box.done(1)
    assert box.pending() == 0


def _sleeper(box: Outbox[int], at_least: int) -> tuple[threading.Thread, threading.Event]:
    woke = threading.Event()

    def consumer() -> None:
        box.wait(30, at_least=at_least)
        woke.set()

    thread = threading.Thread(target=consumer)
    thread.start()
    time.sleep(0.1)  # asleep by now
    return thread, woke


def test_a_consumer_waiting_for_a_batch_is_woken_by_the_item_that_completes_it() -> None:
    box: Outbox[int] = Outbox(10)
    thread, woke = _sleeper(box, at_least=3)
    box.put(1)
    box.put(2)
    assert not woke.wait(0.2)  # two puts did not wake it
    box.put(3)
    thread.join(10)
    assert woke.is_set()


def test_hurry_wakes_a_waiting_consumer_and_keeps_it_from_waiting_again() -> None:
    box: Outbox[int] = Outbox(10)
    thread, woke = _sleeper(box, at_least=5)
    box.hurry()
    thread.join(10)
    assert woke.is_set()
    started = time.monotonic()
    assert box.wait(30, at_least=5) is False  # urgent: no waiting at all
    assert time.monotonic() - started < 5
    box.hurry(False)
    assert box.wait(0.05, at_least=5) is False  # waits (the short timeout) again
