"""Delivery against a real HTTP server on loopback: retries, timeouts, the circuit breaker,
the bounded queue, fork and process exit. Backoff sleeps are injected (recorded, not slept)
so the suite stays fast; nothing here asserts on how long something took, except that a job
facing a dead server finishes far inside the per-attempt timeout."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from telemhq_plugins.core import delivery
from telemhq_plugins.core.config import Settings
from telemhq_plugins.core.delivery import Client
from telemhq_plugins.core.hookspecs import hookimpl
from telemhq_plugins.core.payload import Ping
from telemhq_plugins.core.plugins import plugin_manager
from telemhq_plugins.core.retry import retry_after
from telemhq_plugins.core.spool import Spool
from tests.core.http_receiver import Receiver, Reply, blackhole, free_port
from tests.core.recording import Results, close_after_test
from tests.kit import HeldEndpoint, client_for, new_ping_key, wait_for_runs, wait_until
from tests.live_server import LiveServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


class Sleeps:
    """Injected backoff sleep: records each wait, sleeps a token amount."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(0.001)


def make_client(**kw: Any) -> Client:
    settings = Settings(
        timeout=kw.pop("timeout", 2.0),
        max_retries=kw.pop("max_retries", 3),
        flush_timeout=kw.pop("flush_timeout", 10.0),
        queue_size=kw.pop("queue_size", 10_000),
        spool_dir=kw.pop("spool_dir", None),
    )
    kw.setdefault("sleep", Sleeps())
    client = Client(settings, **kw)
    close_after_test(client)
    return client


def test_it_delivers_a_queued_ping_with_its_payload(receiver: Receiver, results: Results) -> None:
    client = make_client()
    ping = Ping(status="success", job="etl.load", fields={"records_processed": 450})

    assert client.enqueue(ping, receiver.url()) is True
    assert client.flush(10)

    stored = receiver.stored[ping.ping_id]
    assert stored["status"] == "success"
    assert stored["job"] == "etl.load"
    assert stored["records_processed"] == 450
    assert results.results[ping.ping_id].outcome == "delivered"
    assert results.threads == {"telemhq-delivery"}  # hooks run on the worker, not the job
    assert client.stats()["delivered"] == 1


def test_it_retries_a_500_and_delivers_once(receiver: Receiver) -> None:
    receiver.script(Reply(500), Reply(503))
    sleeps = Sleeps()
    client = make_client(sleep=sleeps)
    ping = Ping()

    result = client.send(ping, receiver.url())

    assert result.outcome == "delivered"
    assert result.attempts == 3
    assert receiver.received[ping.ping_id] == 3
    assert list(receiver.stored) == [ping.ping_id]
    # exponential backoff with equal jitter: attempt n waits in [b*2^(n-1)/2, b*2^(n-1)]
    assert len(sleeps.waits) == 2
    assert 0.25 <= sleeps.waits[0] <= 0.5
    assert 0.5 <= sleeps.waits[1] <= 1.0


def test_it_honours_retry_after_on_429(receiver: Receiver) -> None:
    receiver.script(Reply(429, {"Retry-After": "3"}))
    sleeps = Sleeps()
    client = make_client(sleep=sleeps)
    ping = Ping()

    result = client.send(ping, receiver.url())

    assert result.outcome == "delivered"
    assert result.attempts == 2
    assert sleeps.waits == [3.0]
    assert receiver.received[ping.ping_id] == 2


def test_it_does_not_retry_a_400(receiver: Receiver) -> None:
    receiver.script(Reply(400))
    sleeps = Sleeps()
    client = make_client(sleep=sleeps)
    ping = Ping()

    result = client.send(ping, receiver.url())

    assert result.outcome == "rejected"
    assert result.status_code == 400
    assert result.attempts == 1
    assert sleeps.waits == []
    assert receiver.received[ping.ping_id] == 1
    assert receiver.stored == {}


def test_it_gives_up_after_max_retries_without_raising(receiver: Receiver) -> None:
    receiver.script(*[Reply(502)] * 10)
    client = make_client(max_retries=2)
    ping = Ping()

    result = client.send(ping, receiver.url())

    assert result.outcome == "failed"
    assert result.attempts == 3
    assert result.status_code == 502
    assert receiver.received[ping.ping_id] == 3
    assert receiver.stored == {}


def test_it_treats_a_redirect_as_rejected(receiver: Receiver) -> None:
    receiver.script(Reply(301, {"Location": "https://elsewhere.example/ping/tok"}))
    client = make_client()

    result = client.send(Ping(), receiver.url())

    assert result.outcome == "rejected"
    assert result.error is not None
    assert "elsewhere.example" in result.error


def test_it_retries_a_slow_server_after_the_attempt_timeout(receiver: Receiver) -> None:
    # The first answer comes after the client gave up; the retry is answered at once. The
    # slow request is still recorded by the server: dedupe by ping_id keeps it to one run.
    receiver.script(Reply(delay=1.5))
    client = make_client(timeout=0.3, ping_budget=5.0)
    ping = Ping()

    result = client.send(ping, receiver.url())

    assert result.outcome == "delivered"
    assert result.attempts == 2
    assert receiver.wait_for(answered=2)
    assert receiver.received[ping.ping_id] == 2
    assert list(receiver.stored) == [ping.ping_id]


def test_it_delivers_to_a_slow_server_within_the_timeout(receiver: Receiver) -> None:
    receiver.script(Reply(delay=0.3))
    client = make_client(timeout=5.0)
    ping = Ping()

    assert client.enqueue(ping, receiver.url())
    assert client.flush(10)

    assert receiver.received[ping.ping_id] == 1
    assert ping.ping_id in receiver.stored


def test_it_neither_raises_nor_blocks_the_job_when_the_server_is_down(
    results: Results,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/ping/tok"  # connection refused
    client = make_client(max_retries=1, breaker_base=60.0)
    pings = [Ping() for _ in range(50)]

    accepted = [client.enqueue(p, url) for p in pings]  # returns at once: the worker sends

    assert all(accepted)
    assert client.flush(10)
    outcomes = [results.results[p.ping_id].outcome for p in pings]
    # The first ping spends its retries; the circuit opens and the rest are dropped at once
    # (no spool configured) instead of each costing a full retry budget.
    assert outcomes[0] == "failed"
    assert results.results[pings[0].ping_id].attempts == 2
    assert set(outcomes[1:]) == {"dropped"}
    assert client.stats()["dropped"] == 49


def test_it_closes_the_circuit_after_the_cool_down(receiver: Receiver, results: Results) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/ping/tok"
    client = make_client(max_retries=0, breaker_base=0.2)
    first, second = Ping(), Ping()
    client.enqueue(first, url)
    client.enqueue(second, url)
    assert client.flush(10)
    assert [results.results[p.ping_id].outcome for p in (first, second)] == ["failed", "dropped"]

    with Receiver(port) as back:
        time.sleep(0.25)  # let the cool-down pass
        third = Ping()
        client.enqueue(third, url)
        assert client.flush(10)
        assert results.results[third.ping_id].outcome == "delivered"
        assert list(back.stored) == [third.ping_id]


def test_it_bounds_the_time_one_ping_occupies_the_worker() -> None:
    with blackhole() as base:
        # Ten attempts of 0.3 s would take 3 s; the budget stops retrying after ~0.5 s.
        client = make_client(timeout=0.3, max_retries=9, ping_budget=0.5)
        result = client.send(Ping(), f"{base}/ping/tok")

    assert result.outcome == "failed"
    assert 1 <= result.attempts < 10
    assert result.error is not None
    assert "Timeout" in result.error


def test_it_drops_and_counts_when_the_queue_is_full(receiver: Receiver) -> None:
    gate = threading.Event()
    receiver.script(Reply(gate=gate))  # the worker waits on the first ping's answer
    client = make_client(queue_size=2)
    pings = [Ping() for _ in range(10)]

    accepted = [client.enqueue(p, receiver.url()) for p in pings]
    gate.set()

    # In flight: the first ping, plus what the worker drained into its batch (at most the
    # queue's two); waiting: the queue's two. The rest are dropped and counted.
    assert 2 <= sum(accepted) <= 5
    assert client.dropped == 10 - sum(accepted)
    assert client.flush(10)
    assert sorted(receiver.stored) == sorted(
        p.ping_id for p, ok in zip(pings, accepted, strict=True) if ok
    )


def test_it_never_raises_from_enqueue_on_a_bad_url() -> None:
    client = make_client(max_retries=0)
    assert client.enqueue(Ping(), "not a url at all") is True
    assert client.flush(10)
    assert client.stats()["failed"] + client.stats()["rejected"] == 1


def test_it_lets_a_filter_plugin_drop_a_ping(receiver: Receiver, results: Results) -> None:
    class DropSecret:
        @hookimpl
        def telemhq_filter_ping(self, ping: Ping) -> bool | None:
            return False if ping.job == "secret" else None

    plugin = DropSecret()
    plugin_manager().register(plugin)
    try:
        client = make_client()
        kept, dropped = Ping(job="public"), Ping(job="secret")
        client.enqueue(kept, receiver.url())
        client.enqueue(dropped, receiver.url())
        assert client.flush(10)
    finally:
        plugin_manager().unregister(plugin)

    assert list(receiver.stored) == [kept.ping_id]
    assert results.results[dropped.ping_id].outcome == "filtered"


def test_it_uses_an_injected_transport() -> None:
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(200, json={"ok": True, "state": "up"})

    client = make_client(transport=httpx.MockTransport(handler))
    result = client.send(Ping(job="x"), "http://telemhq.test/ping/tok")

    assert result.ok
    assert result.response == {"ok": True, "state": "up"}
    assert len(seen) == 1


def test_it_starts_a_new_worker_when_the_last_one_ended(receiver: Receiver) -> None:
    client = make_client()
    first = Ping(job="before")
    assert client.enqueue(first, receiver.url())
    assert client.flush(10)
    worker = client._worker
    assert worker is not None

    def broken(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("the worker's loop broke")

    client._outbox.wait = broken  # type: ignore[method-assign]
    client._outbox.hurry()  # wake the worker: it calls wait() again and ends
    worker.join(10)
    assert not worker.is_alive()
    assert client._worker is None  # the ended worker cleared itself
    del client._outbox.wait  # the class's wait again
    client._outbox.hurry(False)

    second = Ping(job="after")
    assert client.enqueue(second, receiver.url())
    assert client.flush(10)
    assert client._worker is not None
    assert client._worker is not worker
    assert second.ping_id in receiver.stored


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("0", 0.0), ("9999", 3600.0), ("soon", None), ("-3", 0.0)],
)
def test_it_parses_retry_after(header: str, expected: float | None) -> None:
    response = httpx.Response(429, headers={"Retry-After": header})
    assert retry_after(response) == expected


def test_it_parses_an_http_date_retry_after() -> None:
    import email.utils

    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = retry_after(httpx.Response(503, headers={"Retry-After": when}))
    assert seconds is not None
    assert 25 <= seconds <= 31


# -- fork and process exit ---------------------------------------------------------------------


def _child_pings(url: str, ping_id: str) -> None:
    client = delivery.get_client()
    client.enqueue(Ping(ping_id=ping_id, job="child"), url)
    # No flush: the multiprocessing child exits through os._exit, which skips atexit; the
    # client's exit finalizer must deliver it.


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_it_restarts_the_worker_in_a_forked_child_without_resending(
    receiver: Receiver,
) -> None:
    client = make_client()
    previous = delivery.set_client(client)
    try:
        gate = threading.Event()
        receiver.script(Reply(gate=gate))  # keeps the parent's worker busy across the fork
        url = receiver.url()
        parent_pings = [Ping(job="parent") for _ in range(3)]
        for ping in parent_pings:
            client.enqueue(ping, url)
        assert client._outbox.pending() >= 2  # pending in the parent at fork time

        context = multiprocessing.get_context("fork")
        child = context.Process(target=_child_pings, args=(url, "child-ping"))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        gate.set()
        assert client.flush(10)
    finally:
        delivery.set_client(previous)

    assert receiver.wait_for(4)
    assert receiver.stored["child-ping"]["job"] == "child"
    # The parent's pending pings were sent once, by the parent: the child got a fresh queue.
    for ping in parent_pings:
        assert receiver.received[ping.ping_id] == 1
    assert receiver.received["child-ping"] == 1


def _run_python(
    code: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
    full_env.update(env)
    full_env["PYTHONPATH"] = ROOT
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_it_delivers_from_a_process_that_exits_right_after_pinging(receiver: Receiver) -> None:
    done = _run_python(
        """
        import telemhq_plugins
        with telemhq_plugins.monitored(job="quick-script") as r:
            r.report(records_processed=3)
        """,
        {"TELEMHQ_PING_URL": receiver.url()},
    )

    assert done.returncode == 0, done.stderr
    assert receiver.wait_for(1)
    (payload,) = receiver.stored.values()
    assert payload["job"] == "quick-script"
    assert payload["status"] == "success"
    assert payload["records_processed"] == 3


def test_it_does_not_hold_process_exit_beyond_flush_timeout() -> None:
    # A black-holed server and a 60 s per-attempt timeout: the job still finishes and the
    # interpreter exits after about flush_timeout (0.5 s). The bound asserted is generous
    # (half the attempt timeout) so a busy machine cannot make it flaky.
    with blackhole() as base:
        started = time.monotonic()
        done = _run_python(
            """
            import telemhq_plugins
            with telemhq_plugins.monitored(job="stuck-server"):
                pass
            print("job done")
            """,
            {
                "TELEMHQ_PING_URL": f"{base}/ping/tok",
                "TELEMHQ_TIMEOUT": "60",
                "TELEMHQ_FLUSH_TIMEOUT": "0.5",
            },
        )
        elapsed = time.monotonic() - started

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "job done"
    assert "Traceback" not in done.stderr
    assert elapsed < 30


# --- batching --------------------------------------------------------------------------------


def _held_then_many(receiver: Receiver, client: Client, n: int) -> list[Ping]:
    """One ping held at the server while ``n`` more queue up behind it."""
    gate = threading.Event()
    receiver.script(Reply(gate=gate))
    first = Ping()
    assert client.enqueue(first, receiver.url())
    assert receiver.wait_for(arrived=receiver.arrived + 1)
    pings = [Ping(fields={"n": i}) for i in range(n)]
    for ping in pings:
        assert client.enqueue(ping, receiver.url())
    gate.set()
    assert client.flush(10)
    return [first, *pings]


def test_it_sends_waiting_pings_in_one_batch_request(results: Results) -> None:
    with Receiver(batch=True) as receiver:
        client = make_client()
        pings = _held_then_many(receiver, client, 30)
        assert sorted(receiver.stored) == sorted(p.ping_id for p in pings)
        assert all(count == 1 for count in receiver.received.values())
        assert receiver.batch_requests == 1  # the 30 that waited went together
        assert client.stats()["delivered"] == 31
        assert {p.ping_id: results.results[p.ping_id].outcome for p in pings} == {
            p.ping_id: "delivered" for p in pings
        }


def test_flush_cuts_the_linger_short() -> None:
    with Receiver(batch=True) as receiver:
        client = make_client(linger=20.0, max_linger=60.0)
        ping = Ping()
        assert client.enqueue(ping, receiver.url())
        assert receiver.wait_for(arrived=1, timeout=1.0) is False  # lingering for company
        assert client.flush(5)  # far less than one linger step
        assert list(receiver.stored) == [ping.ping_id]


def test_a_lone_ping_waits_one_linger_step_not_the_whole_linger() -> None:
    with Receiver(batch=True) as receiver:
        client = make_client(linger=0.05, max_linger=30.0)
        assert client.enqueue(Ping(), receiver.url())
        assert receiver.wait_for(arrived=1, timeout=10)  # long before the 30 s max_linger


def test_pings_that_keep_coming_share_one_batch_up_to_the_max_linger() -> None:
    with Receiver(batch=True) as receiver:
        client = make_client(linger=1.0, max_linger=30.0)
        pings = [Ping(fields={"n": i}) for i in range(12)]
        for ping in pings:  # one every 0.15 s: each 1 s linger step sees new ones arrive
            assert client.enqueue(ping, receiver.url())
            time.sleep(0.15)
        assert (receiver.arrived, receiver.batch_requests) == (0, 0)  # lingering, past a step
        assert client.flush(10)
        assert receiver.batch_requests == 1
        assert sorted(receiver.stored) == sorted(p.ping_id for p in pings)
        assert client.stats()["delivered"] == 12  # counted without any result hook


def test_it_sends_one_request_per_ping_to_a_server_without_batches() -> None:
    with Receiver(batch=False) as receiver:
        client = make_client()
        pings = _held_then_many(receiver, client, 10)
        more = _held_then_many(receiver, client, 10)
        assert sorted(receiver.stored) == sorted(p.ping_id for p in pings + more)
        assert receiver.batch_refusals == 1  # asked once, then remembered
        assert client.stats()["delivered"] == 22


def test_a_batch_answered_413_is_halved_and_later_batches_stay_small() -> None:
    """A server whose batch limit is below the client's: the batch is split in halves until
    it fits, no ping goes alone, and the next batches are cut to the size that fitted."""
    probe = Ping(fields={"n": 0}).to_json()
    with Receiver(batch=True, max_batch_bytes=12 * (len(probe) + 40)) as receiver:
        client = make_client()
        pings = _held_then_many(receiver, client, 40)
        assert sorted(receiver.stored) == sorted(p.ping_id for p in pings)
        assert receiver.arrived == 1  # the held ping; the 40 went in batches, none alone
        assert 1 <= receiver.batch_too_large <= 2  # 40 refused, maybe 20, then 10s fit
        assert receiver.batch_requests >= 4
        refused = receiver.batch_too_large

        more = _held_then_many(receiver, client, 40)
        assert sorted(receiver.stored) == sorted(p.ping_id for p in pings + more)
        assert receiver.arrived == 2
        assert receiver.batch_too_large == refused  # remembered: no 413 again
        assert client.stats()["delivered"] == 82
        assert client.stats()["rejected"] == 0


def test_it_retries_one_by_one_what_a_failed_batch_did_not_settle() -> None:
    with Receiver(batch=True) as receiver:
        client = make_client()
        gate = threading.Event()
        receiver.script(Reply(gate=gate), Reply(status=503))  # the single, then the batch
        first = Ping()
        assert client.enqueue(first, receiver.url())
        assert receiver.wait_for(arrived=1)
        pings = [Ping() for _ in range(5)]
        for ping in pings:
            client.enqueue(ping, receiver.url())
        gate.set()
        assert client.flush(10)
        assert sorted(receiver.stored) == sorted(p.ping_id for p in [first, *pings])
        assert client.stats()["delivered"] == 6
        assert client.stats()["failed"] == 0


def test_current_client_reads_the_process_client_without_creating_one() -> None:
    previous = delivery.set_client(None)
    try:
        assert delivery.current_client() is None
        assert delivery.current_client() is None  # asking creates nothing
        client = make_client()
        delivery.set_client(client)
        assert delivery.current_client() is client
        assert delivery.get_client() is client
    finally:
        delivery.set_client(previous)


def test_a_short_exit_flush_spools_the_rest_and_a_long_lived_process_replays_it(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """``TELEMHQ_FLUSH_TIMEOUT=0.2`` with a spool: a process whose server is slow waits 0.2 s
    at exit and leaves its ping in the spool; a long-lived process (``keep_replaying``)
    delivers it, once."""
    key = new_ping_key(live_server)
    spool_dir = tmp_path / "spool"
    with HeldEndpoint(live_server.base_url) as held:  # the short-lived process's server hangs
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")},
            "TELEMHQ_CONFIG": os.devnull,
            "TELEMHQ_BASE_URL": held.url,
            "TELEMHQ_PING_KEY": key,
            "TELEMHQ_SPOOL_DIR": str(spool_dir),
            "TELEMHQ_FLUSH_TIMEOUT": "0.2",
            "TELEMHQ_TIMEOUT": "30",
        }
        code = (
            "from telemhq_plugins.core.runs import start_run\n"
            "start_run('short-exit', run_id='short-1').finish('success')\n"
        )
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
        assert Spool(spool_dir).count() == 1
        held.release()
        replayer = client_for(live_server, spool_dir=str(spool_dir), replay_interval=0.5)
        try:
            assert delivery.keep_replaying(replayer)
            wait_until(lambda: replayer.stats()["replayed"] == 1, "the replay")
        finally:
            replayer.close()
    (run,) = wait_for_runs(live_server, "short-exit", 1)
    assert run["run_id"] == "short-1"
    assert Spool(spool_dir).count() == 0


def test_keep_replaying_does_nothing_without_a_spool(live_server: LiveServer) -> None:
    client = client_for(live_server)
    try:
        assert not delivery.keep_replaying(client)
        assert client.stats()["queued"] == 0
    finally:
        client.close()
