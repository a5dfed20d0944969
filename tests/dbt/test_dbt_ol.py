"""``dbt-ol`` (the OpenLineage wrapper of dbt) pointed at the reference server by its standard
environment (``OPENLINEAGE_URL``, ``OPENLINEAGE_ENDPOINT``, ``OPENLINEAGE_API_KEY``): a small
project (``project/``: one seed, two models) on DuckDB in a file and on PostgreSQL. Each model
becomes a tracker ``<namespace>/<database>.<schema>.<project>.<model>`` whose runs have the
``dbt run`` as their parent; on PostgreSQL (whose adapter reports the rows a statement wrote)
the runs carry the models' row counts as ``records_processed``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from telemhq_plugins.core import slugify
from tests.kit import statuses_oldest_first, tracker_by_slug, wait_for_runs
from tests.live_server import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PROJECT = Path(__file__).parent / "project"
BIN = Path(sys.executable).parent  # dbt-ol runs ``dbt`` from PATH: this environment's
#: a bound for a busy 2-core machine, not a speed assertion.
DBT_TIMEOUT = 240.0


class Shop:
    """The project copied into a temporary directory (dbt writes beside it), run with
    ``dbt`` and ``dbt-ol`` against one target and one OpenLineage namespace."""

    def __init__(self, root: Path, env: dict[str, str], target: str, server: LiveServer) -> None:
        self.dir = root / "project"
        self.server = server
        shutil.copytree(PROJECT, self.dir)
        self.env = env
        self.target = target
        self.namespace = env["OPENLINEAGE_NAMESPACE"]

    def run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / program), *args, "--profiles-dir", ".", "--target", self.target],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=DBT_TIMEOUT,
            check=False,
        )

    def seed_and_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``dbt seed`` (no events), then ``dbt-ol run``."""
        seeded = self.run("dbt", "seed")
        assert seeded.returncode == 0, seeded.stdout[-3000:]
        return self.run("dbt-ol", "run", *args)

    def runs(self, job: str, count: int) -> list[dict[str, Any]]:
        """The runs of ``<namespace>/<job>``, oldest first, once there are ``count``."""
        found = wait_for_runs(self.server, slugify(f"{self.namespace}/{job}"), count)
        assert len(found) == count, found
        return sorted(found, key=lambda run: int(run["id"]))


@pytest.fixture
def openlineage_env(live_server: LiveServer, ping_key: str) -> dict[str, str]:
    """dbt-ol's environment: the server, a ping key, a namespace of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENLINEAGE", "TELEMHQ_"))}
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "OPENLINEAGE_URL": live_server.base_url,
            "OPENLINEAGE_ENDPOINT": "api/v1/lineage",
            "OPENLINEAGE_API_KEY": ping_key,
            "OPENLINEAGE_NAMESPACE": f"dbt-{uuid.uuid4().hex[:8]}",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
    )
    return env


@pytest.fixture
def duckdb_shop(tmp_path: Path, openlineage_env: dict[str, str], live_server: LiveServer) -> Shop:
    env = {**openlineage_env, "SHOP_DUCKDB_PATH": str(tmp_path / "shop.duckdb")}
    return Shop(tmp_path, env, "duckdb", live_server)


@pytest.fixture
def postgres_shop(
    tmp_path: Path, openlineage_env: dict[str, str], live_server: LiveServer, postgres_url: str
) -> Iterator[Shop]:
    schema = f"shop_{uuid.uuid4().hex[:10]}"
    yield Shop(tmp_path, {**openlineage_env, "SHOP_PG_SCHEMA": schema}, "postgres", live_server)
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def test_models_become_trackers_whose_runs_have_the_dbt_run_as_parent(
    duckdb_shop: Shop, live_server: LiveServer
) -> None:
    done = duckdb_shop.seed_and_run()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    dbt_run = duckdb_shop.runs("dbt-run-shop", 2)
    assert statuses_oldest_first(dbt_run) == ["start", "success"]
    for model in ("paid_orders", "revenue_by_customer"):
        runs = duckdb_shop.runs(f"shop.main.shop.{model}", 2)
        assert statuses_oldest_first(runs) == ["start", "success"]
        parent = runs[1]["payload"]["parent"]
        assert parent["job"] == f"{duckdb_shop.namespace}/dbt-run-shop"
        assert parent["run_id"] == dbt_run[1]["run_id"]
        assert runs[1]["payload"]["outputs"][0]["name"] == f"shop.main.{model}"
        # DuckDB's adapter reports no row count for a model's statement: none is invented.
        assert "records_processed" not in runs[1]["payload"]
    found = tracker_by_slug(live_server, slugify(f"{duckdb_shop.namespace}/dbt-run-shop"))
    assert found is not None
    assert {"openlineage", "producer:dbt"} <= set(found["tags"])


def test_a_failing_model_fails_its_tracker_and_the_dbt_run(duckdb_shop: Shop) -> None:
    done = duckdb_shop.seed_and_run("--vars", "{with_broken: true}")
    assert done.returncode == 1, done.stdout[-3000:]

    broken = duckdb_shop.runs("shop.main.shop.broken_model", 2)
    assert statuses_oldest_first(broken) == ["start", "failure"]
    assert statuses_oldest_first(duckdb_shop.runs("shop.main.shop.paid_orders", 2)) == [
        "start",
        "success",
    ]
    dbt_run = duckdb_shop.runs("dbt-run-shop", 2)
    assert statuses_oldest_first(dbt_run) == ["start", "failure"]
    assert broken[1]["payload"]["parent"]["run_id"] == dbt_run[1]["run_id"]


@pytest.mark.services
def test_row_counts_arrive_as_records_processed(postgres_shop: Shop) -> None:
    done = postgres_shop.seed_and_run()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    schema = postgres_shop.env["SHOP_PG_SCHEMA"]
    for model, rows in (("paid_orders", 4), ("revenue_by_customer", 3)):
        runs = postgres_shop.runs(f"test.{schema}.shop.{model}", 2)
        assert statuses_oldest_first(runs) == ["start", "success"]
        payload = runs[1]["payload"]
        assert payload["records_processed"] == rows
        assert payload["outputs"] == [
            {
                "namespace": payload["outputs"][0]["namespace"],
                "name": f"test.{schema}.{model}",
                "rows": rows,
                "bytes": None,
            }
        ]
