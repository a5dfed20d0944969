"""Ping ingest throughput of the reference server, against a bare ASGI app on the same server.

    .venvs/server/bin/python benchmarks/ingest.py [--duration 10] [--connections 64]

Starts, one after the other, on loopback and on the same ASGI server (granian):
  1. a bare ASGI app that reads the body and answers 200 (the ceiling),
  2. ``telemhq-server serve`` on a fresh SQLite file,
  3. ``telemhq-server serve`` on PostgreSQL (``--pg-url``; skipped if unreachable),
drives each with wrk from another process (POST of the docs' JSON body, ``--connections``
concurrent connections), and prints pings/s, p50 and p99 latency and the ratio server/bare.

Afterwards it checks that nothing was lost: the runs stored equal the 2xx answers the server
sent (its ``/metrics``), and at least every 2xx that wrk received (wrk stops with up to one
request per connection in flight, which the server may still store and answer).

Needs wrk (a C load generator): ``apt-get update && apt-get install -y wrk``.
Targets on the 2-core reference machine at 64 connections: >= 10,000 pings/s on SQLite and
>= 5,000 on PostgreSQL, p99 <= 50 ms, >= 20% of the bare figure on SQLite (10% on
PostgreSQL, whose target is half), 0 lost.

Each server is measured twice, on the same run: a tracker with three plain assertions, then
one with three history-relative ones (``HISTORY_ASSERTIONS``: a ``last 20`` median, a ``24h``
sum, a ``same weekday`` median), judged against every run stored before; target: the
history row keeps >= 70% of the plain row's pings/s, 0 lost. The machine is shared by wrk and, for
PostgreSQL, the database server: figures vary from run to run by 10-20%.

Each server also gets an ``openlineage`` row: OpenLineage events of typical size
(``LINEAGE_EVENT``: one input and one output with their statistics facets), a START and a
COMPLETE per run, posted to ``/api/v1/lineage`` with a ping key as the OpenLineage clients
send them; target: >= 50% of the plain pings' figure on the same database, 0 lost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BODY = '{"status": "success", "duration": 1500, "records_processed": 450, "errors": 0}'
ASSERTIONS = ["records_processed > 0", "errors = 0", "status = success"]
#: Three history-relative assertions, measured against the three plain ones above on the same
#: server: a run-count median, a window sum, a seasonal median.
HISTORY_ASSERTIONS = [
    "records_processed >= 0.5 * median(last 20)",
    "sum(duration, 24h) <= 100000000000",
    "records_processed >= 0.7 * median(last 8, same weekday)",
]
HISTORY_SHARE = 0.7  # history-relative assertions keep at least 70% of the plain pings/s
API_KEY = "thq_benchmark_key"
#: An OpenLineage COMPLETE event of typical size; RUN_ID is replaced per request by wrk.
LINEAGE_EVENT = json.dumps(
    {
        "eventType": "COMPLETE",
        "eventTime": "2026-03-01T02:01:30.000Z",
        "run": {"runId": "RUN_ID", "facets": {}},
        "job": {"namespace": "spark-prod", "name": "JOB", "facets": {}},
        "producer": "https://github.com/OpenLineage/OpenLineage/tree/1.54.0/integration/spark",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "inputs": [
            {
                "namespace": "postgres://db:5432",
                "name": "public.orders",
                "facets": {},
                "inputFacets": {
                    "inputStatistics": {
                        "_producer": "https://github.com/OpenLineage/OpenLineage",
                        "_schemaURL": "https://openlineage.io/spec/facets/1-0-0/"
                        "InputStatisticsInputDatasetFacet.json",
                        "rowCount": 1200,
                        "size": 96000,
                    }
                },
            }
        ],
        "outputs": [
            {
                "namespace": "s3://lake",
                "name": "orders_by_day",
                "facets": {},
                "outputFacets": {
                    "outputStatistics": {
                        "_producer": "https://github.com/OpenLineage/OpenLineage",
                        "_schemaURL": "https://openlineage.io/spec/facets/1-0-2/"
                        "OutputStatisticsOutputDatasetFacet.json",
                        "rowCount": 450,
                        "size": 36000,
                    }
                },
            }
        ],
    }
)
LINEAGE_SHARE = 0.5  # the OpenLineage path keeps at least half the plain pings/s
BARE_APP = textwrap.dedent(
    """
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        body = b'{"ok": true}'
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    """
)
LUA = textwrap.dedent(
    f"""
    wrk.method = "POST"
    wrk.body = '{BODY}'
    wrk.headers["Content-Type"] = "application/json"
    """
)


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    @property
    def ok_2xx(self) -> int:
        return self.requests - self.non_2xx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def api(base: str, method: str, path: str, body: object = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@contextlib.contextmanager
def process(cmd: list[str], env: dict[str, str], cwd: str, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_wrk(url: str, lua: Path, args: argparse.Namespace, duration: float) -> Result:
    cmd = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(lua),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    def number(pattern: str, default: str = "0") -> str:
        match = re.search(pattern, out, re.MULTILINE)
        return match.group(1) if match else default

    def ms(text: str) -> float:
        match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
        if match is None:
            raise RuntimeError(f"cannot read wrk's latency {text!r}:\n{out}")
        value, unit = match.groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[unit]

    socket_errors = sum(
        int(n)
        for n in re.findall(
            r"(?:connect|read|write|timeout) (\d+)", number(r"(Socket errors:.*)", "")
        )
    )
    return Result(
        name="",
        rps=float(number(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=ms(number(r"^\s*50%\s+(\S+)", "0ms")),
        p99_ms=ms(number(r"^\s*99%\s+(\S+)", "0ms")),
        requests=int(number(r"(\d+) requests in")),
        non_2xx=int(number(r"Non-2xx or 3xx responses: (\d+)")),
        socket_errors=socket_errors,
    )


def accepted_from_metrics(base: str) -> int:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        int(float(n))
        for n in re.findall(r"^telemhq_pings_accepted_total\{[^}]*\} (\S+)$", text, re.M)
    )


def bench_bare(args: argparse.Namespace, work: Path, lua: Path) -> Result:
    (work / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    granian = str(Path(sys.executable).with_name("granian"))
    cmd = [
        granian,
        "--interface",
        "asgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(args.workers),
        "--no-ws",
        "bare_app:app",
    ]
    with process(cmd, dict(os.environ), str(work), work / "bare.log"):
        wait_http(f"http://127.0.0.1:{port}/")
        run_wrk(f"http://127.0.0.1:{port}/ping/x", lua, args, args.warmup)
        result = run_wrk(f"http://127.0.0.1:{port}/ping/x", lua, args, args.duration)
    result.name = "bare ASGI (granian)"
    return result


@contextlib.contextmanager
def serving(
    log_name: str, database_url: str, args: argparse.Namespace, work: Path
) -> Iterator[str]:
    """A measured ``telemhq-server serve`` on ``database_url``; yields its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "TELEMHQ_API_KEY": API_KEY,
        "TELEMHQ_DATABASE_URL": database_url,
        "TELEMHQ_WORKERS": str(args.workers),
        "TELEMHQ_RETENTION_RUNS": "100000000",  # keep every run: they are counted afterwards
        "TELEMHQ_LOG_LEVEL": "WARNING",
    }
    server = str(Path(sys.executable).with_name("telemhq-server"))
    cmd = [server, "serve", "--host", "127.0.0.1", "--port", str(port)]
    with process(cmd, env, str(work), work / f"{log_name}.log"):
        wait_http(base + "/healthz")
        yield base


def bench_server(
    name: str,
    database_url: str,
    args: argparse.Namespace,
    work: Path,
    lua: Path,
    *,
    assertion_sets: list[tuple[str, list[str]]],
) -> list[tuple[Result, int, int | None]]:
    """One server; for each ``(label, assertions)`` a fresh tracker driven by wrk in turn."""
    with serving(name, database_url, args, work) as base:
        warm = api(
            base,
            "POST",
            "/api/v1/trackers",
            {"name": f"warmup {uuid.uuid4()}", "assertions": ASSERTIONS},
        )
        assert isinstance(warm, dict)
        run_wrk(warm["ping_url"], lua, args, args.warmup)
        time.sleep(0.5)  # the warm-up's requests in flight are answered before counting
        rows: list[tuple[Result, int, int | None]] = []
        for label, assertions in assertion_sets:
            tracker = api(
                base,
                "POST",
                "/api/v1/trackers",
                {"name": f"bench {uuid.uuid4()}", "assertions": assertions},
            )
            assert isinstance(tracker, dict)
            before = accepted_from_metrics(base)
            result = run_wrk(tracker["ping_url"], lua, args, args.duration)
            time.sleep(0.5)  # let the requests in flight when wrk stopped finish
            answered = accepted_from_metrics(base) - before
            n_stored = count_runs(database_url, int(tracker["id"]))
            result.name = f"{name}{label}"
            # Each server process has its own /metrics: with several, only wrk's count is known.
            rows.append((result, n_stored, answered if args.workers == 1 else None))
    return rows


def count_runs(database_url: str, tracker_id: int) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text("SELECT count(*) FROM runs WHERE tracker_id = :t"), {"t": tracker_id}
                ).scalar_one()
            )
    finally:
        engine.dispose()


def lineage_lua(work: Path, ping_key: str, job: str) -> Path:
    """A wrk script posting LINEAGE_EVENT for ``job``: a START of a new run, then the
    COMPLETE of the run started 129 requests before, in turn (a run's two events, as a
    producer sends them, with the run's duration in between)."""
    template = LINEAGE_EVENT.replace("JOB", job).replace("RUN_ID", "%s")
    template = template.replace('"COMPLETE"', '"%s"')
    path = work / f"lineage-{job}.lua"
    path.write_text(
        textwrap.dedent(
            f"""
            local threads = 0
            function setup(thread)
              threads = threads + 1
              thread:set("tid", threads)
            end
            wrk.method = "POST"
            wrk.path = "/api/v1/lineage"
            wrk.headers["Content-Type"] = "application/json"
            wrk.headers["Authorization"] = "Bearer {ping_key}"
            local template = [[{template}]]
            local n = 0
            function request()
              n = n + 1
              local kind, run = "START", n
              if n % 2 == 0 and n > 128 then
                kind, run = "COMPLETE", n - 129
              end
              local id = string.format("%08x-0000-4000-8000-%012x", tid, run)
              return wrk.format(nil, nil, nil, string.format(template, kind, id))
            end
            """
        )
    )
    return path


def bench_lineage(
    name: str, database_url: str, args: argparse.Namespace, work: Path
) -> tuple[Result, int, int | None]:
    """The OpenLineage path on a server of its own (same settings as bench_server)."""
    with serving(f"{name}-lineage", database_url, args, work) as base:
        key = api(base, "POST", "/api/v1/ping-keys", {"name": f"bench {uuid.uuid4()}"})
        assert isinstance(key, dict)
        job = f"bench_{uuid.uuid4().hex[:8]}"
        run_wrk(base, lineage_lua(work, key["key"], f"{job}_warmup"), args, args.warmup)
        time.sleep(0.5)
        before = accepted_from_metrics(base)
        result = run_wrk(base, lineage_lua(work, key["key"], job), args, args.duration)
        time.sleep(0.5)
        answered = accepted_from_metrics(base) - before
        tracker = api(base, "GET", f"/api/v1/trackers/spark-prod-{job.replace('_', '-')}")
        assert isinstance(tracker, dict)
        n_stored = count_runs(database_url, int(tracker["id"]))
    result.name = f"{name} openlineage"
    return result, n_stored, answered if args.workers == 1 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("TELEMHQ_WORKERS", "1")))
    parser.add_argument(
        "--pg-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="PostgreSQL database (a fresh schema is made in it and dropped afterwards)",
    )
    parser.add_argument("--skip-pg", action="store_true")
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        print(
            "wrk is not installed. Install it with:\n"
            "    apt-get update && apt-get install -y wrk      (Debian/Ubuntu)\n"
            "    brew install wrk                               (macOS)",
            file=sys.stderr,
        )
        return 2

    work = Path(tempfile.mkdtemp(prefix="telemhq-bench-"))
    lua = work / "post.lua"
    lua.write_text(LUA)
    print(
        f"wrk: {args.connections} connections, {args.threads} thread(s), {args.duration}s; "
        f"server processes: {args.workers}; body: {BODY}"
    )
    rows: list[tuple[Result, int | None, int | None]] = []  # result, stored, answered
    failures: list[str] = []
    try:
        bare = bench_bare(args, work, lua)
        rows.append((bare, None, None))
        # (name, database URL, pings/s target, least share of the bare figure): the 20% is
        # the SQLite target's (10,000 of ~50,000 on the reference machine); PostgreSQL's
        # 5,000 is half of it, so half the share.
        targets = [("sqlite", f"sqlite:///{work}/bench.db", 10_000, 0.2)]
        schema = None
        if not args.skip_pg:
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            if pg_schema(args.pg_url, schema, create=True):
                sep = "&" if "?" in args.pg_url else "?"
                targets.append(
                    (
                        "postgresql",
                        f"{args.pg_url}{sep}options=-csearch_path%3D{schema}",
                        5_000,
                        0.1,
                    )
                )
            else:
                print("PostgreSQL not reachable: skipped", file=sys.stderr)
                schema = None
        try:
            sets = [("", ASSERTIONS), (" history", HISTORY_ASSERTIONS)]
            for name, url, target, share in targets:
                measured = bench_server(name, url, args, work, lua, assertion_sets=sets)
                rows.extend(measured)
                for result, stored, answered in measured:
                    in_flight = stored - result.ok_2xx
                    if (answered is not None and stored != answered) or not (
                        0 <= in_flight <= args.connections
                    ):
                        failures.append(
                            f"{result.name}: {answered} 2xx answered (wrk saw "
                            f"{result.ok_2xx}) but {stored} runs stored"
                        )
                plain, history = measured[0][0], measured[1][0]
                if plain.rps < target or plain.p99_ms > 50 or plain.rps < share * bare.rps:
                    failures.append(
                        f"{name}: below target ({target}/s, p99 <= 50 ms, >= {share:.0%} of bare)"
                    )
                if history.rps < HISTORY_SHARE * plain.rps:
                    failures.append(
                        f"{history.name}: {history.rps / plain.rps:.0%} of the plain "
                        f"assertions' pings/s (target >= {HISTORY_SHARE:.0%})"
                    )
                lineage, stored, answered = bench_lineage(name, url, args, work)
                rows.append((lineage, stored, answered))
                if (answered is not None and stored != answered) or not (
                    0 <= stored - lineage.ok_2xx <= args.connections
                ):
                    failures.append(f"{lineage.name}: {answered} answered but {stored} stored")
                if lineage.rps < LINEAGE_SHARE * plain.rps:
                    failures.append(
                        f"{lineage.name}: {lineage.rps / plain.rps:.0%} of the plain pings/s "
                        f"(target >= {LINEAGE_SHARE:.0%})"
                    )
        finally:
            if schema:
                pg_schema(args.pg_url, schema, create=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"{'target':<22}{'pings/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs bare':>9}"
        f"{'2xx (wrk)':>11}{'non-2xx':>9}{'answered':>10}{'stored':>9}{'lost':>6}"
    )
    for result, stored, answered in rows:
        ratio = result.rps / rows[0][0].rps if rows[0][0].rps else 0.0
        lost = "" if stored is None or answered is None else str(max(answered - stored, 0))
        print(
            f"{result.name:<22}{result.rps:>10.0f}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}"
            f"{ratio:>8.0%} {result.ok_2xx:>10}{result.non_2xx:>9}"
            f"{'' if answered is None else answered:>10}{'' if stored is None else stored:>9}"
            f"{lost:>6}"
        )
    for failure in failures:
        print("FAILED:", failure)
    return 1 if failures else 0


def pg_schema(url: str, schema: str, *, create: bool) -> bool:
    try:
        import sqlalchemy as sa
    except ImportError:  # pragma: no cover
        return False
    try:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            if create:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            else:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()
    except Exception as exc:
        print(f"PostgreSQL: {exc}", file=sys.stderr)
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
