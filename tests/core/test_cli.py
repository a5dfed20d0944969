"""The ``telemhq`` command without a server: check, usage errors, run's exit code passthrough,
``ping`` through the plugins' hooks (against a loopback receiver).

``telemhq ping`` and ``telemhq run`` against the reference server are in tests/e2e.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from telemhq_plugins.core.cli import command_job, main
from telemhq_plugins.core.hookspecs import hookimpl
from telemhq_plugins.core.payload import Ping
from telemhq_plugins.core.plugins import plugin_manager
from tests.core.http_receiver import Receiver

TELEMHQ = [sys.executable, "-m", "telemhq_plugins.core.cli"]


def test_it_checks_assertions_locally(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["check", "records_processed > 0", "status = success", "--json", '{"records_processed": 0}']
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out == [
        "FAIL  records_processed > 0  (records_processed was 0, expected > 0)",
        "FAIL  status = success  (missing)",
    ]
    assert main(["check", "errors = 0", "--json", '{"errors": 0}']) == 0


def test_it_reads_the_payload_from_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = tmp_path / "run.json"
    payload.write_text('{"eval_score": 0.91}')
    assert main(["check", "eval_score >= 0.8", "-f", str(payload)]) == 0
    assert capsys.readouterr().out.startswith("PASS  eval_score >= 0.8")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "records_processed >"], "expected a value after the operator at position 19"),
        (["check", "errors = 0", "--json", "[1]"], "--json must be a JSON object, got list"),
        (["check", "errors = 0", "--json", "{"], "--json is not valid JSON"),
        (["check", "errors = 0", "-f", "/nonexistent.json"], "cannot read /nonexistent.json"),
        (["ping", "tok", "--json", '{"status": "great"}'], "status 'great' is not one of"),
        (["run", "--token", "t"], "run needs a command"),
    ],
)
def test_it_explains_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
    return {**env, **extra}


def test_it_passes_the_exit_code_and_stderr_through_when_unconfigured(tmp_path: Path) -> None:
    script = "import sys; print('out'); print('err-line', file=sys.stderr); sys.exit(3)"
    proc = subprocess.run(
        [*TELEMHQ, "run", "--", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 3
    assert proc.stdout == "out\n"
    assert "err-line" in proc.stderr
    assert "no tracker for python" in proc.stderr.replace(Path(sys.executable).name, "python")


def test_it_reports_a_command_that_cannot_start(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*TELEMHQ, "run", "--token", "t", "--", "/nonexistent/cmd"],
        capture_output=True,
        text=True,
        env=_clean_env(TELEMHQ_BASE_URL="http://127.0.0.1:9", TELEMHQ_MAX_RETRIES="0"),
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 127
    assert "cannot run /nonexistent/cmd" in proc.stderr


def test_it_prints_help_with_examples() -> None:
    proc = subprocess.run([*TELEMHQ, "--help"], capture_output=True, text=True, check=True)
    assert "telemhq run --token TOKEN -- python nightly_sync.py" in proc.stdout


class Scrubber:
    """A plugin: tags every ping with a team, drops the ones marked private."""

    @hookimpl
    def telemhq_enrich_ping(self, ping: Ping) -> None:
        ping.fields["team"] = "data"

    @hookimpl
    def telemhq_filter_ping(self, ping: Ping) -> bool:
        return not ping.fields.get("private")


def test_ping_runs_the_plugins_hooks_like_every_other_ping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [k for k in os.environ if k.startswith("TELEMHQ_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    plugin = Scrubber()
    plugin_manager().register(plugin)
    try:
        with Receiver() as receiver:
            assert main(["ping", receiver.url(), "--json", '{"rows": 3}']) == 0
            [stored] = receiver.stored.values()
            assert (stored["rows"], stored["team"]) == (3, "data")

            assert main(["ping", receiver.url(), "--json", '{"private": true}']) == 0
            assert "dropped the ping" in capsys.readouterr().err
            assert len(receiver.received) == 1  # the filtered ping was never sent
    finally:
        plugin_manager().unregister(plugin)


def test_it_refuses_an_unknown_command_that_no_adapter_adds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-adapter", "watch"])
    assert exc.value.code == 2
    assert "invalid choice: 'no-such-adapter'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "toml", "named"),
    [
        ({"TELEMHQ_TIMEOUT": "abc"}, None, "TELEMHQ_TIMEOUT='abc' (environment): not a number"),
        ({"TELEMHQ_MAX_RETRIES": "-1"}, None, "TELEMHQ_MAX_RETRIES='-1' (environment)"),
        ({}, "[telemhq]\nping_kye = 'k'\n", "unknown setting 'ping_kye' in "),
    ],
)
def test_run_runs_the_command_whatever_the_configuration(
    tmp_path: Path, env: dict[str, str], toml: str | None, named: str
) -> None:
    if toml is not None:
        (tmp_path / "telemhq.toml").write_text(toml)
    script = "import sys; print('ran'); sys.exit(5)"
    with Receiver() as receiver:
        proc = subprocess.run(
            [*TELEMHQ, "run", "--token", receiver.url(), "--", sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env=_clean_env(**env),
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
        assert (proc.returncode, proc.stdout) == (5, "ran\n")
        [line] = [text for text in proc.stderr.splitlines() if "monitoring is off" in text]
        assert line.startswith("telemhq: monitoring is off, running the command without it: ")
        assert named in line
        assert receiver.received == {}  # monitoring off: nothing sent


def test_ping_and_sync_refuse_a_bad_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [k for k in os.environ if k.startswith("TELEMHQ_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TELEMHQ_TIMEOUT", "abc")
    assert main(["ping", "http://127.0.0.1:9/ping/t"]) == 2
    assert "error: TELEMHQ_TIMEOUT='abc' (environment): not a number" in capsys.readouterr().err
    (tmp_path / "telemhq.toml").write_text("[[jobs]]\njob = 'a'\nschedule = '@daily'\n")
    assert main(["sync", "--dry-run", "--api-key", "k"]) == 2
    assert "TELEMHQ_TIMEOUT='abc'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("cmd", "job"),
    [
        (["python", "x.py", "--full"], "x"),
        (["/usr/bin/python3.12", "-u", "jobs/nightly_sync.py"], "nightly_sync"),
        (["python3", "-W", "ignore", "x.py"], "x"),
        (["python", "-m", "etl.load", "--day", "1"], "etl.load"),
        (["python", "-c", "print(1)"], "python"),
        (["bash", "backup.sh"], "backup"),
        (["./load.sh"], "load"),
        (["pg_dump", "-f", "x.sql"], "pg_dump"),
    ],
)
def test_run_names_the_job_after_the_script_not_the_interpreter(cmd: list[str], job: str) -> None:
    assert command_job(cmd) == job


def test_run_and_monitor_in_a_script_ping_the_scripts_name(tmp_path: Path) -> None:
    script = tmp_path / "nightly.py"
    script.write_text(
        "import telemhq_plugins\n\n@telemhq_plugins.monitor\ndef load():\n    pass\n\nload()\n"
    )
    with Receiver() as receiver:
        env = _clean_env(TELEMHQ_PING_URL=receiver.url())
        for argv in (
            [sys.executable, str(script)],
            [*TELEMHQ, "run", "--", sys.executable, str(script)],
        ):
            subprocess.run(argv, env=env, cwd=tmp_path, timeout=60, check=True)
        receiver.wait_for(stored=3)
        jobs = sorted(ping["job"] for ping in receiver.stored.values())
    assert jobs == ["nightly", "nightly.load", "nightly.load"]
