"""The Celery quick starts of the README and docs/celery.md, run as written: ``proj.py`` from
the page, a real worker started by the page's own commands (prefork, detached), tasks sent
to it, and the pings stored by the reference server."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.docs_snippets import ROOT, exports, run_bash, run_command, snippet
from tests.kit import new_ping_key, statuses_oldest_first, wait_for_runs
from tests.live_server import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.services]

README = ROOT / "README.md"
PAGE = ROOT / "docs" / "celery.md"
DOCS_BROKER = "redis://127.0.0.1:6379/0"


class QuickStart(NamedTuple):
    doc: Path
    env_block: str
    app_block: str
    expected: dict[str, tuple[list[str], dict[str, Any]]]  # slug -> statuses, fields of the last


QUICK_STARTS = [
    pytest.param(
        QuickStart(
            README,
            "readme-celery-env",
            "readme-celery-app",
            {"proj-sync-orders": (["success"], {"records_processed": 2, "errors": 0})},
        ),
        id="README",
    ),
    pytest.param(
        QuickStart(
            PAGE,
            "celery-env",
            "celery-app",
            {
                "proj-sync-orders": (["success"], {"records_processed": 2}),
                "proj-nightly-report": (["start", "failure"], {}),
            },
        ),
        id="celery.md",
    ),
]


def _stop_worker(folder: Path) -> None:
    """Stop the detached worker this test started (its pid file), and wait for it to go."""
    pidfile = folder / "worker.pid"
    deadline = time.monotonic() + 30
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    _stop_worker(tmp_path)


@pytest.mark.parametrize("quick_start", QUICK_STARTS)
def test_the_quick_start_runs_as_written(
    folder: Path, redis_db: tuple[str, str], quick_start: QuickStart
) -> None:
    doc = quick_start.doc
    url, prefix = redis_db
    code = snippet(doc, quick_start.app_block).code
    assert DOCS_BROKER in code
    # This run's own Redis database and key prefix, so that no other test's worker takes
    # these tasks: the only change made to the page's code.
    code = code.replace(DOCS_BROKER, url)
    code += f"\napp.conf.broker_transport_options = {{'global_keyprefix': {prefix!r}}}\n"
    (folder / "proj.py").write_text(code)
    with LiveServer() as live:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
        env |= exports(
            snippet(doc, quick_start.env_block), base_url=live.base_url, ping_key=new_ping_key(live)
        )
        if doc == PAGE:
            ran = run_bash(snippet(PAGE, "celery-run"), env=env, cwd=folder, timeout=120)
            assert ran.returncode == 0, ran.stderr[-3000:]
            assert "proj.sync_orders" in ran.stdout, ran.stdout
        else:
            worker = ["celery", "-A", "proj", "worker", "--detach", "--pidfile=worker.pid"]
            run_command(worker, env=env, cwd=folder)
            code = "from proj import sync_orders; sync_orders.delay()"
            run_command([sys.executable, "-c", code], env=env, cwd=folder)
        for slug, (expected, fields) in quick_start.expected.items():
            runs = wait_for_runs(live, slug, len(expected), timeout=60)
            assert statuses_oldest_first(runs) == expected, runs
            for field, value in fields.items():
                assert runs[0]["payload"][field] == value, runs[0]["payload"]
