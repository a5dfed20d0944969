"""Provisioning (``telemhq_plugins.core.sync``) against the real reference server over HTTP:
what each sync stores, checked through the management API."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from telemhq_plugins.core import Client, JobSchedule, provision, start_run, sync
from telemhq_plugins.core.provision import PAUSED_TAG, PRUNED_TAG, SyncResult
from tests.kit import client_for, dead_endpoint, new_ping_key
from tests.live_server import LiveServer


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[Client]:
    made = client_for(live_server)
    yield made
    made.close()


def run_sync(server: LiveServer, client: Client, jobs: list[JobSchedule], **kw: Any) -> list[Any]:
    kw.setdefault("api_key", server.api_key)
    kw.setdefault("cached", False)
    done = sync(jobs, client=client, background=False, **kw)
    assert done.done
    return done.results


def by_job(results: list[SyncResult]) -> dict[str, SyncResult]:
    return {r.job: r for r in results}


def all_trackers(server: LiveServer) -> list[dict[str, Any]]:
    return list(server.api("GET", "/trackers", params={"limit": 500}).json()["items"])


def test_it_creates_a_tracker_per_job(live_server: LiveServer, client: Client) -> None:
    results = run_sync(
        live_server,
        client,
        [
            JobSchedule(
                "Nightly ETL",
                "0 3 * * *",
                timezone="Europe/Paris",
                grace_seconds=120,
                tags=("team-data",),
            ),
            JobSchedule("refresh.cache", dt.timedelta(minutes=5)),
            JobSchedule("adhoc report", None, name="Ad-hoc report", assertions=("rows > 0",)),
        ],
        orchestrator="airflow",
    )
    assert [r.outcome for r in results] == ["created", "created", "created"]
    nightly = live_server.tracker("nightly-etl")
    assert nightly["name"] == "Nightly ETL"
    assert nightly["tags"] == ["team-data", "airflow"]
    assert nightly["schedule"] == {
        "kind": "cron",
        "cron": "0 3 * * *",
        "timezone": "Europe/Paris",
        "grace_seconds": 120,
    }
    assert results[0].tracker_id == str(nightly["id"])
    assert live_server.tracker("refresh-cache")["schedule"] == {
        "kind": "period",
        "period_seconds": 300,
        "grace_seconds": 300,
    }
    adhoc = live_server.tracker("adhoc-report")
    assert adhoc["name"] == "Ad-hoc report"
    assert adhoc["schedule"] == {"kind": "none"}
    assert adhoc["assertions"] == ["rows > 0"]


def test_it_writes_only_the_fields_that_differ(live_server: LiveServer, client: Client) -> None:
    tracker = live_server.create_tracker(
        name="Named by hand",
        slug="hourly-load",
        tags=["mine"],
        assertions=["errors = 0"],
        schedule={"kind": "cron", "cron": "0 * * * *", "timezone": "UTC", "grace_seconds": 60},
    )
    job = JobSchedule("hourly load", "0 * * * *", grace_seconds=600, tags=("mine",))
    (result,) = run_sync(live_server, client, [job], orchestrator="celery")
    assert result.outcome == "updated"
    assert result.changed == ("schedule", "tags")
    stored = live_server.tracker(tracker["id"])
    assert stored["schedule"]["grace_seconds"] == 600
    assert stored["tags"] == ["mine", "celery"]  # hand-set tags stay, the orchestrator's added
    assert stored["name"] == "Named by hand"  # no name given: the hand-set one stays
    assert stored["assertions"] == ["errors = 0"]  # no assertions given: left alone

    renamed = JobSchedule("hourly load", "0 * * * *", grace_seconds=600, name="Hourly load")
    (result,) = run_sync(live_server, client, [renamed], orchestrator="celery")
    assert (result.outcome, result.changed) == ("updated", ("name",))
    assert live_server.tracker(tracker["id"])["name"] == "Hourly load"


def test_a_second_identical_sync_writes_nothing(live_server: LiveServer, client: Client) -> None:
    jobs = [
        JobSchedule("idem cron", "*/10 * * * *", timezone="America/New_York", tags=("x",)),
        JobSchedule("idem period", 90.5, grace_seconds=0, assertions=("n >= 1",)),
        JobSchedule("idem none", None, name="Idem none"),
    ]
    first = run_sync(live_server, client, jobs, orchestrator="prefect")
    assert {r.outcome for r in first} == {"created"}
    before = {t["id"]: t for t in all_trackers(live_server)}
    time.sleep(0.05)  # a write now would show as a later updated_at

    second = run_sync(live_server, client, jobs, orchestrator="prefect")
    assert [(r.outcome, r.changed) for r in second] == [("unchanged", ())] * 3
    after = {t["id"]: t for t in all_trackers(live_server)}
    assert after == before  # same trackers, same updated_at, nothing created
    for result in second:
        assert live_server.flips(result.tracker_id or "") == []


def test_a_repeated_sync_in_one_process_skips_the_server(
    live_server: LiveServer, client: Client
) -> None:
    jobs = [JobSchedule("memo job", 3600)]
    (first,) = run_sync(live_server, client, jobs, cached=True)
    assert first.outcome == "created"
    live_server.api("DELETE", f"/trackers/{first.tracker_id}")
    # Remembered: not asked again (the deleted tracker is not re-created)...
    (again,) = run_sync(live_server, client, jobs, cached=True)
    assert (again.outcome, again.detail) == ("unchanged", "synced earlier in this process")
    assert live_server.api("GET", "/trackers/memo-job").status_code == 404
    # ...unless asked to check.
    (checked,) = run_sync(live_server, client, jobs, cached=False)
    assert checked.outcome == "created"


def test_a_remembered_sync_is_forgotten_after_a_write_and_in_time(
    live_server: LiveServer, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    active = JobSchedule("memo pause", 60, paused=False)
    paused = JobSchedule("memo pause", 60, paused=True)
    assert run_sync(live_server, client, [active], cached=True)[0].outcome == "created"
    assert run_sync(live_server, client, [paused], cached=True)[0].outcome == "updated"
    # Active again: the first sync of that set is no longer trusted after the pause.
    (back,) = run_sync(live_server, client, [active], cached=True)
    assert (back.outcome, back.changed) == ("updated", ("tags", "paused"))
    assert live_server.tracker("memo-pause")["paused"] is False
    # Paused elsewhere (another process, by hand): put right once the memory has expired.
    live_server.api("POST", "/trackers/memo-pause/pause")
    live_server.api("PATCH", "/trackers/memo-pause", json={"tags": [PAUSED_TAG]})
    assert run_sync(live_server, client, [active], cached=True)[0].detail == (
        "synced earlier in this process"
    )
    monkeypatch.setattr(provision, "_REMEMBER_SECONDS", 0.0)
    (expired,) = run_sync(live_server, client, [active], cached=True)
    assert (expired.outcome, expired.changed) == ("updated", ("tags", "paused"))
    assert live_server.tracker("memo-pause")["paused"] is False


def test_it_finds_a_tracker_by_the_token_the_job_pings(live_server: LiveServer) -> None:
    tracker = live_server.create_tracker(name="by token")
    mapped = client_for(live_server, trackers=(("etl.*", tracker["token"]),))
    try:
        results = run_sync(
            live_server,
            mapped,
            [
                JobSchedule("etl.load", 600),
                JobSchedule("other", 60, token=tracker["token"]),
                JobSchedule("lost", 60, token="no-such-token-0123456789"),
            ],
        )
    finally:
        mapped.close()
    found = by_job(results)
    assert (found["etl.load"].outcome, found["etl.load"].tracker_id) == (
        "updated",
        str(tracker["id"]),
    )
    # Two jobs, one tracker, two schedules: the first keeps it.
    assert found["other"].outcome == "skipped"
    assert "already takes the schedule of job 'etl.load'" in found["other"].detail
    assert found["lost"].outcome == "error"
    assert live_server.tracker(tracker["id"])["schedule"]["period_seconds"] == 600
    assert live_server.api("GET", "/trackers/lost").status_code == 404


def test_a_mapped_ping_key_url_names_the_trackers_slug(live_server: LiveServer) -> None:
    url = f"{live_server.base_url}/ping/{new_ping_key(live_server)}/shared-loader"
    mapped = client_for(live_server, trackers=(("loader.*", url),))
    try:
        (result,) = run_sync(live_server, mapped, [JobSchedule("loader.eu", 300)])
    finally:
        mapped.close()
    assert result.outcome == "created"
    assert live_server.tracker("shared-loader")["name"] == "loader.eu"
    assert live_server.api("GET", "/trackers/loader-eu").status_code == 404


def test_two_jobs_with_one_slug_share_one_tracker(live_server: LiveServer, client: Client) -> None:
    results = run_sync(
        live_server,
        client,
        [JobSchedule("etl.same", 60), JobSchedule("etl-same", 120), JobSchedule("etl_same", 60)],
    )
    assert [r.outcome for r in results] == ["created", "skipped", "skipped"]
    assert "already takes the schedule of job 'etl.same'" in results[1].detail
    assert live_server.tracker("etl-same")["schedule"]["period_seconds"] == 60


def test_prune_pauses_what_is_gone_and_a_later_sync_resumes_it(
    live_server: LiveServer, client: Client
) -> None:
    kept, gone = JobSchedule("prune kept", 60), JobSchedule("prune gone", 60)
    run_sync(live_server, client, [kept, gone], orchestrator="dagster-prune")
    by_hand = live_server.create_tracker(name="prune paused by hand", tags=["dagster-prune"])
    live_server.api("POST", f"/trackers/{by_hand['id']}/pause")
    elsewhere = live_server.create_tracker(name="prune other tag", tags=["celery-prune"])

    results = run_sync(live_server, client, [kept], orchestrator="dagster-prune", prune=True)
    found = by_job(results)
    assert found["prune kept"].outcome == "unchanged"
    assert found["prune gone"].outcome == "paused"
    pruned = live_server.tracker("prune-gone")
    assert pruned["paused"] is True
    assert pruned["state"] == "paused"
    assert pruned["tags"] == ["dagster-prune", PRUNED_TAG]
    assert live_server.api("GET", "/trackers/prune-gone").status_code == 200  # never deleted
    assert live_server.tracker("prune-kept")["paused"] is False
    assert live_server.tracker(elsewhere["id"])["paused"] is False
    assert len(results) == 2  # the tracker paused by hand was not touched

    # The job is back: its tracker resumes; the one paused by hand stays paused.
    byhand_job = JobSchedule("prune paused by hand", None)
    back = by_job(
        run_sync(
            live_server, client, [kept, gone, byhand_job], orchestrator="dagster-prune", prune=True
        )
    )
    assert (back["prune gone"].outcome, back["prune gone"].changed) == (
        "updated",
        ("tags", "paused"),
    )
    resumed = live_server.tracker("prune-gone")
    assert (resumed["paused"], resumed["tags"]) == (False, ["dagster-prune"])
    assert live_server.tracker(by_hand["id"])["paused"] is True


def test_a_job_paused_in_the_orchestrator_pauses_its_tracker_and_resumes_it(
    live_server: LiveServer, client: Client
) -> None:
    job = JobSchedule("paused job", 60)
    run_sync(live_server, client, [job], orchestrator="airflow")
    live_server.ping(live_server.tracker("paused-job")["token"])
    by_hand = live_server.create_tracker(name="paused job by hand", schedule={"kind": "none"})
    live_server.api("POST", f"/trackers/{by_hand['id']}/pause")
    hand_job = JobSchedule("paused job by hand", None)

    paused = JobSchedule("paused job", 60, paused=True)
    results = by_job(
        run_sync(
            live_server, client, [paused, JobSchedule("paused job by hand", None, paused=True)]
        )
    )
    assert (results["paused job"].outcome, results["paused job"].changed) == (
        "updated",
        ("tags", "paused"),
    )
    tracker = live_server.tracker("paused-job")
    assert (tracker["paused"], tracker["state"]) == (True, "paused")
    assert tracker["tags"] == ["airflow", PAUSED_TAG]
    # A second identical sync writes nothing; nor does one that does not say (paused=None).
    again = run_sync(live_server, client, [paused, job], orchestrator="airflow")
    assert [(r.outcome, r.changed) for r in again] == [("unchanged", ()), ("unchanged", ())]
    assert live_server.tracker("paused-job")["paused"] is True
    assert live_server.tracker(by_hand["id"])["tags"] == []  # paused by hand: not its tag

    active = JobSchedule("paused job", 60, paused=False)
    results = by_job(
        run_sync(
            live_server, client, [active, JobSchedule("paused job by hand", None, paused=False)]
        )
    )
    assert (results["paused job"].outcome, results["paused job"].changed) == (
        "updated",
        ("tags", "paused"),
    )
    resumed = live_server.tracker("paused-job")
    assert (resumed["paused"], resumed["state"], resumed["tags"]) == (False, "new", ["airflow"])
    # The clock restarted: the next run is due a period after the resume, not before the pause.
    assert resumed["next_expected_at"] > resumed["state_changed_at"]
    flips = [(f["old_state"], f["new_state"]) for f in live_server.flips(resumed["id"])]
    assert sorted(flips) == [("new", "up"), ("paused", "new"), ("up", "paused")]
    assert live_server.tracker(by_hand["id"])["paused"] is True  # a person paused it
    assert [r.outcome for r in run_sync(live_server, client, [active, hand_job])] == [
        "unchanged",
        "unchanged",
    ]


def test_a_job_paused_from_the_start_gets_a_paused_tracker(
    live_server: LiveServer, client: Client
) -> None:
    job = JobSchedule("born paused", "0 * * * *", paused=True)
    (result,) = run_sync(live_server, client, [job], orchestrator="prefect")
    assert result.outcome == "created"
    assert "paused" in result.changed
    tracker = live_server.tracker("born-paused")
    assert (tracker["paused"], tracker["state"]) == (True, "paused")
    assert tracker["tags"] == ["prefect", PAUSED_TAG]
    assert tracker["schedule"]["cron"] == "0 * * * *"
    (again,) = run_sync(live_server, client, [job], orchestrator="prefect")
    assert (again.outcome, again.changed) == ("unchanged", ())


def test_a_pruned_tracker_whose_job_is_paused_stays_paused(
    live_server: LiveServer, client: Client
) -> None:
    run_sync(live_server, client, [JobSchedule("pruned then paused", 60)], orchestrator="dg-p")
    run_sync(live_server, client, [JobSchedule("pp other", 60)], orchestrator="dg-p", prune=True)
    assert live_server.tracker("pruned-then-paused")["tags"] == ["dg-p", PRUNED_TAG]
    paused = JobSchedule("pruned then paused", 60, paused=True)
    (result,) = run_sync(live_server, client, [paused], orchestrator="dg-p")
    assert (result.outcome, result.changed) == ("updated", ("tags",))
    tracker = live_server.tracker("pruned-then-paused")
    assert (tracker["paused"], tracker["tags"]) == (True, ["dg-p", PAUSED_TAG])
    (result,) = run_sync(live_server, client, [JobSchedule("pruned then paused", 60, paused=False)])
    assert (result.outcome, result.changed) == ("updated", ("tags", "paused"))
    assert live_server.tracker("pruned-then-paused")["paused"] is False


def test_a_dry_run_reports_a_pause_and_writes_nothing(
    live_server: LiveServer, client: Client
) -> None:
    run_sync(live_server, client, [JobSchedule("dry paused", 60)])
    (result,) = run_sync(
        live_server, client, [JobSchedule("dry paused", 60, paused=True)], dry_run=True
    )
    assert result.outcome == "updated"
    assert "paused: false -> true" in result.detail
    assert live_server.tracker("dry-paused")["paused"] is False


def test_prune_without_an_orchestrator_pauses_nothing(
    live_server: LiveServer, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    other = live_server.create_tracker(name="prune no orchestrator")
    with caplog.at_level(logging.WARNING, logger="telemhq"):
        run_sync(live_server, client, [JobSchedule("prune alone", 60)], prune=True)
    assert live_server.tracker(other["id"])["paused"] is False
    assert "prune needs an orchestrator tag" in caplog.text


def test_without_an_api_key_it_skips_with_one_log_line(
    live_server: LiveServer,
    client: Client,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TELEMHQ_API_KEY", raising=False)
    with caplog.at_level(logging.INFO, logger="telemhq"):
        for _ in range(2):
            results = run_sync(
                live_server,
                client,
                [JobSchedule("no key a", 60), JobSchedule("no key b", 60)],
                api_key=None,
            )
            assert [(r.outcome, r.detail) for r in results] == [
                ("skipped", "TELEMHQ_API_KEY is not set")
            ] * 2
    lines = [r for r in caplog.records if "TELEMHQ_API_KEY is not set" in r.getMessage()]
    assert len(lines) <= 1  # once per process (an earlier test may have logged it already)
    assert live_server.api("GET", "/trackers/no-key-a").status_code == 404


def test_it_reads_the_api_key_from_the_environment(
    live_server: LiveServer, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEMHQ_API_KEY", live_server.api_key)
    (result,) = run_sync(live_server, client, [JobSchedule("env key", 60)], api_key=None)
    assert result.outcome == "created"


def test_a_wrong_or_read_only_key_is_an_error_logged_once(
    live_server: LiveServer, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="telemhq"):
        (wrong,) = run_sync(live_server, client, [JobSchedule("wrong key", 60)], api_key="thq_x")
    assert (wrong.outcome, wrong.detail) == ("error", "HTTP 401: invalid API key")
    assert "invalid API key" in caplog.text
    read_key = live_server.api("POST", "/keys", json={"scope": "read"}).json()["key"]
    (read,) = run_sync(live_server, client, [JobSchedule("read key", 60)], api_key=read_key)
    assert read.outcome == "error"
    assert read.detail.startswith("HTTP 403: this API key is read-only")
    assert live_server.api("GET", "/trackers/wrong-key").status_code == 404
    assert live_server.api("GET", "/trackers/read-key").status_code == 404


def test_an_invalid_cron_is_refused_with_the_servers_message(
    live_server: LiveServer, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="telemhq"):
        results = run_sync(
            live_server,
            client,
            [
                JobSchedule("bad cron", "61 * * * *"),
                JobSchedule("bad zone", "0 * * * *", timezone="Mars/Olympus"),
                JobSchedule("good after bad", 60),
            ],
        )
    found = by_job(results)
    assert found["bad cron"].outcome == "error"
    assert found["bad cron"].detail == "schedule.cron: not a valid cron expression: '61 * * * *'"
    assert found["bad zone"].detail == "schedule.timezone: unknown timezone 'Mars/Olympus'"
    assert found["good after bad"].outcome == "created"
    assert "not a valid cron expression: '61 * * * *'" in caplog.text
    assert live_server.api("GET", "/trackers/bad-cron").status_code == 404


def test_an_unusable_schedule_is_an_error_not_an_exception(
    live_server: LiveServer, client: Client
) -> None:
    results = run_sync(live_server, client, [JobSchedule("negative", -5), JobSchedule("fine", 5)])
    assert [r.outcome for r in results] == ["error", "created"]
    assert "positive number of seconds" in results[0].detail


def test_a_server_that_is_down_ends_the_sync_in_bounded_time(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    down = client_for(live_server, base_url=dead_endpoint())
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="telemhq"):
            pending = sync(
                [JobSchedule("down a", 60), JobSchedule("down b", 60)],
                api_key="thq_any",
                client=down,
                cached=False,
            )
            results = pending.wait(30)
    finally:
        down.close()
    assert pending.done
    assert time.monotonic() - started < 5
    assert [r.outcome for r in results] == ["error", "error"]
    assert results[0].detail.startswith("server unreachable: ConnectError")
    assert "does not answer" in caplog.text


def test_a_server_that_never_answers_is_bounded_by_the_timeout(live_server: LiveServer) -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        slow = client_for(live_server, base_url=f"http://127.0.0.1:{port}", timeout=30.0)
        try:
            started = time.monotonic()
            pending = sync(
                [JobSchedule("silent", 60)],
                api_key="thq_any",
                client=slow,
                timeout=1.0,
                cached=False,
            )
            returned = time.monotonic() - started
            (result,) = pending.wait(10)
            elapsed = time.monotonic() - started
        finally:
            slow.close()
    assert returned < 0.5  # the caller (the user's process) does not wait for the server
    assert 0.9 < elapsed < 5
    assert result.outcome == "error"
    assert "Timeout" in result.detail


def test_a_tracker_created_by_sync_takes_the_ping_keys_pings(live_server: LiveServer) -> None:
    keyed = client_for(live_server, ping_key=new_ping_key(live_server, auto_create=False))
    try:
        (result,) = run_sync(live_server, keyed, [JobSchedule("keyed.job", "*/5 * * * *")])
        assert result.outcome == "created"
        run = start_run("keyed.job", client=keyed, bind=False)
        assert run.finish("success")
        assert keyed.flush(10)
    finally:
        keyed.close()
    runs = live_server.runs(result.tracker_id or "")
    assert [r["status"] for r in runs] == ["success"]
    assert live_server.tracker(result.tracker_id or "")["next_expected_at"] is not None
