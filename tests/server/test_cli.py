"""``telemhq-server`` commands run for real, in a subprocess: plain-text help, and
``ping-keys create`` / ``ping-keys list`` on the database ``serve`` uses (SQLite and
PostgreSQL), whose keys and export line then work against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.live_server import LiveServer
from tests.server.helpers import run_job_after

SERVER = str(Path(sys.executable).with_name("telemhq-server"))


def telemhq_server(
    *args: str, cwd: Path, database_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
    if database_url is not None:
        env["TELEMHQ_DATABASE_URL"] = database_url
    return subprocess.run(
        [SERVER, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    "command",
    [[], ["serve"], ["migrate"], ["ping-keys"], ["ping-keys", "create"], ["ping-keys", "list"]],
    ids=lambda c: " ".join(c) or "top",
)
def test_help_is_plain_text(command: list[str], tmp_path: Path) -> None:
    answer = telemhq_server(*command, "--help", cwd=tmp_path)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("usage: telemhq-server")
    assert "`" not in answer.stdout
    assert not list(tmp_path.iterdir())  # help touches no database


@pytest.mark.slow
def test_ping_keys_create_prints_a_key_and_an_export_line_that_work(
    db_url: str, tmp_path: Path
) -> None:
    created = telemhq_server("ping-keys", "create", "etl team", cwd=tmp_path, database_url=db_url)
    assert created.returncode == 0, created.stderr
    first, export = created.stdout.splitlines()
    key = re.fullmatch(
        r"ping key 'etl team' \(creates trackers on a first ping\): ([A-Za-z0-9_-]{22})", first
    )
    assert key, created.stdout
    assert export == f"export TELEMHQ_BASE_URL=http://127.0.0.1:8000 TELEMHQ_PING_KEY={key[1]}"
    strict_args = ("create", "strict", "--no-auto-create", "--base-url", "http://h:1/")
    refusing = telemhq_server("ping-keys", *strict_args, cwd=tmp_path, database_url=db_url)
    assert refusing.returncode == 0, refusing.stderr
    assert "does not create trackers" in refusing.stdout
    strict = refusing.stdout.split()[-1].removeprefix("TELEMHQ_PING_KEY=")
    assert refusing.stdout.splitlines()[-1].startswith("export TELEMHQ_BASE_URL=http://h:1 ")

    with LiveServer(db_url) as server:
        job = run_job_after(export.replace("http://127.0.0.1:8000", server.base_url), tmp_path)
        assert job.returncode == 0, job.stderr
        tracker = server.tracker("first-ping")
        assert [r["status"] for r in server.runs(tracker["id"])] == ["success"]
        assert httpx.post(f"{server.base_url}/ping/{strict}/new-job").status_code == 404
        listed = server.api("GET", "/ping-keys").json()["items"]
    assert [(k["name"], k["key"], k["auto_create"]) for k in listed] == [
        ("etl team", key[1], True),
        ("strict", strict, False),
    ]


@pytest.mark.slow
def test_ping_keys_list_shows_names_and_hints_never_whole_keys(db_url: str, tmp_path: Path) -> None:
    empty = telemhq_server("ping-keys", "list", cwd=tmp_path, database_url=db_url)
    assert empty.returncode == 0, empty.stderr
    assert "no ping keys yet" in empty.stdout
    keys = []
    for name in ("alpha", "beta"):
        out = telemhq_server("ping-keys", "create", name, cwd=tmp_path, database_url=db_url)
        keys.append(out.stdout.split()[-1].removeprefix("TELEMHQ_PING_KEY="))
    listed = telemhq_server("ping-keys", "list", cwd=tmp_path, database_url=db_url)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "KEY", "AUTO-CREATE", "CREATED", "NAME"]
    assert [row.split()[1:3] + row.split()[4:] for row in rows] == [
        [keys[0][:4] + "...", "yes", "alpha"],
        [keys[1][:4] + "...", "yes", "beta"],
    ]
    assert not any(key in listed.stdout for key in keys)


def test_ping_keys_create_refuses_an_empty_name(tmp_path: Path) -> None:
    answer = telemhq_server("ping-keys", "create", "  ", cwd=tmp_path)
    assert answer.returncode == 2
    assert "the name must be 1 to 200 characters" in answer.stderr
    assert not list(tmp_path.iterdir())  # refused before touching a database


def test_the_commands_use_the_database_serve_uses_by_default(tmp_path: Path) -> None:
    """No setting: ./telemhq.db in the working directory, as for serve."""
    created = telemhq_server("ping-keys", "create", "local", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "telemhq.db").exists()
    listed = telemhq_server("ping-keys", "list", cwd=tmp_path)
    assert "local" in listed.stdout
