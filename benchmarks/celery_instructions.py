"""Celery benchmark, counted in instructions: what the instrumentation adds to each task.

Run: ``.venvs/celery/bin/python benchmarks/celery_instructions.py [--tasks N]`` (``make bench``
runs it too). Needs valgrind and the machine's Redis on 127.0.0.1:6379; takes a few minutes.

``celery_overhead.py`` measures tasks/s, which is what the target is about, to about half a
percent on a shared 2-core machine, in a minute and a half. This one counts the
instructions the whole worker process executes (every thread: the worker's, TelemHQ's delivery
thread, HTTP to a loopback receiver included) under valgrind's cachegrind, which depends far
less on what else the machine does: per task, two runs of one build have differed by up to
0.2% (about 12,000 instructions: the worker's own timers and polling run as often as
valgrind's speed lets them), so differences of a few thousand are noise. A worker drains
``N`` and ``N + 500`` trivial tasks, each with and without ``CeleryInstrumentor``; the
difference between the two sizes leaves out start-up, so the figures are per task:
instructions without instrumentation, instructions added with it, and their ratio.

Instructions are not time: code that runs cold (ours, between Celery's) retires fewer
instructions per cycle, so the wall-clock share is larger than the instruction share.
Under valgrind the worker runs some fifty times slower, which would shrink the delivery
thread's batches (it lingers for a time, not a count); the client here lingers until a full
batch (up to 1,000 pings), as it fills at full speed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from celery.contrib.testing.worker import start_worker

from telemhq_plugins.celery import CeleryInstrumentor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cachegrind
from celery_overhead import _cleanup, bench_client, make_app, receiver_port

EXTRA = 500  # the larger run's extra tasks: what the per-task figures are measured over


def child(instrumented: bool, tasks: int, port: int) -> None:
    """The measured process: one worker drains ``tasks`` tasks, then every ping is sent."""
    # Full batches, as at full speed (see the module docstring).
    client = bench_client(port, 10 * tasks, max_linger=3600.0)
    done = threading.Event()
    count = 0

    def tick() -> None:
        nonlocal count
        count += 1
        if count == tasks:
            done.set()

    db = 1 + os.getpid() % 15
    prefix = f"telemhq-instr-{os.getpid()}-"
    app, task = make_app(db, prefix, tick)
    if instrumented:
        CeleryInstrumentor().instrument()
    try:
        for _ in range(tasks):
            task.delay()
        with start_worker(app, pool="solo", perform_ping_check=False, loglevel="ERROR"):
            if not done.wait(3600):
                raise SystemExit(f"the worker ran {count} of {tasks} tasks in an hour")
        client.flush(600)
        if instrumented and client.stats()["delivered"] != tasks:
            raise SystemExit(f"delivered {client.stats()} of {tasks} pings")
    finally:
        CeleryInstrumentor().uninstrument()
        _cleanup(db, prefix)
        app.close()


def count_instructions(instrumented: bool, tasks: int, port: int) -> int:
    return cachegrind.count_instructions(
        __file__, ["--child", "on" if instrumented else "off", str(tasks), str(port)]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200, help="tasks in the smaller run")
    parser.add_argument(
        "--child", nargs=3, metavar=("MODE", "TASKS", "PORT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        mode, tasks, port = args.child
        child(mode == "on", int(tasks), int(port))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: skipped (apt-get install valgrind)")
        return 0

    runs = [(on, n) for n in (args.tasks, args.tasks + EXTRA) for on in (False, True)]
    with receiver_port() as port, ThreadPoolExecutor(max_workers=2) as pool:  # valgrind per core
        counted = pool.map(lambda r: count_instructions(*r, port), runs)
        refs = dict(zip(runs, counted, strict=True))

    small, large = args.tasks, args.tasks + EXTRA
    off = (refs[(False, large)] - refs[(False, small)]) / EXTRA
    on = (refs[(True, large)] - refs[(True, small)]) / EXTRA
    print(
        "celery worker, solo pool, Redis broker: instructions per trivial task "
        f"(cachegrind, {small} and {large} tasks)"
    )
    print(f"  without instrumentation: {off:12,.0f}")
    print(f"  instrumented:            {on:12,.0f}")
    print(f"  added:                   {on - off:12,.0f}  ({(on - off) / off * 100:.2f} % more)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
