"""The Dagster quick starts of the README and docs/dagster.md, run as written by Dagster's own
CLI against the reference server: ``dagster job execute`` for the step pings, and
``dagster sensor preview`` of the schedule sensor for the tracker's schedule."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.docs_snippets import (
    ROOT,
    assert_one_success_each,
    exports,
    run_command,
    snippet,
    venv_env,
)
from tests.kit import new_ping_key, tracker_by_slug
from tests.live_server import LiveServer

pytestmark = pytest.mark.slow

DAGSTER = str(Path(sys.executable).with_name("dagster"))
README = ROOT / "README.md"
PAGE = ROOT / "docs" / "dagster.md"


class QuickStart(NamedTuple):
    doc: Path
    env_block: str
    defs_block: str
    job: str
    expected: dict[str, dict[str, Any]]  # tracker slug -> fields of its one run
    cron: str | None  # the schedule the job's tracker gets, if the block has one


QUICK_STARTS = [
    pytest.param(
        QuickStart(
            README,
            "readme-dagster-env",
            "readme-dagster-defs",
            "daily_orders",
            {"daily-orders-orders": {"records_processed": 450}},
            None,
        ),
        id="README",
    ),
    pytest.param(
        QuickStart(
            PAGE,
            "dagster-env",
            "dagster-defs",
            "nightly_etl",
            {
                "nightly-etl-raw-orders": {"source_files": 1},
                "nightly-etl-order-summary": {"records_processed": 3},
            },
            "0 3 * * *",
        ),
        id="dagster.md",
    ),
]


def _dagster(*args: str, env: dict[str, str], cwd: Path) -> None:
    run_command([DAGSTER, *args], env=env, cwd=cwd)


@pytest.mark.parametrize("quick_start", QUICK_STARTS)
def test_the_quick_start_runs_as_written(tmp_path: Path, quick_start: QuickStart) -> None:
    doc = quick_start.doc
    defs = snippet(doc, quick_start.defs_block).code
    (tmp_path / "definitions.py").write_text(defs)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with LiveServer() as live:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
        env |= exports(
            snippet(doc, quick_start.env_block), base_url=live.base_url, ping_key=new_ping_key(live)
        )
        env = venv_env({**env, "DAGSTER_HOME": str(home)})
        _dagster(
            "job", "execute", "-f", "definitions.py", "-j", quick_start.job, env=env, cwd=tmp_path
        )
        assert_one_success_each(live, quick_start.expected)
        if quick_start.cron is None:
            return
        env["TELEMHQ_API_KEY"] = live.api_key  # "with TELEMHQ_API_KEY set too"
        _dagster(
            "sensor", "preview", "telemhq_schedules", "-f", "definitions.py", env=env, cwd=tmp_path
        )
        slug = quick_start.job.replace("_", "-")
        deadline = time.monotonic() + 30
        while (tracker := tracker_by_slug(live, slug)) is None or tracker["schedule"] is None:
            assert time.monotonic() < deadline, tracker
            time.sleep(0.1)
        assert tracker["schedule"]["kind"] == "cron"
        assert tracker["schedule"]["cron"] == quick_start.cron
