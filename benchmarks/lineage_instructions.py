"""What an OpenLineage event costs the server against a plain ping, counted in instructions.

Run: ``.venvs/server/bin/python benchmarks/lineage_instructions.py [--requests N] [--skip-pg]``.
Needs valgrind; PostgreSQL on 127.0.0.1:5432 for its row (``--pg-url``). Takes a few minutes.

``ingest.py`` measures requests/s over HTTP, which is what the target is about, but on a
shared 2-core machine its figures move by 10-20% from run to run (more when other work loads
the machine). This one drives the server's ASGI app in process (no HTTP server, no load
generator: what the two paths share is left out) with 64 requests in flight, under valgrind's
cachegrind, and counts the instructions of the whole process (the writer's thread included;
the kernel's work, such as writing and syncing the database files, and on PostgreSQL the
database server's, are not counted). Each kind of request runs twice,
``N`` and ``N + EXTRA`` requests after the same warm-up; the difference leaves out start-up,
so the figures are per request: the documentation's ping body against a tracker with three
assertions (as in ``ingest.py``), and ``LINEAGE_EVENT`` as ``ingest.py`` posts it (a START of
a new run, then the COMPLETE of the run started 129 requests before, in turn).

Instructions are not time (code that runs cold retires fewer instructions per cycle, and an
fsync costs time, not instructions), so compare the ratio with ``ingest.py``'s rather than
expect them equal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cachegrind
from ingest import API_KEY, ASSERTIONS, BODY, LINEAGE_EVENT, pg_schema

EXTRA = 1024  # the larger run's extra requests (16 per sender): what the figures are measured over
IN_FLIGHT = 64
WARMUP = 1280


async def _call(
    app: Callable[..., Awaitable[None]],
    path: str,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
) -> tuple[int, bytes]:
    """One POST through the ASGI app, as an ASGI server would make it."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    answer: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        else:
            answer["body"] = message.get("body", b"")

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
        "http_version": "1.1",
    }
    await app(scope, receive, send)
    return answer["status"], answer["body"]


async def _drive(kind: str, requests: int, database_url: str) -> None:
    from telemhq_server.app import create_app
    from telemhq_server.config import Settings
    from telemhq_server.db import make_engine, migrate
    from telemhq_server.keys import ensure_admin_key

    engine = make_engine(database_url)
    migrate(engine)
    ensure_admin_key(engine, API_KEY)
    engine.dispose()
    app = create_app(
        Settings(database_url=database_url, api_key=API_KEY, retention_runs=100_000_000),
        tune_gc=True,  # as in a server process
    )
    lifespan: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan.put_nowait({"type": "lifespan.startup"})
    started = asyncio.Event()

    async def lifespan_send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    serving = asyncio.create_task(
        app({"type": "lifespan", "state": {}}, lifespan.get, lifespan_send)
    )
    await started.wait()
    admin = [(b"authorization", f"Bearer {API_KEY}".encode()), (b"host", b"bench")]
    tracker_body = json.dumps({"name": "bench", "assertions": ASSERTIONS}).encode()
    tracker = json.loads((await _call(app, "/api/v1/trackers", tracker_body, admin))[1])
    token = tracker["ping_url"].rsplit("/", 1)[1]
    key_body = json.dumps({"name": "bench"}).encode()
    key = json.loads((await _call(app, "/api/v1/ping-keys", key_body, admin))[1])["key"]
    template = LINEAGE_EVENT.replace("JOB", "bench").replace('"COMPLETE"', '"%s"')
    template = template.replace("RUN_ID", "%s")
    lineage_headers = [(b"authorization", f"Bearer {key}".encode())]
    ping_headers = [(b"content-type", b"application/json")]
    sent = 0

    def next_request() -> tuple[str, bytes, list[tuple[bytes, bytes]]]:
        nonlocal sent
        sent += 1
        if kind == "ping":
            return f"/ping/{token}", BODY.encode(), ping_headers
        event, run = "START", sent
        if sent % 2 == 0 and sent > 128:
            event, run = "COMPLETE", sent - 129
        body = template % (event, f"00000001-0000-4000-8000-{run:012x}")
        return "/api/v1/lineage", body.encode(), lineage_headers

    async def one() -> None:
        status, answer = await _call(app, *next_request())
        if status != 200:
            raise RuntimeError(f"{kind}: {status} {answer!r}")

    # In rounds of IN_FLIGHT requests sent together, so every batch the writer takes holds
    # them all, however fast the process runs: under valgrind the loop is some fifty times
    # slower and the fsync is not, so requests sent as answers come back would form smaller
    # batches, of sizes that vary from run to run.
    for _ in range((WARMUP + requests) // IN_FLIGHT):
        await asyncio.gather(*(one() for _ in range(IN_FLIGHT)))
    lifespan.put_nowait({"type": "lifespan.shutdown"})
    await serving


def _count(kind: str, requests: int, database_url: str) -> int:
    """Instructions of a child process serving ``requests`` requests of ``kind``."""
    return cachegrind.count_instructions(__file__, ["--child", kind, str(requests), database_url])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1280, help="N (a multiple of 64)")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, requests, url = args.child
        asyncio.run(_drive(kind, int(requests), url))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install -y valgrind)", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="telemhq-lineage-instr-")
    databases: list[tuple[str, Callable[[], str]]] = [
        ("sqlite", lambda: f"sqlite:///{work}/{uuid.uuid4().hex}.db")
    ]
    schemas: list[str] = []

    def pg() -> str:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        if not pg_schema(args.pg_url, schema, create=True):
            raise RuntimeError("PostgreSQL not reachable (--skip-pg to leave it out)")
        schemas.append(schema)
        sep = "&" if "?" in args.pg_url else "?"
        return f"{args.pg_url}{sep}options=-csearch_path%3D{schema}"

    if not args.skip_pg:
        databases.append(("postgresql", pg))
    print(f"instructions per request, over {EXTRA} requests, {IN_FLIGHT} in flight")
    print(f"{'database':<12}{'ping':>12}{'event':>12}{'event / ping':>14}")
    try:
        for name, fresh in databases:
            per: dict[str, float] = {}
            for kind in ("ping", "lineage"):
                small = _count(kind, args.requests, fresh())
                large = _count(kind, args.requests + EXTRA, fresh())
                per[kind] = (large - small) / EXTRA
            ratio = per["lineage"] / per["ping"]
            print(f"{name:<12}{per['ping']:>12,.0f}{per['lineage']:>12,.0f}{ratio:>13.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for schema in schemas:
            pg_schema(args.pg_url, schema, create=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
