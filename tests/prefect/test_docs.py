"""docs/prefect.md's quick start, as written, run against both real servers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kit import statuses_oldest_first, wait_for_runs
from tests.live_server import LiveServer
from tests.prefect.conftest import telemhq_env

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

DOC = Path(__file__).resolve().parents[2] / "docs" / "prefect.md"


def python_block(starting_with: str) -> str:
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL):
        if block.startswith(starting_with):
            return str(block)
    raise AssertionError(f"no python block starting with {starting_with!r} in {DOC}")


def test_the_quick_start_flow_pings_as_documented(
    live_server: LiveServer, ping_key: str, tmp_path: Path
) -> None:
    script = tmp_path / "etl.py"
    script.write_text(python_block("# etl.py"))
    proc = subprocess.run(
        [sys.executable, str(script)],
        env=telemhq_env(live_server, ping_key),
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    [run] = wait_for_runs(live_server, "nightly-sync", 1)
    assert statuses_oldest_first([run]) == ["success"]
    assert run["payload"]["records_processed"] == 2
    [extract] = wait_for_runs(live_server, "nightly-sync-extract", 1)
    assert statuses_oldest_first([extract]) == ["success"]
