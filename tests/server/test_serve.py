"""``telemhq-server serve`` for real: a subprocess on loopback (tests/live_server.py), the
docs' clients unchanged, first-start key, several worker processes. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests

from tests.kit import require_tool
from tests.live_server import LiveServer, free_port
from tests.server.helpers import run_job_after

DOCS_BODY = {"status": "success", "duration": 1500, "records_processed": 450, "errors": 0}


@pytest.fixture
def server(db_url: str) -> Iterator[LiveServer]:
    with LiveServer(db_url) as live:
        yield live


def test_the_docs_examples_work_unchanged(server: LiveServer) -> None:
    require_tool("curl", "the docs' shell examples")
    tracker = server.create_tracker(
        name="docs", assertions=["status = success", "records_processed > 0", "errors = 0"]
    )
    url = tracker["ping_url"]
    assert url.startswith(server.base_url)
    # Python requests, json= (as in the docs)
    answer = requests.post(url, json=DOCS_BODY, timeout=15)
    assert answer.status_code == 200
    assert answer.json()["state"] == "up"
    plain = subprocess.run(["curl", "-sS", "-X", "POST", url], capture_output=True, check=True)
    assert b'"ok":true' in plain.stdout
    with_json = subprocess.run(
        [
            "curl",
            "-sS",
            "-X",
            "POST",
            url,
            "-H",
            "Content-Type: application/json",
            "-d",
            '{\n    "status": "success",\n    "duration": 1500,\n'
            '    "records_processed": 450,\n    "errors": 0\n  }',
        ],
        capture_output=True,
        check=True,
    )
    assert b'"passed":true' in with_json.stdout
    # curl -d without a content type (form-encoded) works too
    form = subprocess.run(
        ["curl", "-sS", "-X", "POST", url, "-d", '{"records_processed": 0}'],
        capture_output=True,
        check=True,
    )
    assert b'"state":"failing"' in form.stdout
    runs = server.runs(tracker["id"])
    assert runs[-1]["payload"] == DOCS_BODY
    browser = httpx.get(url, headers={"Accept": "text/html"})
    assert browser.status_code == 200
    assert "<html" in browser.text
    assert len(server.runs(tracker["id"])) == len(runs)  # GET recorded nothing


def test_healthz_and_metrics(server: LiveServer) -> None:
    assert server.client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    tracker = server.create_tracker()
    server.ping(tracker)
    server.client.post("/ping/unknown-token")
    metrics = server.client.get("/metrics").text
    assert 'telemhq_pings_accepted_total{status="success"} 1' in metrics
    assert 'telemhq_pings_rejected_total{reason="unknown_token"} 1' in metrics
    assert "telemhq_ingest_latency_seconds_bucket" in metrics


def test_several_worker_processes_share_one_database(db_url: str) -> None:
    with LiveServer(db_url, workers=2) as server:
        tracker = server.create_tracker(failure_threshold=5)
        with httpx.Client(base_url=server.base_url) as client:
            answers = [client.post(f"/ping/{tracker['token']}/fail") for _ in range(40)]
        assert {a.status_code for a in answers} == {200}
        stored = server.tracker(tracker["id"])
        assert stored["n_runs"] == 40
        assert stored["consecutive_failures"] == 40
        assert stored["state"] == "failing"
        assert len(server.runs(tracker["id"])) == 40
        assert [f["new_state"] for f in server.flips(tracker["id"])] == ["failing"]


def _serve(tmp_path: Path, port: int, database_url: str | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "TELEMHQ_API_KEY"}
    env.pop("TELEMHQ_DATABASE_URL", None)
    if database_url is not None:
        env["TELEMHQ_DATABASE_URL"] = database_url
    script = Path(sys.executable).with_name("telemhq-server")
    return subprocess.Popen(
        [str(script), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _banner(proc: subprocess.Popen[str], port: int) -> str:
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "then ping it" in line:
            break
    for _ in range(100):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    return "".join(lines)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:  # pragma: no cover
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def test_first_start_prints_the_url_a_new_admin_key_and_how_to_create_a_tracker(
    tmp_path: Path,
) -> None:
    port = free_port()
    proc = _serve(tmp_path, port)
    try:
        banner = _banner(proc, port)
    finally:
        _stop(proc)
    assert f"TelemHQ server on http://127.0.0.1:{port}" in banner
    assert f"sqlite:///{tmp_path}/telemhq.db" in banner  # the working directory, by default
    match = re.search(r"admin API key \(shown once, stored hashed\): (thq_\S+)", banner)
    assert match, banner
    key = match.group(1)
    assert f"curl -X POST http://127.0.0.1:{port}/api/v1/trackers" in banner
    assert (tmp_path / "telemhq.db").exists()
    assert key.encode() not in (tmp_path / "telemhq.db").read_bytes()

    # Second start on the same database: the key works and is not shown again.
    port = free_port()
    proc = _serve(tmp_path, port)
    try:
        banner = _banner(proc, port)
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/trackers",
            json={"name": "etl"},
            headers={"Authorization": f"Bearer {key}"},
        )
    finally:
        _stop(proc)
    assert response.status_code == 201
    assert key not in banner
    assert "set TELEMHQ_API_KEY to choose one" in banner
    assert "TELEMHQ_PING_KEY" not in banner  # shown on first start only
    assert "ping keys: telemhq-server ping-keys create NAME" in banner


def test_first_start_prints_a_ping_key_and_an_export_line_that_works(
    tmp_path: Path, db_url: str
) -> None:
    """The export line printed on first start, pasted into a shell, points a monitored job at
    the server: its first ping creates its tracker and is stored."""
    port = free_port()
    proc = _serve(tmp_path, port, db_url)
    try:
        banner = _banner(proc, port)
        admin = re.search(r"admin API key \(shown once, stored hashed\): (thq_\S+)", banner)
        assert admin, banner
        exports = [line.strip() for line in banner.splitlines() if "export " in line]
        assert len(exports) == 1, banner
        match = re.fullmatch(
            rf"export TELEMHQ_BASE_URL=http://127\.0\.0\.1:{port} "
            r"TELEMHQ_PING_KEY=([A-Za-z0-9_-]{22})",
            exports[0],
        )
        assert match, exports[0]
        assert f"ping key (a tracker per job, created on its first ping): {match[1]}" in banner

        job = run_job_after(exports[0], tmp_path)
        assert job.returncode == 0, job.stderr

        api = httpx.Client(
            base_url=f"http://127.0.0.1:{port}/api/v1",
            headers={"Authorization": f"Bearer {admin[1]}"},
        )
        with api:
            tracker = api.get("/trackers/first-ping").json()
            runs = api.get("/trackers/first-ping/runs").json()["items"]
            ping_keys = api.get("/ping-keys").json()["items"]
    finally:
        _stop(proc)
    assert tracker["name"] == "first ping"
    assert [r["status"] for r in runs] == ["success"]
    assert [(k["name"], k["key"], k["auto_create"]) for k in ping_keys] == [
        ("default", match[1], True)
    ]


def test_the_plugins_delivery_client_batches_to_the_real_server(server: LiveServer) -> None:
    """telemhq_plugins' worker sends waiting pings in one POST /ping/_batch: every ping is
    delivered and stored once."""
    from telemhq_plugins.core.config import Settings
    from telemhq_plugins.core.delivery import Client
    from telemhq_plugins.core.payload import Ping

    tracker = server.create_tracker(assertions=["records_processed > 0"])
    client = Client(Settings(base_url=server.base_url))
    try:
        for i in range(30):
            client.enqueue(Ping(fields={"records_processed": i + 1}), tracker["ping_url"])
        assert client.flush(timeout=20)
        assert client.stats()["delivered"] == 30
    finally:
        client.close(timeout=5)
    runs = server.runs(tracker["id"])
    assert len(runs) == 30
    assert all(run["passed"] for run in runs)
    assert "telemhq_pings_accepted_total" in server.client.get("/metrics").text


def test_logs_are_json_lines(server: LiveServer) -> None:
    server.client.post("/ping/unknown")
    lines = [line for line in server.output.splitlines() if line.startswith("{")]
    assert lines, server.output
    records = [json.loads(line) for line in lines]
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    assert any(r["logger"].startswith("_granian") for r in records)
    assert "[INFO]" not in server.output


def test_the_json_formatter_keeps_extra_fields_and_exceptions() -> None:
    import logging

    from telemhq_server.logs import JsonFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("telemhq_server.test").makeRecord(
            "telemhq_server.test",
            logging.ERROR,
            __file__,
            1,
            "batch of %d failed",
            (3,),
            sys.exc_info(),
            extra={"tracker_id": 7},
        )
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "batch of 3 failed"
    assert line["level"] == "error"
    assert line["tracker_id"] == 7
    assert "ValueError: boom" in line["exc"]


def test_a_worker_that_dies_is_replaced() -> None:
    import signal

    with LiveServer() as server:
        tracker = server.create_tracker()
        assert server._proc is not None
        workers = subprocess.run(
            ["pgrep", "-P", str(server._proc.pid)], capture_output=True, text=True, check=True
        ).stdout.split()
        os.kill(int(workers[0]), signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if server.ping(tracker).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert len(server.runs(tracker["id"])) == 1
