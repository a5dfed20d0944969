"""Missed-run detection at scale: N trackers whose expected pings fall due at the same moment.

    .venvs/server/bin/python benchmarks/detector.py [--trackers 10000] [--pg-url URL]

For SQLite (a fresh file) and PostgreSQL (a fresh schema; skipped if unreachable) it inserts N
``up`` trackers pinged at T0 with a one-hour period, then times detector passes with the clock
set to T0 + 1 h (every tracker turns ``late``) and T0 + 1 h + grace (every one turns ``down``),
and checks that each pass flagged all N. Each database is measured twice in the same run:

  * batched: the server's detector (state changes written ``CHUNK`` per transaction);
  * baseline: the same detector committing every state change on its own (chunk of 1), on
    ``--baseline-trackers`` trackers (it is slow).

It prints the seconds per pass, flips per second and the ratio of flips per second
batched/baseline, and the passes with one webhook subscribed to ``late`` and ``down``, whose
outbox row is written in the same transaction as each flip. A pass must take less than the
detector's interval (``DETECT_INTERVAL``) for "flagged within one interval plus grace" to hold
at this size.

It also times N ``new`` trackers that have never been pinged, scheduled at T0 with no stored
expectation yet: the pass that computes their first expected time (T0 + 1 h), then the late
and down passes, which flip them from ``new``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from telemhq_server import db
from telemhq_server.detector import CHUNK, DETECT_INTERVAL, Detector
from telemhq_server.flips import FlipListeners
from telemhq_server.webhooks import enqueue_flips

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.reliability.due_trackers import GRACE, PERIOD, T0, add_due_trackers


def add_webhook(engine: Engine, events: list[str]) -> None:
    with db.write_tx(engine) as conn:
        conn.execute(
            sa.insert(db.webhooks).values(
                url="http://127.0.0.1:9/hook",
                events=events,
                secret="whsec_benchmark_secret_0123456789",
                enabled=True,
                created_at=db.utcnow(),
            )
        )


@contextlib.contextmanager
def fresh_database(kind: str, pg_url: str) -> Iterator[Engine]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="telemhq-bench-") as folder:
            engine = db.make_engine(f"sqlite:///{folder}/telemhq.db")
            db.migrate(engine)
            yield engine
            engine.dispose()
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine = db.make_engine(f"{pg_url}?options=-csearch_path%3D{schema}")
    try:
        db.migrate(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def timed_pass(detector: Detector, at: dt.datetime, expected: int) -> float:
    started = time.perf_counter()
    flips = len(detector.tick(at).flips)
    elapsed = time.perf_counter() - started
    if flips != expected:
        raise SystemExit(f"a pass flagged {flips} trackers, expected {expected}")
    return elapsed


def measure(kind: str, pg_url: str, n: int, chunk: int, webhook: bool) -> tuple[float, float]:
    with fresh_database(kind, pg_url) as engine:
        add_due_trackers(engine, n)
        if webhook:
            add_webhook(engine, ["tracker.late", "tracker.down"])
        listeners = FlipListeners()
        listeners.add(enqueue_flips)  # as the app's webhooks register it
        detector = Detector(engine, chunk=chunk, listeners=listeners)
        late = timed_pass(detector, T0 + dt.timedelta(seconds=PERIOD), n)
        down = timed_pass(detector, T0 + dt.timedelta(seconds=PERIOD + GRACE), n)
        return late, down


def measure_never_pinged(kind: str, pg_url: str, n: int) -> tuple[float, float, float]:
    """Seconds of the pass that stores N first expectations, then of the late and down passes."""
    with fresh_database(kind, pg_url) as engine:
        add_due_trackers(engine, n, never_pinged=True)
        detector = Detector(engine)
        started = time.perf_counter()
        refreshed = detector.tick(T0).refreshed
        first = time.perf_counter() - started
        if refreshed != n:
            raise SystemExit(f"a pass stored {refreshed} first expectations, expected {n}")
        late = timed_pass(detector, T0 + dt.timedelta(seconds=PERIOD), n)
        down = timed_pass(detector, T0 + dt.timedelta(seconds=PERIOD + GRACE), n)
        return first, late, down


def reachable(url: str) -> bool:
    parsed = sa.engine.make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5432), 2):
            return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trackers", type=int, default=10_000)
    parser.add_argument("--baseline-trackers", type=int, default=2_000)
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    n = args.trackers
    kinds = ["sqlite"] + (["postgresql"] if reachable(args.pg_url) else [])
    print(f"{n} trackers due at once; detector interval {DETECT_INTERVAL:g} s, chunk {CHUNK}")
    for kind in kinds:
        late, down = measure(kind, args.pg_url, n, CHUNK, webhook=False)
        nb = min(n, args.baseline_trackers)
        base_late, base_down = measure(kind, args.pg_url, nb, 1, webhook=False)
        hook_late, hook_down = measure(kind, args.pg_url, n, CHUNK, webhook=True)
        print(f"\n{kind}:")
        print(f"  late pass  {late:7.2f} s  {n / late:8.0f} flips/s")
        print(f"  down pass  {down:7.2f} s  {n / down:8.0f} flips/s")
        print(
            f"  baseline (one commit per flip, {nb} trackers): late {nb / base_late:.0f} "
            f"flips/s, down {nb / base_down:.0f} flips/s"
        )
        ratio_late = (n / late) / (nb / base_late)
        ratio_down = (n / down) / (nb / base_down)
        print(f"  flips/s batched/baseline: late {ratio_late:.1f}x, down {ratio_down:.1f}x")
        print(
            f"  with a webhook (one outbox row per flip): late {hook_late:.2f} s, "
            f"down {hook_down:.2f} s"
        )
        first, new_late, new_down = measure_never_pinged(kind, args.pg_url, n)
        print(
            f"  never pinged: first expectations {first:.2f} s, late pass {new_late:.2f} s, "
            f"down pass {new_down:.2f} s"
        )


if __name__ == "__main__":
    main()
