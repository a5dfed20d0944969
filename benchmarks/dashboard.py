"""The trackers page at scale: 2,000 trackers with 20 runs each, on SQLite and PostgreSQL.

    .venvs/server/bin/python benchmarks/dashboard.py [--trackers 2000] [--runs 20] [--pg-url URL]

For each database (a fresh SQLite file; a fresh PostgreSQL schema, skipped if unreachable) it
writes a fleet of trackers as the adapters make them (Airflow, Prefect, Dagster, Celery and
plain ones, a few in each problem state; see ``tests/dashboard_fleet.py``), then renders the
grouped trackers page the way the server does (its queries and its markup, in one thread) and
prints the median and worst server time of ``--repeat`` renderings and the size of the HTML,
for the default view and for a few filtered ones. The page must stay within 300 ms and 1 MB.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from telemhq_server.dashboard.grouping import Filters
from telemhq_server.dashboard.runinfo import UiBases
from telemhq_server.dashboard.views import trackers_html

from benchmarks.detector import fresh_database, reachable
from tests.dashboard_fleet import populate

VIEWS = {
    "grouped page": Filters(),
    "only problems": Filters(problems=True),
    "?orchestrator=airflow": Filters(orchestrator="airflow"),
    "?q=load_3": Filters(q="load_3"),
    "one DAG (?group=)": Filters(orchestrator="airflow", group="etl_007"),
}
BASES = UiBases(airflow="http://airflow.example:8080", prefect="http://prefect.example:4200")


def measure(kind: str, pg_url: str, n: int, runs: int, repeat: int) -> None:
    with fresh_database(kind, pg_url) as engine:
        started = time.perf_counter()
        populate(engine, n, runs)
        print(
            f"\n{kind}: {n} trackers, {n * runs} runs written in "
            f"{time.perf_counter() - started:.1f} s"
        )
        for label, filters in VIEWS.items():
            trackers_html(engine, filters, BASES)  # warm the connection pool and caches
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                html = trackers_html(engine, filters, BASES)
                times.append((time.perf_counter() - t0) * 1000)
            size = len(html.encode())
            print(
                f"  {label:<22} median {statistics.median(times):6.1f} ms  "
                f"worst {max(times):6.1f} ms  {size / 1024:7.1f} KB"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trackers", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    kinds = ["sqlite"] + (["postgresql"] if reachable(args.pg_url) else [])
    for kind in kinds:
        measure(kind, args.pg_url, args.trackers, args.runs, args.repeat)


if __name__ == "__main__":
    main()
