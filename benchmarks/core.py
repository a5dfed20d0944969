"""Core benchmark: what monitoring costs the job, and how fast the worker delivers.

Run: ``.venvs/core/bin/python benchmarks/core.py`` (``make bench`` runs it too). Prints:

* median µs per ``Client.enqueue`` on the caller's thread, and per ``start_run(...)`` +
  ``finish()`` as adapters do it, against a bare ``queue.Queue.put_nowait`` baseline;
* median µs per assertion evaluation for each operator, against a bare dict lookup;
* pings/s the background worker delivers to a no-op HTTP server on loopback (in a
  subprocess, so it does not share this process's GIL).

While the caller-side figures are taken, the worker is parked on a deliberately slow first
request, so they measure the job's thread alone. Each figure is the median of several
batches; the baselines are measured in the same run, so compare the ratios across machines
rather than the absolute numbers. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import queue
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import httpx

from telemhq_plugins.core.assertions import parse_assertion
from telemhq_plugins.core.config import Settings
from telemhq_plugins.core.delivery import Client
from telemhq_plugins.core.payload import Ping
from telemhq_plugins.core.runs import start_run

ENQUEUE_TARGET_US = 20.0
ASSERTION_TARGET_US = 3.0
BATCHES = 15
PER_BATCH = 2_000

_SERVER = textwrap.dedent(
    """
    import collections, json, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    GATES = collections.defaultdict(threading.Event)

    class NoOp(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real server
        wbufsize = 65536  # headers and body in one write (no Nagle/delayed-ACK stall)
        disable_nagle_algorithm = True
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            kind, _, name = self.path.rpartition("/")
            status, answer = 200, b'{"ok":true}'
            if kind.endswith("/hold"):  # park the caller until /open/<name>
                GATES[name].wait(120)
            elif kind.endswith("/open"):
                GATES[name].set()
            elif self.path == "/single/ping/_batch":  # a server without batches
                status = 404
            elif self.path == "/ping/_batch":  # the reference server's batch endpoint
                n = len(json.loads(body)["pings"])
                answer = json.dumps({"results": [{"status": 200, "ok": True}] * n}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NoOp)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """
)


def parked_client(base: str, gate: str) -> Client:
    """A client whose worker waits on a held request until ``/open/<gate>`` is posted."""
    client = Client(Settings(queue_size=10**7, timeout=150, flush_timeout=1.0))
    client.enqueue(Ping(job="park"), f"{base}/hold/{gate}")
    deadline = time.monotonic() + 10
    while client.stats()["queued"] and time.monotonic() < deadline:
        time.sleep(0.01)  # until the worker took it and waits on the socket
    time.sleep(0.1)  # past the worker's linger: it now waits on the held request
    return client


def per_op_us(batch: Callable[[], int], batches: int = BATCHES) -> float:
    """Median over ``batches`` runs of ``batch`` (which returns how many ops it did)."""
    samples = []
    for _ in range(batches):
        started = time.perf_counter_ns()
        ops = batch()
        samples.append((time.perf_counter_ns() - started) / ops / 1000)
    return statistics.median(samples)


def row(name: str, value: float, baseline: float, target: float | None = None) -> bool:
    ok = target is None or value <= target
    verdict = "" if target is None else f"  target <= {target:g} µs  {'OK' if ok else 'MISSED'}"
    print(f"  {name:<40} {value:8.2f} µs   x{value / baseline:6.1f} baseline{verdict}")
    return ok


def bench_caller_side(client: Client, url: str) -> bool:
    print(f"Caller's thread (median of {BATCHES} batches of {PER_BATCH}):")
    bare: queue.Queue[Any] = queue.Queue(10**7)
    pings = [Ping(job="bench") for _ in range(PER_BATCH)]

    def put_nowait() -> int:
        for ping in pings:
            bare.put_nowait((ping, url))
        return len(pings)

    def enqueue() -> int:
        for ping in pings:
            client.enqueue(ping, url)
        return len(pings)

    def run_and_finish() -> int:
        for _ in range(PER_BATCH):
            start_run("etl.load", token=url, orchestrator="bench", client=client).finish()
        return PER_BATCH

    baseline = per_op_us(put_nowait)
    print(f"  {'baseline: queue.Queue.put_nowait':<40} {baseline:8.2f} µs")
    ok = row("Client.enqueue", per_op_us(enqueue), baseline, ENQUEUE_TARGET_US)
    # Not held to the enqueue target: it also builds the Ping (ids, clock, UTC times).
    row("start_run(...) + finish()", per_op_us(run_and_finish), baseline)
    return ok


def bench_assertions() -> bool:
    print("Assertion evaluation (median of batches):")
    payload = {
        "status": "success",
        "records_processed": 450,
        "errors": 0,
        "cost_usd": 1.25,
        "eval_score": 0.91,
        "model": "gpt-4o-mini",
    }
    cases = {
        "=": "errors = 0",
        "!=": "status != failure",
        ">": "records_processed > 0",
        ">=": "eval_score >= 0.8",
        "<": "cost_usd < 5",
        "<=": "cost_usd <= 5",
        "in": 'status in ["success", "skipped"]',
        "~": 'model ~ "^gpt-4"',
    }
    n = 20_000

    def lookup() -> int:
        for _ in range(n):
            payload["records_processed"]
        return n

    baseline = per_op_us(lookup, 7)
    print(f"  {'baseline: dict lookup':<40} {baseline:8.3f} µs")
    ok = True
    for op, text in cases.items():
        assertion = parse_assertion(text)
        assert assertion.evaluate(payload).passed, text

        def evaluate(evaluate: Any = assertion.evaluate) -> int:
            for _ in range(n):
                evaluate(payload)
            return n

        ok &= row(f"{op:<3} {text}", per_op_us(evaluate, 7), baseline, ASSERTION_TARGET_US)
    return ok


def bench_worker(base: str, pings: int = 3_000) -> None:
    print("Background worker -> no-op HTTP server on loopback (one connection, keep-alive):")
    for label, prefix in (("batched (/ping/_batch)", ""), ("one request per ping", "/single")):
        client = parked_client(base, f"worker{prefix.replace('/', '-')}")
        url = f"{base}{prefix}/ping/tok"
        for _ in range(pings):
            client.enqueue(Ping(job="bench", fields={"records_processed": 450}), url)
        started = time.perf_counter()
        httpx.post(f"{base}/open/worker{prefix.replace('/', '-')}")
        if not client.flush(300):
            print(f"  {label}: the worker did not drain its queue in 300 s")
            continue
        elapsed = time.perf_counter() - started
        stats = client.stats()
        rate = pings / elapsed
        print(f"  {label + ':':24}{pings} pings in {elapsed:.2f} s: {rate:9,.0f} pings/s")
        assert stats["delivered"] == pings + 1, stats  # + the parking ping


def main() -> int:
    server = subprocess.Popen([sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        base = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        print(f"Python {sys.version.split()[0]}, no-op server at {base}")
        # The worker stays parked for the whole caller-side run: its queue just grows.
        ok = bench_caller_side(parked_client(base, "caller"), f"{base}/ping/tok")
        ok &= bench_assertions()
        bench_worker(base)
    finally:
        server.terminate()
        server.wait(10)
    print("All targets met." if ok else "Some targets were MISSED.")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
