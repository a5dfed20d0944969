"""``telemhq ping``/``run`` and ``@monitor`` in real processes against the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.live_server import LiveServer

TELEMHQ = [sys.executable, "-m", "telemhq_plugins.core.cli"]


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
    return subprocess.run(
        [*TELEMHQ, *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_it_pings_and_prints_the_servers_verdict(live_server: LiveServer, tmp_path: Path) -> None:
    tracker = live_server.create_tracker(name="cli ping", assertions=["records_processed > 0"])
    proc = run_cli(
        "ping",
        tracker["token"],
        "--json",
        '{"records_processed": 0}',
        cwd=tmp_path,
        TELEMHQ_BASE_URL=live_server.base_url,
    )
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["state"] == "failing"
    assert answer["assertions"][0]["reason"] == "records_processed was 0, expected > 0"
    [run] = live_server.runs(tracker["id"])
    assert run["payload"]["records_processed"] == 0


def test_it_exits_non_zero_when_the_ping_is_rejected(
    live_server: LiveServer, tmp_path: Path
) -> None:
    proc = run_cli("ping", f"{live_server.base_url}/ping/no-such-token", cwd=tmp_path)
    assert proc.returncode == 1
    assert "ping not delivered: HTTP 404" in proc.stderr


def test_it_monitors_a_command_and_passes_its_exit_code(
    live_server: LiveServer, tmp_path: Path
) -> None:
    tracker = live_server.create_tracker(name="cli run")
    ok = run_cli(
        "run", "--start", "--", sys.executable, "-c", "print('hi')",
        cwd=tmp_path, TELEMHQ_PING_URL=tracker["ping_url"],
    )  # fmt: skip
    assert (ok.returncode, ok.stdout) == (0, "hi\n")
    script = "import sys; print('disk full', file=sys.stderr); sys.exit(4)"
    bad = run_cli(
        "run", "--token", tracker["token"], "--", sys.executable, "-c", script,
        cwd=tmp_path, TELEMHQ_BASE_URL=live_server.base_url,
    )  # fmt: skip
    assert bad.returncode == 4
    assert "disk full" in bad.stderr
    failure, success, start = live_server.runs(tracker["id"])
    assert start["status"] == "start"
    assert success["status"] == "success"
    assert success["payload"]["exit_code"] == 0
    assert start["payload"]["run_id"] == success["payload"]["run_id"]
    assert failure["status"] == "failure"
    assert failure["payload"]["exit_code"] == 4
    assert failure["payload"]["error"]["message"].endswith("exited with status 4")
    assert "disk full" in failure["payload"]["error"]["traceback"]
    assert live_server.tracker(tracker["id"])["state"] == "failing"


def test_it_delivers_from_a_script_that_exits_at_once(
    live_server: LiveServer, tmp_path: Path
) -> None:
    tracker = live_server.create_tracker(name="script", assertions=["eval_score >= 0.8"])
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import telemhq_plugins

            @telemhq_plugins.monitor(job="nightly-eval")
            def evaluate():
                telemhq_plugins.report(eval_score=0.62, tokens=1200)

            evaluate()
            """
        )
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
    subprocess.run(
        [sys.executable, str(script)],
        env={**clean, "TELEMHQ_PING_URL": tracker["ping_url"]},
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    [run] = live_server.runs(tracker["id"])
    assert run["payload"]["job"] == "nightly-eval"
    assert run["payload"]["tokens"] == 1200
    assert run["passed"] is False
    assert run["assertions"][0]["reason"] == "eval_score was 0.62, expected >= 0.8"
    assert live_server.tracker(tracker["id"])["state"] == "failing"
