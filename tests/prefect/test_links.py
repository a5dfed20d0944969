"""The ``ui_url`` of the ``prefect`` block, from Prefect's ``PREFECT_UI_URL``: a real flow and
its task against a real Prefect API server, their pings stored by the real reference server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.settings import PREFECT_UI_URL, temporary_settings
from pydantic import SecretStr

from telemhq_plugins.core import Client
from telemhq_plugins.prefect import _links
from tests.kit import wait_for_runs
from tests.live_server import LiveServer
from tests.prefect import flows

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

BASE = "https://prefect.example.com"


@pytest.fixture
def ui_url() -> Iterator[str]:
    """``PREFECT_UI_URL`` set as Prefect's settings hold it; the adapter reads it once per
    process, so its memory of it is cleared around the test."""
    with temporary_settings({PREFECT_UI_URL: BASE + "/"}):
        _links.base_url.cache_clear()
        yield BASE
    _links.base_url.cache_clear()


def test_a_flow_run_and_its_task_run_link_to_prefects_ui(
    live_server: LiveServer, client: Client, ui_url: str
) -> None:
    assert flows.acc_success(2, api=SecretStr("x")) == 2
    [run] = wait_for_runs(live_server, "acc-success", 1)
    flow_run_id = run["payload"]["prefect"]["flow_run_id"]
    assert run["payload"]["prefect"]["ui_url"] == f"{ui_url}/runs/flow-run/{flow_run_id}"
    [task_run] = wait_for_runs(live_server, "acc-success-extract", 1)
    block = task_run["payload"]["prefect"]
    assert block["ui_url"] == f"{ui_url}/runs/task-run/{block['task_run_id']}"
    assert block["flow_run_id"] == flow_run_id
