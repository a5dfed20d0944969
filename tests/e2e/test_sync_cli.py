"""``telemhq sync`` in a real process against the real server: a telemhq.toml [[jobs]] table
becomes trackers (schedule, assertions, tags), checked through the management API."""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

from tests.e2e.test_cli_and_monitor import run_cli
from tests.live_server import LiveServer

JOBS = """\
[telemhq]
base_url = "{base_url}"

[[jobs]]
job = "nightly-backup"
schedule = "0 3 * * *"
timezone = "Europe/Berlin"
grace = 900
assertions = ["files_copied > 0", "errors = 0"]
tags = ["backups"]
name = "Nightly backup"

[[jobs]]
job = "cache-warmer"
schedule = 600
"""


def run_sync(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli("sync", *args, cwd=cwd, **env)


def test_it_creates_and_updates_the_files_trackers(live_server: LiveServer, tmp_path: Path) -> None:
    (tmp_path / "telemhq.toml").write_text(JOBS.format(base_url=live_server.base_url))
    key = {"TELEMHQ_API_KEY": live_server.api_key}

    dry = run_sync("--dry-run", cwd=tmp_path, **key)
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing written" in dry.stdout
    assert "would create" in dry.stdout
    assert '"0 3 * * *"' in dry.stdout
    assert live_server.api("GET", "/trackers/nightly-backup").status_code == 404

    first = run_sync(cwd=tmp_path, **key)
    assert first.returncode == 0, first.stderr
    assert "2 job(s): 2 created" in first.stdout
    backup = live_server.tracker("nightly-backup")
    assert backup["name"] == "Nightly backup"
    assert backup["schedule"] == {
        "kind": "cron",
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "grace_seconds": 900,
    }
    assert backup["assertions"] == ["files_copied > 0", "errors = 0"]
    assert backup["tags"] == ["backups", "telemhq-sync"]
    assert live_server.tracker("cache-warmer")["schedule"]["period_seconds"] == 600

    again = run_sync(cwd=tmp_path, **key)
    assert "2 job(s): 2 unchanged" in again.stdout
    assert live_server.tracker("nightly-backup") == backup  # nothing written

    edited = JOBS.format(base_url=live_server.base_url).replace("grace = 900", "grace = 60")
    edited = edited.replace('"errors = 0"', '"errors <= 1"')
    (tmp_path / "telemhq.toml").write_text(edited.split('[[jobs]]\njob = "cache-warmer"')[0])
    dry = run_sync("--dry-run", "--prune", cwd=tmp_path, **key)
    assert dry.returncode == 0, dry.stderr
    assert "would update" in dry.stdout
    assert '"grace_seconds": 900' in dry.stdout
    assert '"grace_seconds": 60' in dry.stdout
    assert "would pause" in dry.stdout
    assert live_server.tracker("nightly-backup") == backup
    assert live_server.tracker("cache-warmer")["paused"] is False

    pruned = run_sync("--prune", cwd=tmp_path, **key)
    assert pruned.returncode == 0, pruned.stderr
    assert "1 paused, 1 updated" in pruned.stdout
    updated = live_server.tracker("nightly-backup")
    assert updated["schedule"]["grace_seconds"] == 60
    assert updated["assertions"] == ["files_copied > 0", "errors <= 1"]
    assert live_server.tracker("cache-warmer")["paused"] is True


def test_it_reads_the_file_named_by_config(live_server: LiveServer, tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text('[[jobs]]\njob = "from-config-flag"\nschedule = ["0 9 * * *", "0 17 * * *"]\n')
    proc = run_sync(
        "-c",
        str(path),
        "--api-key",
        live_server.api_key,
        "--tag",
        "ops",
        cwd=tmp_path,
        TELEMHQ_BASE_URL=live_server.base_url,
    )
    assert proc.returncode == 0, proc.stderr
    tracker = live_server.tracker("from-config-flag")
    assert tracker["schedule"]["cron"] == "0 9,17 * * *"
    assert tracker["tags"] == ["ops"]


def test_it_says_which_job_and_field_is_wrong(live_server: LiveServer, tmp_path: Path) -> None:
    key = {"TELEMHQ_API_KEY": live_server.api_key, "TELEMHQ_BASE_URL": live_server.base_url}
    (tmp_path / "telemhq.toml").write_text(
        textwrap.dedent(
            """\
            [[jobs]]
            job = "ok"
            [[jobs]]
            job = "bad-grace"
            grace = "soon"
            """
        )
    )
    proc = run_sync(cwd=tmp_path, **key)
    assert proc.returncode == 2
    assert "[[jobs]] #2 (bad-grace): grace must be a number of seconds >= 0" in proc.stderr
    assert live_server.api("GET", "/trackers/ok").status_code == 404  # nothing applied

    (tmp_path / "telemhq.toml").write_text("[[jobs]\njob = 1\n")
    proc = run_sync(cwd=tmp_path, **key)
    assert proc.returncode == 2
    assert "telemhq.toml: not valid TOML" in proc.stderr


def test_the_server_refusing_a_job_fails_the_command(
    live_server: LiveServer, tmp_path: Path
) -> None:
    (tmp_path / "telemhq.toml").write_text(
        '[[jobs]]\njob = "cli-bad-cron"\nschedule = "0 25 * * *"\n'
    )
    proc = run_sync(
        cwd=tmp_path,
        TELEMHQ_API_KEY=live_server.api_key,
        TELEMHQ_BASE_URL=live_server.base_url,
    )
    assert proc.returncode == 1
    assert "schedule.cron: not a valid cron expression: '0 25 * * *'" in proc.stdout


def test_it_needs_an_api_key(live_server: LiveServer, tmp_path: Path) -> None:
    (tmp_path / "telemhq.toml").write_text('[[jobs]]\njob = "no-key"\n')
    proc = run_sync(cwd=tmp_path, TELEMHQ_BASE_URL=live_server.base_url)
    assert proc.returncode == 2
    assert "TELEMHQ_API_KEY" in proc.stderr
    wrong = run_sync(
        cwd=tmp_path, TELEMHQ_BASE_URL=live_server.base_url, TELEMHQ_API_KEY="thq_wrong"
    )
    assert wrong.returncode == 1
    assert "HTTP 401: invalid API key" in wrong.stdout


def test_the_documented_telemhq_toml_applies_as_written(
    live_server: LiveServer, tmp_path: Path
) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "schedules.md").read_text()
    [example] = re.findall(r"```toml\n(# telemhq.toml\n.*?)```", doc, flags=re.DOTALL)
    base = "https://telemhq.example.com"
    assert base in example
    (tmp_path / "telemhq.toml").write_text(example.replace(base, live_server.base_url))
    proc = run_sync(cwd=tmp_path, TELEMHQ_API_KEY=live_server.api_key)
    assert proc.returncode == 0, proc.stderr
    assert "4 job(s): " in proc.stdout  # created, or updated where another test made one
    backup = live_server.tracker("nightly-backup")
    assert backup["schedule"] == {
        "kind": "cron",
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "grace_seconds": 900,
    }
    assert backup["assertions"] == ["files_copied > 0", "errors = 0"]
    assert live_server.tracker("cache-warmer")["schedule"]["period_seconds"] == 600
    assert live_server.tracker("cache-warmer")["paused"] is False
    assert live_server.tracker("reports")["schedule"]["cron"] == "0 9 * * 1-5,6"
    assert live_server.tracker("manual-export")["assertions"] == ["rows > 0"]
    again = run_sync(cwd=tmp_path, TELEMHQ_API_KEY=live_server.api_key)
    assert "4 job(s): 4 unchanged" in again.stdout
