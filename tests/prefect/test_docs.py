"""The Prefect quick starts of the README and docs/prefect.md, and the page's deployment
(a process work pool, the ping key in a ``Secret`` block reached through ``job_variables``, a
real worker), run as written against a real Prefect API and the reference server."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.docs_snippets import (
    DOCS_BASE_URL,
    ROOT,
    assert_one_success_each,
    exports,
    run_bash,
    run_command,
    snippet,
    venv_env,
)
from tests.kit import new_ping_key, statuses_oldest_first, wait_for_runs
from tests.live_server import LiveServer
from tests.prefect.conftest import PREFECT_ENV

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

README = ROOT / "README.md"
PAGE = ROOT / "docs" / "prefect.md"


def _base_env() -> dict[str, str]:
    """This environment with the session's Prefect API and no TELEMHQ_ setting of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
    return venv_env({**env, **PREFECT_ENV})


def _write(folder: Path, block_code: str) -> Path:
    """A python block saved under the file name its first line gives (``# etl.py``)."""
    path = folder / block_code.splitlines()[0].removeprefix("# ")
    path.write_text(block_code)
    return path


class QuickStart(NamedTuple):
    doc: Path
    env_block: str
    flow_block: str
    run_block: str | None  # the command that runs it; None: ``python <file>``
    expected: dict[str, dict[str, Any]]  # tracker slug -> fields of its one run


QUICK_STARTS = [
    pytest.param(
        QuickStart(
            README,
            "readme-prefect-env",
            "readme-prefect-flow",
            None,
            {"nightly-sync": {"records_processed": 450}},
        ),
        id="README",
    ),
    pytest.param(
        QuickStart(
            PAGE,
            "prefect-env",
            "prefect-flow",
            "prefect-run",
            {"nightly-sync": {"records_processed": 2}, "nightly-sync-extract": {}},
        ),
        id="prefect.md",
    ),
]


@pytest.mark.parametrize("quick_start", QUICK_STARTS)
def test_the_quick_start_runs_as_written(tmp_path: Path, quick_start: QuickStart) -> None:
    doc = quick_start.doc
    script = _write(tmp_path, snippet(doc, quick_start.flow_block).code)
    with LiveServer() as live:
        env = _base_env() | exports(
            snippet(doc, quick_start.env_block), base_url=live.base_url, ping_key=new_ping_key(live)
        )
        if quick_start.run_block is None:
            run_command([sys.executable, script.name], env=env, cwd=tmp_path)
        else:
            ran = run_bash(snippet(doc, quick_start.run_block), env=env, cwd=tmp_path, timeout=180)
            assert ran.returncode == 0, ran.stderr[-3000:]
        assert_one_success_each(live, quick_start.expected)


PLAIN_FLOW = """
from prefect import flow, task

import telemhq_plugins


@task
def extract() -> list[int]:
    return [1, 2, 3]


@flow
def plain_sync() -> None:
    telemhq_plugins.report(records_processed=len(extract()))


if __name__ == "__main__":
    plain_sync()
"""


def test_the_documented_switches_monitor_a_flow_without_hooks(tmp_path: Path) -> None:
    (tmp_path / "plain.py").write_text(PLAIN_FLOW)
    with LiveServer() as live:
        env = _base_env() | exports(
            snippet(PAGE, "prefect-env"), base_url=live.base_url, ping_key=new_ping_key(live)
        )
        env |= exports(snippet(PAGE, "prefect-auto"), base_url=live.base_url, ping_key="")
        run_command([sys.executable, "plain.py"], env=env, cwd=tmp_path)
        assert_one_success_each(
            live, {"plain-sync": {"records_processed": 3}, "plain-sync-extract": {}}
        )


def test_the_deployment_reaches_the_worker_with_the_key_from_a_secret_block(
    tmp_path: Path,
) -> None:
    _write(tmp_path, snippet(PAGE, "prefect-flow").code)
    with LiveServer() as live:
        key = new_ping_key(live)
        deploy = snippet(PAGE, "prefect-deploy").code
        assert "<your ping key>" in deploy
        assert DOCS_BASE_URL in deploy
        _write(
            tmp_path, deploy.replace("<your ping key>", key).replace(DOCS_BASE_URL, live.base_url)
        )
        # Nothing TelemHQ in the worker's own environment: the run gets it from job_variables.
        env = _base_env()
        for line in snippet(PAGE, "prefect-deploy-run").code.splitlines():
            command = shlex.split(line, comments=True)
            if command[:2] == ["prefect", "worker"]:
                command.append("--run-once")  # the worker takes the run, then returns
            run_command(command, env=env, cwd=tmp_path)
        runs = wait_for_runs(live, "nightly-sync", 1, timeout=120)
        assert statuses_oldest_first(runs) == ["success"], runs
        payload = runs[0]["payload"]
        assert payload["records_processed"] == 2
        assert payload["prefect"]["deployment"]["name"] == "nightly"
        assert payload["prefect"]["work_pool"] == "etl"
