"""Celery benchmark: what the TelemHQ instrumentation costs a worker, side by side.

Run: ``.venvs/celery/bin/python benchmarks/celery_overhead.py [--tasks N] [--rounds R]``
(``make bench`` runs it too). Needs the machine's Redis on 127.0.0.1:6379.

One real worker (``start_worker``, solo pool, in this process, Redis broker) drains trivial
tasks published beforehand, in segments of N tasks that alternate between uninstrumented and
instrumented (``CeleryInstrumentor`` is switched on and off from inside the last task of a
segment) in the order off, on, on, off, off, on, ... so that a slow drift of the machine
weighs on both alike. One worker for all segments keeps its start-up, connections and memory
layout out of the comparison, which separate workers per round did not: their rounds differed
by up to 10 % with identical settings.

Throughput is measured inside the worker, from the first task body of a segment to the last
(everything between two task bodies - Celery's own work and our signal handlers - is in).
Instrumented pings go over real HTTP to a no-op receiver in a subprocess that, like the
reference server, takes batches on ``/ping/_batch``; the delivery thread sends them while the
worker runs, as in production, and an instrumented segment ends only once its pings are
delivered (``flush``, which also cuts the delivery linger short), so all their cost is in it.

Prints tasks/s for both (median of the segments), the relative loss, the µs the
instrumentation adds per task, and the CPU time per task of the worker's thread and of the
delivery thread (steadier than wall time on a busy machine). Target: at most 5 % fewer
tasks/s. Exit status 1 when missed. More ``--rounds`` narrow the noise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from celery import Celery
from celery.contrib.testing.worker import start_worker

from telemhq_plugins.celery import CeleryInstrumentor
from telemhq_plugins.core import Client, load_settings, set_client

TARGET_LOSS = 0.05
REDIS = "redis://127.0.0.1:6379"

RECEIVER = textwrap.dedent(
    """
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else each keep-alive answer waits ~40 ms
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            answer = b"{}"
            if self.path == "/ping/_batch":  # the reference server's batch endpoint
                # Counted, not parsed: this stand-in for the server shares the worker's two
                # cores here, and only the worker's own cost is being measured.
                n = body.count(b'{"ping":')
                answer = b'{"results":[' + b",".join([b'{"status":200,"ok":true}'] * n) + b"]}"
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """
)


class Segments:
    """Driven by the task body: times each segment of ``n`` tasks and switches the
    instrumentation between segments, following ``plan`` (True: instrumented)."""

    def __init__(self, n: int, plan: list[bool], switch: Callable[[bool], None]) -> None:
        self.n, self.plan, self.switch = n, plan, switch
        self.count = 0
        self.start = 0.0
        self.cpu_start = (0.0, 0.0)
        #: per segment: instrumented?, tasks/s, worker thread and delivery thread CPU µs/task
        self.results: list[tuple[bool, float, float, float]] = []
        self.done = threading.Event()

    def tick(self) -> None:
        if self.done.is_set():
            return
        position = self.count % self.n
        self.count += 1
        if position == 0:
            self.start, self.cpu_start = time.perf_counter(), _cpu_now()
        elif position == self.n - 1:
            instrumented = self.plan[len(self.results)]
            if instrumented:
                self.switch(True)  # the same mode again: flush what is pending
            elapsed = time.perf_counter() - self.start
            cpu = _cpu_now()
            per_task = 1e6 / (self.n - 1)
            self.results.append(
                (
                    instrumented,
                    (self.n - 1) / elapsed,
                    (cpu[0] - self.cpu_start[0]) * per_task,
                    (cpu[1] - self.cpu_start[1]) * per_task,
                )
            )
            if len(self.results) == len(self.plan):
                self.switch(False)
                self.done.set()
            else:
                self.switch(self.plan[len(self.results)])


def _cpu_now() -> tuple[float, float]:
    """CPU seconds of the calling thread (the worker's, in a task body) and of TelemHQ's
    delivery thread (0 while there is none)."""
    delivery = 0.0
    for thread in threading.enumerate():
        if thread.name == "telemhq-delivery" and thread.ident is not None:
            with contextlib.suppress(OSError):  # it may have ended just now
                delivery = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return time.thread_time(), delivery


@contextlib.contextmanager
def receiver_port() -> Iterator[int]:
    """The no-op batch receiver in a subprocess (off the worker's GIL), while in use."""
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None
    try:
        yield int(receiver.stdout.readline())
    finally:
        receiver.terminate()
        receiver.wait()


def bench_client(port: int, queue_size: int, **options: Any) -> Client:
    """The process-wide client, sending every ping to the receiver on ``port``."""
    client = Client(
        load_settings(
            env={},
            config_file=os.devnull,
            base_url=f"http://127.0.0.1:{port}",
            token="bench",
            timeout=600.0,
            queue_size=queue_size,
        ),
        **options,
    )
    set_client(client)
    return client


def make_app(db: int, prefix: str, tick: Callable[[], None]) -> tuple[Celery, Any]:
    app = Celery("telemhq_bench", set_as_current=False)
    app.conf.update(
        broker_url=f"{REDIS}/{db}",
        broker_transport_options={"global_keyprefix": prefix},
        broker_connection_retry_on_startup=True,
        task_default_queue=f"{prefix}bench",
        task_ignore_result=True,
        worker_hijack_root_logger=False,
    )

    @app.task(name="bench.noop", shared=False)
    def noop() -> None:
        tick()

    return app, noop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2_000, help="tasks per segment")
    parser.add_argument("--rounds", type=int, default=16, help="segments per mode")
    args = parser.parse_args()
    with receiver_port() as port:
        return report(args, *run_segments(args, bench_client(port, 4 * args.tasks)))


def run_segments(args: argparse.Namespace, client: Client) -> tuple[Segments, dict[str, int]]:
    """Drain the planned segments through one worker; the segments and the client's counters."""
    instrumentor = CeleryInstrumentor()

    def switch(instrumented: bool) -> None:
        if instrumented:
            instrumentor.instrument()  # a no-op when it is on already
            client.flush(120)  # the segment's pings, delivered within the segment
        else:
            instrumentor.uninstrument()

    # A warm-up segment (imports, connections, caches), then off/on in an ABBA order.
    plan = [False] + [i % 4 in (1, 2) for i in range(2 * args.rounds)]
    segments = Segments(args.tasks, plan, switch)
    db = 1 + os.getpid() % 15
    prefix = f"telemhq-bench-{os.getpid()}-"
    app, task = make_app(db, prefix, segments.tick)
    try:
        for _ in range(args.tasks * len(plan)):
            task.delay()
        with start_worker(app, pool="solo", perform_ping_check=False, loglevel="ERROR"):
            if not segments.done.wait(timeout=1800):
                raise SystemExit(f"the worker ran {segments.count} tasks in 30 minutes")
    finally:
        instrumentor.uninstrument()
        _cleanup(db, prefix)
        app.close()
    return segments, client.stats()


def report(args: argparse.Namespace, segments: Segments, stats: dict[str, int]) -> int:
    """Print the figures; 1 when the target is missed."""
    measured = segments.results[1:]
    off = [r for r in measured if not r[0]]
    on = [r for r in measured if r[0]]
    off_rate, on_rate = statistics.median(r[1] for r in off), statistics.median(r[1] for r in on)
    off_cpu = statistics.median(r[2] for r in off)
    on_cpu = statistics.median(r[2] for r in on)
    delivery_cpu = statistics.median(r[3] for r in on)
    loss = 1 - on_rate / off_rate
    # Each instrumented segment against the uninstrumented one beside it (ABBA pairs).
    paired = statistics.median(1 - a[1] / b[1] for a, b in zip(on, off, strict=True))
    verdict = "ok" if loss <= TARGET_LOSS else "MISSED"
    print(
        f"celery worker, solo pool, Redis broker: {args.rounds} segments of {args.tasks} "
        "trivial tasks per mode, alternating in one worker"
    )
    print(f"  without instrumentation: {off_rate:6.0f} tasks/s  (segments: {_fmt(off)})")
    print(f"  instrumented:            {on_rate:6.0f} tasks/s  (segments: {_fmt(on)})")
    print(
        f"  {loss * 100:.1f} % fewer tasks/s (median of paired segments: {paired * 100:.1f} %), "
        f"{(1 / on_rate - 1 / off_rate) * 1e6:+.1f} µs per task "
        f"(target <= {TARGET_LOSS:.0%}: {verdict})"
    )
    print(
        f"  CPU per task: worker thread {off_cpu:.1f} -> {on_cpu:.1f} µs ({on_cpu - off_cpu:+.1f}: "
        f"signal handlers, building and queueing pings), delivery thread {delivery_cpu:.1f} µs "
        "(serialising, batching, HTTP)"
    )
    print(
        "  The delivery thread shares the worker's GIL and, here, its 2 cores with Redis and\n"
        "  the loopback receiver."
    )
    print(f"  pings: {stats}")
    return 1 if loss > TARGET_LOSS else 0


def _fmt(results: list[tuple[bool, float, float, float]]) -> str:
    return ", ".join(f"{r[1]:.0f}" for r in results)


def _cleanup(db: int, prefix: str) -> None:
    import redis

    conn = redis.Redis.from_url(f"{REDIS}/{db}")
    try:
        keys = list(conn.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            conn.delete(*keys)
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
