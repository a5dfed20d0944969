"""The on-disk spool: the SQLite file itself (claims, bounds, several processes), and replay
through a real client against a loopback server that goes down and comes back."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from telemhq_plugins.core.config import Settings
from telemhq_plugins.core.delivery import Client
from telemhq_plugins.core.payload import Ping
from telemhq_plugins.core.spool import SPOOL_FILENAME, Spool
from tests.core.http_receiver import Receiver, Reply, blackhole, free_port
from tests.core.recording import Results, close_after_test
from tests.kit import wait_until

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# -- the file ----------------------------------------------------------------------------------


def test_it_stores_a_ping_once_per_ping_id(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    assert spool.add("p1", "http://x/ping/t", b'{"a":1}')
    assert spool.add("p1", "http://x/ping/t", b'{"a":2}')  # a replayed duplicate: ignored

    (claimed,) = spool.claim()
    assert (claimed.ping_id, claimed.url, claimed.body, claimed.attempts) == (
        "p1",
        "http://x/ping/t",
        b'{"a":1}',
        0,
    )
    assert spool.count() == 1
    spool.delete("p1")
    assert spool.count() == 0


def test_it_uses_wal_mode(tmp_path: Path) -> None:
    Spool(tmp_path).add("p1", "u", b"{}")
    conn = sqlite3.connect(tmp_path / SPOOL_FILENAME)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_it_hands_a_claimed_row_to_one_claimer_until_the_lease_ends(tmp_path: Path) -> None:
    clock = Clock()
    first, second = Spool(tmp_path, clock=clock), Spool(tmp_path, clock=clock)
    first.add("p1", "u", b"{}")

    assert [c.ping_id for c in first.claim(lease=30)] == ["p1"]
    assert second.claim() == []  # claimed by the first process
    clock.now += 31  # the first process died mid-replay: its lease ends
    assert [c.ping_id for c in second.claim()] == ["p1"]


def test_it_releases_a_row_for_a_later_retry(tmp_path: Path) -> None:
    clock = Clock()
    spool = Spool(tmp_path, clock=clock)
    spool.add("p1", "u", b"{}")
    spool.claim()
    spool.release("p1", delay=10)

    assert spool.claim() == []
    assert spool.next_due() == pytest.approx(10)
    clock.now += 10
    (again,) = spool.claim()
    assert again.attempts == 1


def test_it_keeps_a_ping_being_retried_away_from_other_processes(tmp_path: Path) -> None:
    clock = Clock()
    writer, other = Spool(tmp_path, clock=clock), Spool(tmp_path, clock=clock)
    writer.add("p1", "u", b"{}", claim_for=20)

    assert other.claim() == []
    clock.now += 21
    assert [c.ping_id for c in other.claim()] == ["p1"]


def test_it_claims_oldest_first_up_to_the_limit(tmp_path: Path) -> None:
    clock = Clock()
    spool = Spool(tmp_path, clock=clock)
    for i in range(5):
        spool.add(f"p{i}", "u", b"{}")
        clock.now += 1

    assert [c.ping_id for c in spool.claim(limit=3)] == ["p0", "p1", "p2"]
    assert [c.ping_id for c in spool.claim(limit=3)] == ["p3", "p4"]


def test_it_drops_the_oldest_when_full(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    spool = Spool(tmp_path, max_rows=3, clock=clock)
    for i in range(5):
        spool.add(f"p{i}", "u", b"{}")
        clock.now += 1

    assert spool.count() == 3
    assert spool.dropped == 2
    assert sorted(c.ping_id for c in spool.claim()) == ["p2", "p3", "p4"]
    assert "spool" in caplog.text
    assert "full" in caplog.text


def test_it_drops_the_oldest_beyond_its_byte_bound(tmp_path: Path) -> None:
    clock = Clock()
    spool = Spool(tmp_path, max_bytes=250, clock=clock)
    for i in range(5):
        spool.add(f"p{i}", "u", b"x" * 100)
        clock.now += 1
    assert spool.count() == 2  # 200 of the 250 bytes
    assert spool.dropped == 3
    assert sorted(c.ping_id for c in spool.claim()) == ["p3", "p4"]
    spool.add("big", "u", b"x" * 1000)  # alone over the bound: kept, the others go
    assert spool.count() == 1
    assert spool.dropped == 5


def test_it_never_raises_when_the_spool_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool directory should be")
    spool = Spool(blocker)

    assert spool.add("p1", "u", b"{}") is False
    assert spool.claim() == []
    assert spool.count() == -1
    spool.delete("p1")
    spool.release("p1", 1.0)


def _python(code: str, env: dict[str, str] | None = None, *args: str) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=full_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_it_is_safe_for_several_processes(tmp_path: Path) -> None:
    # Three processes write 60 rows each and claim concurrently until nothing is left:
    # every row is written once and claimed by exactly one of them.
    code = f"""
        import json, sys
        from telemhq_plugins.core.spool import Spool
        spool = Spool({str(tmp_path)!r})
        name = sys.argv[1]
        claimed = []
        for i in range(60):
            assert spool.add(f"{{name}}-{{i}}", "u", b"{{}}")
            if i % 10 == 9:
                claimed += [c.ping_id for c in spool.claim(limit=7)]
        while batch := spool.claim(limit=7):
            claimed += [c.ping_id for c in batch]
        print(json.dumps(claimed))
        """
    workers = [_python(code, None, f"w{n}") for n in range(3)]
    outputs = [w.communicate(timeout=60) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err

    claimed = [pid for out, _ in outputs for pid in json.loads(out)]
    expected = {f"w{n}-{i}" for n in range(3) for i in range(60)}
    assert len(claimed) == len(expected)  # nobody claimed a row twice
    assert set(claimed) == expected
    assert Spool(tmp_path).count() == 180


# -- replay through the client -----------------------------------------------------------------


def make_client(spool_dir: Path, **kw: Any) -> Client:
    settings = Settings(
        timeout=kw.pop("timeout", 2.0),
        max_retries=kw.pop("max_retries", 1),
        flush_timeout=10.0,
        spool_dir=str(spool_dir),
    )
    kw.setdefault("sleep", lambda seconds: time.sleep(0.001))
    kw.setdefault("breaker_base", 0.2)
    kw.setdefault("replay_interval", 0.2)
    client = Client(settings, **kw)
    close_after_test(client)
    return client


@pytest.fixture
def port() -> int:
    return free_port()


def test_it_replays_spooled_pings_once_the_server_is_back(tmp_path: Path, port: int) -> None:
    url = f"http://127.0.0.1:{port}/ping/tok"
    client = make_client(tmp_path)
    pings = [Ping(job=f"job{i}") for i in range(5)]
    for ping in pings:
        assert client.enqueue(ping, url)
    assert client.flush(10)

    assert client.stats()["spooled"] == 5  # server down: nothing lost, all on disk
    assert Spool(tmp_path).count() == 5

    with Receiver(port) as server:
        assert server.wait_for(5)
        wait_until(lambda: Spool(tmp_path).count() == 0, "an empty spool", timeout=15)
        assert sorted(server.stored) == sorted(p.ping_id for p in pings)
        for ping in pings:
            assert server.received[ping.ping_id] == 1  # each stored, and sent, exactly once
            assert server.stored[ping.ping_id]["job"] == ping.job
    assert client.stats()["replayed"] == 5


def test_the_client_takes_the_spool_bound_and_replay_interval_from_its_settings(
    tmp_path: Path, port: int, results: Results
) -> None:
    """TELEMHQ_SPOOL_MAX_BYTES bounds the client's spool; TELEMHQ_REPLAY_INTERVAL paces the
    replay (no replay_interval argument here); a replayed ping runs the result hook."""
    url = f"http://127.0.0.1:{port}/ping/tok"
    pings = [Ping(job=f"job{i}", fields={"rows": i}) for i in range(6)]
    settings = Settings(
        timeout=2.0,
        max_retries=0,
        flush_timeout=10.0,
        spool_dir=str(tmp_path),
        spool_max_bytes=3 * len(pings[0].to_json()) + 5,  # room for three
        replay_interval=0.2,
    )
    client = Client(settings, sleep=lambda _s: None, breaker_base=0.2)
    close_after_test(client)
    for ping in pings:
        assert client.enqueue(ping, url)
        assert client.flush(10)
    kept = [p.ping_id for p in pings[-3:]]
    assert Spool(tmp_path).count() == 3

    with Receiver(port) as server:
        assert server.wait_for(3, timeout=10)  # well before the default 30 s interval
        assert sorted(server.stored) == sorted(kept)
    wait_until(
        lambda: all(results.outcome(k) == "delivered" for k in kept),
        "every kept ping delivered",
        timeout=15,
    )
    last = results.pings[pings[-1].ping_id]
    assert (last.job, last.fields, last.run_id) == ("job5", {"rows": 5}, pings[-1].run_id)


def test_it_replays_what_an_exited_process_left_behind(tmp_path: Path, port: int) -> None:
    # A script pings while the server is down, and exits; later, another process that uses
    # the same spool directory (here: this one) delivers its ping.
    done = _python(
        """
        import telemhq_plugins
        with telemhq_plugins.monitored(job="offline-script") as r:
            r.report(records_processed=7)
        """,
        {
            "TELEMHQ_PING_URL": f"http://127.0.0.1:{port}/ping/tok",
            "TELEMHQ_SPOOL_DIR": str(tmp_path),
            "TELEMHQ_MAX_RETRIES": "0",
        },
    )
    _, err = done.communicate(timeout=60)
    assert done.returncode == 0, err
    assert Spool(tmp_path).count() == 1

    with Receiver(port) as server:
        # The script spooled its ping due after its 5 s cool-down; this process's clock is
        # set past that rather than waiting. Its worker replays the spool on start.
        later = Spool(tmp_path, clock=lambda: time.time() + 10)
        make_client(tmp_path, spool=later).start()
        assert server.wait_for(1)
        wait_until(lambda: Spool(tmp_path).count() == 0, "an empty spool", timeout=15)
        (payload,) = server.stored.values()
        assert payload["job"] == "offline-script"
        assert payload["records_processed"] == 7
        assert sum(server.received.values()) == 1


def test_it_spools_pending_pings_when_exit_cannot_wait(tmp_path: Path) -> None:
    # A black-holed server holds the first ping for the whole attempt timeout; the process
    # exits after flush_timeout and writes the in-flight and queued pings to the spool.
    with blackhole() as base:
        done = _python(
            """
            from telemhq_plugins.core.delivery import get_client
            from telemhq_plugins.core.payload import Ping
            import os
            url = os.environ["TELEMHQ_PING_URL"]
            for i in range(3):
                get_client().enqueue(Ping(ping_id=f"p{i}"), url)
            """,
            {
                "TELEMHQ_PING_URL": f"{base}/ping/tok",
                "TELEMHQ_SPOOL_DIR": str(tmp_path),
                "TELEMHQ_TIMEOUT": "60",
                "TELEMHQ_FLUSH_TIMEOUT": "0.5",
            },
        )
        _, err = done.communicate(timeout=60)
    assert done.returncode == 0, err

    spool = Spool(tmp_path, clock=lambda: time.time() + 3600)  # past any claim
    assert sorted(c.ping_id for c in spool.claim()) == ["p0", "p1", "p2"]


def test_it_replays_each_ping_once_with_two_processes_sharing_the_spool(
    tmp_path: Path, port: int
) -> None:
    seed = Spool(tmp_path)
    url = f"http://127.0.0.1:{port}/ping/tok"
    ids = [f"ping-{i}" for i in range(40)]
    for ping_id in ids:
        seed.add(ping_id, url, json.dumps({"ping_id": ping_id}).encode())

    with Receiver(port) as server:
        replayer = """
            import time
            from telemhq_plugins.core.delivery import get_client
            client = get_client()
            client.start()  # replays the spool on start
            deadline = time.monotonic() + 30
            while client.spool.count() and time.monotonic() < deadline:
                time.sleep(0.05)
            """
        env = {"TELEMHQ_SPOOL_DIR": str(tmp_path)}
        procs = [_python(replayer, env) for _ in range(2)]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err

        assert sorted(server.stored) == sorted(ids)
        assert set(server.received.values()) == {1}  # claims: no ping sent twice
    assert Spool(tmp_path).count() == 0


def test_it_keeps_a_ping_rejected_for_good_out_of_the_spool(tmp_path: Path, port: int) -> None:
    url = f"http://127.0.0.1:{port}/ping/tok"
    spool = Spool(tmp_path)
    spool.add("bad", url, b"{}")
    with Receiver(port) as server:
        server.script(Reply(404))
        make_client(tmp_path).start()
        assert server.wait_for(answered=1)
        wait_until(lambda: spool.count() == 0, "an empty spool", timeout=15)
        assert server.stored == {}


def test_it_spools_with_the_servers_retry_after(tmp_path: Path) -> None:
    with Receiver() as server:
        server.script(Reply(429, {"Retry-After": "120"}))
        client = make_client(tmp_path, max_retries=3)
        first, second = Ping(), Ping()
        client.enqueue(first, server.url())
        client.enqueue(second, server.url())
        assert client.flush(10)

        # Out of budget for a 120 s wait: kept for later, and the server is left alone
        # meanwhile (the second ping was not even tried).
        assert client.stats()["spooled"] == 2
        assert server.received[first.ping_id] == 1
        assert server.received[second.ping_id] == 0
        due = Spool(tmp_path).next_due()
        assert due is not None
        assert 100 < due <= 120


def _fork_child_pings(url: str) -> None:
    from telemhq_plugins.core import delivery

    delivery.get_client().enqueue(Ping(ping_id="from-child"), url)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_it_shares_the_spool_with_a_forked_child(tmp_path: Path, port: int) -> None:
    import multiprocessing

    from telemhq_plugins.core import delivery

    url = f"http://127.0.0.1:{port}/ping/tok"
    client = make_client(tmp_path, max_retries=0)
    previous = delivery.set_client(client)
    try:
        client.enqueue(Ping(ping_id="from-parent"), url)  # server down: spooled
        assert client.flush(10)
        child = multiprocessing.get_context("fork").Process(target=_fork_child_pings, args=(url,))
        child.start()
        child.join(30)
        assert child.exitcode == 0
    finally:
        delivery.set_client(previous)
    wait_until(lambda: Spool(tmp_path).count() == 2, "two spooled pings", timeout=15)

    with Receiver(port) as server:
        assert server.wait_for(2)
        wait_until(lambda: Spool(tmp_path).count() == 0, "an empty spool", timeout=15)
        assert sorted(server.stored) == ["from-child", "from-parent"]
        assert set(server.received.values()) == {1}
