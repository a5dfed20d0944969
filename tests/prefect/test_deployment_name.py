"""The deployment's name in the ``prefect`` block. Which process may trust
``PREFECT__DEPLOYMENT_NAME`` (unit tests of the rule, no network), and the runner-side lookup
when no Prefect API answers: the hook returns within its bound and the ping, stored by the
reference server, still carries the deployment's id."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from telemhq_plugins.prefect._deployment import (
    LOOKUP_TIMEOUT,
    add_looked_up_name,
    name_from_environment,
)
from telemhq_plugins.prefect._details import flow_details
from tests.kit import statuses_oldest_first, wait_for_runs
from tests.live_server import LiveServer, free_port
from tests.prefect import runner_hook
from tests.prefect.conftest import telemhq_env

NAME = "PREFECT__DEPLOYMENT_NAME"
DEPLOYMENT_ID = "PREFECT__DEPLOYMENT_ID"
FLOW_RUN_ID = "PREFECT__FLOW_RUN_ID"


@flow(name="nightly-sync")
def nightly_sync() -> None:
    pass


def flow_run(deployment_id: uuid.UUID | None) -> FlowRun:
    return FlowRun(name="a-run", flow_id=uuid.uuid4(), deployment_id=deployment_id)


@pytest.fixture(autouse=True)
def no_prefect_run_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (NAME, DEPLOYMENT_ID, FLOW_RUN_ID):
        monkeypatch.delenv(name, raising=False)


class SilentAPI:
    """A Prefect API URL whose port accepts connections and never answers (the kernel's
    backlog accepts them; nothing reads): a request there waits for its read timeout."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/api"

    def connections(self) -> int:
        """How many connections were made to it since the last call."""
        count = 0
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


@pytest.fixture
def silent_api() -> Iterator[SilentAPI]:
    api = SilentAPI()
    yield api
    api.listener.close()


def test_the_name_variable_is_sent_for_the_run_it_was_set_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployed = flow_run(uuid.uuid4())
    monkeypatch.setenv(NAME, "nightly")
    # serve(): the name alone.
    assert name_from_environment(deployed) == "nightly"
    # A worker: the deployment's id too, and the run's.
    monkeypatch.setenv(DEPLOYMENT_ID, str(deployed.deployment_id))
    monkeypatch.setenv(FLOW_RUN_ID, str(deployed.id))
    block = flow_details(nightly_sync, deployed, 1)
    assert block["deployment"] == {"id": str(deployed.deployment_id), "name": "nightly"}


def test_the_name_variable_of_another_run_is_never_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    parent = flow_run(uuid.uuid4())
    monkeypatch.setenv(NAME, "nightly")
    monkeypatch.setenv(DEPLOYMENT_ID, str(parent.deployment_id))
    monkeypatch.setenv(FLOW_RUN_ID, str(parent.id))
    # A subflow of the deployed run has no deployment of its own.
    subflow = flow_run(None)
    assert name_from_environment(subflow) is None
    assert "deployment" not in flow_details(nightly_sync, subflow, 1)
    # A run of another deployment in a process that inherited the variables.
    other = flow_run(uuid.uuid4())
    assert name_from_environment(other) is None
    assert flow_details(nightly_sync, other, 1)["deployment"] == {"id": str(other.deployment_id)}
    # Without the deployment's id, a run id that is not this run's says the name is not its.
    monkeypatch.delenv(DEPLOYMENT_ID)
    assert name_from_environment(other) is None
    monkeypatch.delenv(FLOW_RUN_ID)
    assert name_from_environment(other) == "nightly"


def test_a_runners_own_variables_are_not_its_served_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner started inside another deployed run inherits that run's name: the runs it
    serves (reported from the runner's process) never get it, unless the id says it is theirs."""
    served = flow_run(uuid.uuid4())
    monkeypatch.setenv(NAME, "outer")
    assert flow_details(nightly_sync, served, 1, elsewhere=True)["deployment"] == {
        "id": str(served.deployment_id)
    }
    monkeypatch.setenv(DEPLOYMENT_ID, str(served.deployment_id))
    block = flow_details(nightly_sync, served, 1, elsewhere=True)
    assert block["deployment"] == {"id": str(served.deployment_id), "name": "outer"}


def test_the_runs_own_process_never_asks_the_api(
    monkeypatch: pytest.MonkeyPatch, silent_api: SilentAPI
) -> None:
    """A run reported as opened elsewhere, in the process Prefect started for it
    (``PREFECT__FLOW_RUN_ID``), takes the variable or nothing: no connection is made."""
    deployed = flow_run(uuid.uuid4())
    monkeypatch.setenv(FLOW_RUN_ID, str(deployed.id))
    with temporary_settings({PREFECT_API_URL: silent_api.url}):
        details = flow_details(nightly_sync, deployed, 1, elsewhere=True)
        add_looked_up_name(details, deployed)
        assert details["deployment"] == {"id": str(deployed.deployment_id)}
    assert silent_api.connections() == 0
    # The count sees a connection when there is one.
    socket.create_connection(("127.0.0.1", silent_api.listener.getsockname()[1])).close()
    assert silent_api.connections() == 1


@pytest.mark.slow
@pytest.mark.parametrize("api", ["closed", "silent"])
def test_the_runner_side_lookup_is_bounded_when_the_api_does_not_answer(
    api: str, live_server: LiveServer, ping_key: str, silent_api: SilentAPI
) -> None:
    """``closed``: nothing listens (Prefect's client fails at once). ``silent``: connections
    are accepted and never answered (Prefect's client would wait 60 s, then retry)."""
    url = silent_api.url if api == "silent" else f"http://127.0.0.1:{free_port()}/api"
    job = f"unreachable-api-{api}"
    run_id, deployment_id = str(uuid.uuid4()), str(uuid.uuid4())
    env = telemhq_env(live_server, ping_key)
    env.update(PREFECT_API_URL=url)
    for name in (NAME, DEPLOYMENT_ID, FLOW_RUN_ID):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, str(Path(runner_hook.__file__)), job, run_id, deployment_id],
        env=env,
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    seconds = json.loads(proc.stdout.decode().strip().splitlines()[-1])["hook_seconds"]
    [run] = wait_for_runs(live_server, job, 1)
    assert statuses_oldest_first([run]) == ["failure"]
    assert run["run_id"] == run_id
    assert run["payload"]["prefect"]["deployment"] == {"id": deployment_id}
    # The bound is LOOKUP_TIMEOUT, then the hook's flush (bounded too); a generous margin for a
    # loaded machine, far below Prefect's own 60 s read timeout that an unbounded wait would hit.
    print(f"{api}: the hook took {seconds:.2f} s")
    assert seconds < LOOKUP_TIMEOUT + 15
