"""Storage: migrations, concurrent writers (as several server processes), retention and the
tracker cache across processes. SQLite and PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import threading
import time
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine
from telemhq_server import db
from telemhq_server.app import create_app
from telemhq_server.config import Settings
from telemhq_server.db import flips, make_engine, migrate, runs, trackers, utcnow, write_tx
from telemhq_server.ingest import BatchWriter, Pending
from telemhq_server.metrics import Metrics
from telemhq_server.retention import prune
from telemhq_server.trackers import create_tracker

from telemhq_plugins.core.assertions import evaluate_all, parse_assertion
from tests.server.helpers import ADMIN_KEY, AppClient, make_tracker


def new_tracker(engine: Engine, **values: Any) -> Any:
    with write_tx(engine) as conn:
        return create_tracker(conn, {"name": "job", "slug": f"job-{time.monotonic_ns()}", **values})


def pending(tracker: Any, status: str = "success", **kwargs: Any) -> Pending:
    return Pending(
        tracker_id=tracker["id"],
        token=tracker["token"],
        status=status,
        body="{}",
        ping_id=kwargs.get("ping_id"),
        run_id=kwargs.get("run_id"),
        duration=None,
        results=kwargs.get("results", []),
        received_at=kwargs.get("received_at") or utcnow(),
    )


# --- migrations ------------------------------------------------------------------------------


def test_the_migrations_build_exactly_the_declared_schema(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert diff == []
    names = set(sa.inspect(engine).get_table_names())
    assert {
        "trackers",
        "runs",
        "flips",
        "api_keys",
        "ping_keys",
        "webhooks",
        "webhook_outbox",
        "webhook_attempts",
        "alembic_version",
    } <= names


def _head() -> str | None:
    """The newest migration's revision (the one ``migrate`` brings a database to)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(db.alembic_config()).get_current_head()


def test_migrating_again_changes_nothing(engine: Engine) -> None:
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == _head()


def test_upgrading_starts_the_first_run_clock_of_existing_scheduled_trackers(
    db_url: str,
) -> None:
    """A database at 0001 with trackers in it: 0002 adds ``schedule_set_at`` and sets it to
    the upgrade's time on scheduled trackers (so a never-pinged one gets a whole period from
    the upgrade on), leaving unscheduled ones without."""
    from alembic import command
    from telemhq_server.detector import Detector

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            command.upgrade(db.alembic_config(conn), "0001")
            conn.commit()
        long_ago = utcnow() - dt.timedelta(days=400)

        # The 0001 table: the declared one without the columns added since.
        old_trackers = sa.table(
            "trackers",
            *(sa.column(c.name, c.type) for c in trackers.c if c.name != "schedule_set_at"),
        )
        with engine.begin() as conn:
            for slug, kind, period in (("cron-less", "none", None), ("hourly", "period", 3600)):
                conn.execute(
                    old_trackers.insert().values(
                        name=slug,
                        slug=slug,
                        token=f"token-{slug}",
                        badge_key=f"badge-{slug}",
                        assertions=[],
                        tags=[],
                        schedule_kind=kind,
                        period_seconds=period,
                        created_at=long_ago,
                        updated_at=long_ago,
                    )
                )
        before = utcnow()
        migrate(engine)
        after = utcnow()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == (
                _head()
            )
            rows = {
                r.slug: r
                for r in conn.execute(
                    sa.select(trackers.c.id, trackers.c.slug, trackers.c.schedule_set_at)
                )
            }
        assert rows["cron-less"].schedule_set_at is None
        upgraded = db.as_utc(rows["hourly"].schedule_set_at)
        assert upgraded is not None
        assert before <= upgraded <= after
        detector = Detector(engine)
        hourly = rows["hourly"].id
        assert detector.tick(upgraded + dt.timedelta(minutes=59)).flips == []
        assert detector.tick(upgraded + dt.timedelta(hours=1)).flips == [(hourly, "new", "late")]
    finally:
        engine.dispose()


def test_the_ping_path_indexes_exist(engine: Engine) -> None:
    inspector = sa.inspect(engine)
    unique = {tuple(c["column_names"]) for c in inspector.get_unique_constraints("trackers")}
    assert ("token",) in unique
    run_indexes = {tuple(i["column_names"]): i for i in inspector.get_indexes("runs")}
    assert ("tracker_id", "id") in run_indexes
    assert run_indexes[("tracker_id", "ping_id")]["unique"]


def test_several_processes_may_migrate_at_once(db_url: str) -> None:
    """Each thread has its own engine, as separate server processes would."""
    errors: list[BaseException] = []

    def start() -> None:
        engine = make_engine(db_url)
        try:
            migrate(engine)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()


# --- concurrent writers ----------------------------------------------------------------------


def test_writers_of_several_processes_keep_the_state_consistent(db_url: str) -> None:
    """Four writers, each with its own engine (= four server processes), hammer one tracker
    with failures: every run is stored and counted, and the tracker flips exactly once."""
    setup = make_engine(db_url)
    migrate(setup)
    tracker = new_tracker(setup, failure_threshold=3)
    setup.dispose()
    per_writer, batches = 10, 6

    def hammer(_: int) -> None:
        engine = make_engine(db_url)
        writer = BatchWriter(engine, Metrics())
        try:
            for _ in range(batches):
                batch = [pending(tracker, "failure") for _ in range(per_writer)]
                writer.write(batch)
                assert {item.answer[0] for item in batch if item.answer} == {200}
        finally:
            writer._close()
            engine.dispose()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(hammer, range(4)))

    engine = make_engine(db_url)
    with engine.connect() as conn:
        row = conn.execute(sa.select(trackers).where(trackers.c.id == tracker["id"])).one()
        n_stored = conn.execute(
            sa.select(sa.func.count()).select_from(runs).where(runs.c.tracker_id == tracker["id"])
        ).scalar()
        flip_rows = conn.execute(
            sa.select(flips.c.old_state, flips.c.new_state).where(
                flips.c.tracker_id == tracker["id"]
            )
        ).all()
    engine.dispose()
    total = 4 * per_writer * batches
    assert n_stored == total
    assert row.n_runs == total
    assert row.consecutive_failures == total
    assert row.state == "failing"
    assert [tuple(f) for f in flip_rows] == [("new", "failing")]


def test_a_duplicate_ping_id_across_processes_is_stored_once(db_url: str) -> None:
    setup = make_engine(db_url)
    migrate(setup)
    tracker = new_tracker(setup)
    setup.dispose()
    barrier = threading.Barrier(4)

    def send(_: int) -> tuple[int, dict[str, Any]]:
        engine = make_engine(db_url)
        writer = BatchWriter(engine, Metrics())
        try:
            item = pending(tracker, ping_id="the-same-ping")
            barrier.wait()
            writer.write([item])
            assert item.answer is not None
            return item.answer
        finally:
            writer._close()
            engine.dispose()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(send, range(4)))
    assert {a[0] for a in answers} == {200}
    assert sum(1 for a in answers if a[1].get("duplicate")) == 3
    engine = make_engine(db_url)
    with engine.connect() as conn:
        count = conn.execute(
            sa.select(sa.func.count()).select_from(runs).where(runs.c.tracker_id == tracker["id"])
        ).scalar()
    engine.dispose()
    assert count == 1


def test_pings_for_several_trackers_share_one_transaction(engine: Engine) -> None:
    one, two = new_tracker(engine), new_tracker(engine, assertions=["errors = 0"])
    assertion = parse_assertion("errors = 0")
    batch = [
        pending(one),
        pending(two, results=evaluate_all([assertion], {"errors": 1})),
        pending(one, "failure"),
        pending({"id": 10**9, "token": "gone"}),
    ]
    metrics = Metrics()
    BatchWriter(engine, metrics).write(batch)
    assert [item.answer[0] for item in batch if item.answer] == [200, 200, 200, 404]
    assert [item.answer[1].get("state") for item in batch if item.answer] == [
        "up",
        "failing",
        "failing",
        None,
    ]
    assert metrics.batches == 1


# --- start / end pairing --------------------------------------------------------------------


def test_each_end_finds_its_start_in_a_batch_across_batches_and_after_closing(
    engine: Engine,
) -> None:
    """The writer skips the search of stored runs for an end whose start is the tracker's open
    one or earlier in its batch; every other end (an older start, a second end of a run) still
    finds its start among the stored runs."""
    tracker = new_tracker(engine)
    writer = BatchWriter(engine, Metrics())
    t0 = utcnow() - dt.timedelta(minutes=10)
    at = {name: t0 + dt.timedelta(seconds=i) for i, name in enumerate("abcdefgh")}

    def item(status: str, run_id: str, when: str) -> Pending:
        return pending(tracker, status, run_id=run_id, received_at=at[when])

    writer.write([item("start", "a", "a")])
    writer.write([item("start", "b", "b")])  # the open start is b
    ends = [
        item("failure", "a", "c"),  # an older start: searched
        item("start", "c", "d"),
        item("success", "c", "e"),  # opened earlier in the batch
        item("success", "b", "f"),  # the open start
        item("retry", "b", "g"),  # b again, closed just before: searched
    ]
    writer.write(ends)
    writer.write([item("success", "a", "h")])  # a again, in a batch of its own: searched
    writer._close()
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(runs.c.run_id, runs.c.status, runs.c.started_at)
            .where(runs.c.tracker_id == tracker["id"], runs.c.status != "start")
            .order_by(runs.c.id)
        ).all()
    starts = {"a": at["a"], "b": at["b"], "c": at["d"]}
    assert [(r, s) for r, s, _ in stored] == [
        ("a", "failure"),
        ("c", "success"),
        ("b", "success"),
        ("b", "retry"),
        ("a", "success"),
    ]
    for run_id, _, started_at in stored:
        assert started_at is not None, run_id
        assert started_at.replace(tzinfo=dt.UTC) == starts[run_id], run_id


# --- retention -------------------------------------------------------------------------------


def test_retention_keeps_the_newest_runs_per_tracker(engine: Engine) -> None:
    keep_me, prune_me = new_tracker(engine), new_tracker(engine)
    writer = BatchWriter(engine, Metrics())
    writer.write([pending(prune_me, run_id=f"r{i}") for i in range(30)])
    writer.write([pending(keep_me) for _ in range(5)])
    writer._close()
    assert writer.take_touched() == {keep_me["id"], prune_me["id"]}
    assert prune(engine, [keep_me["id"], prune_me["id"]], keep=10) == 20
    with engine.connect() as conn:
        left = (
            conn.execute(
                sa.select(runs.c.run_id)
                .where(runs.c.tracker_id == prune_me["id"])
                .order_by(runs.c.id)
            )
            .scalars()
            .all()
        )
        kept = conn.execute(
            sa.select(sa.func.count()).select_from(runs).where(runs.c.tracker_id == keep_me["id"])
        ).scalar()
    assert left == [f"r{i}" for i in range(20, 30)]
    assert kept == 5
    assert prune(engine, None, keep=10) == 0  # the full sweep finds nothing more


def test_retention_runs_in_the_background(db_url: str) -> None:
    settings = Settings(
        database_url=db_url, api_key=ADMIN_KEY, retention_runs=3, prune_interval=0.05
    )
    from telemhq_server.cli import prepare

    prepare(settings)
    app = create_app(settings)
    with AppClient(app, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        tracker = make_tracker(client)
        for i in range(8):
            client.post(f"/ping/{tracker['token']}", json={"n": i})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            items = client.get(f"/api/v1/trackers/{tracker['id']}/runs").json()["items"]
            if len(items) == 3:
                break
            time.sleep(0.05)
        assert [r["payload"]["n"] for r in items] == [7, 6, 5]
        assert client.get(f"/api/v1/trackers/{tracker['id']}").json()["n_runs"] == 8


# --- the tracker cache across processes --------------------------------------------------------


def test_another_process_sees_config_changes_within_the_cache_ttl(db_url: str) -> None:
    settings = Settings(database_url=db_url, api_key=ADMIN_KEY, cache_ttl=0.2)
    from telemhq_server.cli import prepare

    prepare(settings)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with (
        AppClient(create_app(settings), headers) as one,
        AppClient(create_app(settings), headers) as two,
    ):
        tracker = make_tracker(one)
        assert two.post(f"/ping/{tracker['token']}", json={"errors": 1}).json()["state"] == "up"
        one.patch(f"/api/v1/trackers/{tracker['id']}", json={"assertions": ["errors = 0"]})
        rotated = one.post(f"/api/v1/trackers/{tracker['id']}/rotate-token").json()
        time.sleep(0.3)
        stale = two.post(f"/ping/{tracker['token']}", json={"errors": 1})
        assert stale.status_code == 404
        fresh = two.post(f"/ping/{rotated['token']}", json={"errors": 1}).json()
        assert fresh["assertions"][0]["expression"] == "errors = 0"
        assert fresh["state"] == "failing"


def test_a_stale_cache_never_writes_to_a_rotated_token(engine: Engine) -> None:
    """Even before the cache expires, the writer checks the token in the transaction."""
    tracker = new_tracker(engine)
    with write_tx(engine) as conn:
        conn.execute(trackers.update().where(trackers.c.id == tracker["id"]).values(token="new"))
    item = pending(tracker)
    BatchWriter(engine, Metrics()).write([item])
    assert item.answer == (404, {"ok": False, "error": "unknown token"})
