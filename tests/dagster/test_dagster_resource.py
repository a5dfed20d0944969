"""``TelemHQResource`` configures the hooks and sensors of its ``Definitions`` (real runs, the
real reference server over HTTP); the process's own client knows no tracker here."""

from collections.abc import Iterator

import pytest
from dagster import (
    DagsterInstance,
    Definitions,
    OpExecutionContext,
    build_sensor_context,
    job,
    op,
)

from telemhq_plugins.core import Client
from telemhq_plugins.dagster import TelemHQResource, telemhq_hooks, telemhq_sensors
from tests.dagster.conftest import Stored
from tests.kit import client_for, process_client


@pytest.fixture
def unconfigured(server: Stored) -> Iterator[Client]:
    """A process client with no token nor ping key: every ping it is asked for goes nowhere."""
    with process_client(client_for(server.live)) as current:
        yield current


@op
def measured(context: OpExecutionContext, telemhq: TelemHQResource) -> int:
    telemhq.report(files=3)
    telemhq.ping("success", job="resource-manual", note_count=1)
    return 3


@job(hooks=telemhq_hooks(resource_key="telemhq"))
def resourced() -> None:
    measured()


def resource_for(server: Stored) -> TelemHQResource:
    return TelemHQResource(base_url=server.base_url, ping_key=server.ping_key, timeout=2.0)


def test_the_resource_configures_the_hooks(
    server: Stored, unconfigured: Client, instance: DagsterInstance
) -> None:
    defs = Definitions(jobs=[resourced], resources={"telemhq": resource_for(server)})
    result = defs.resolve_job_def("resourced").execute_in_process(instance=instance)
    assert result.success
    (ping,) = server.wait("resourced.measured", 1, f"{result.run_id}:measured")
    assert ping["status"] == "success"
    assert ping["files"] == 3  # the resource's report()
    (manual,) = server.wait("resource-manual", 1)
    assert manual["status"] == "success"
    assert manual["note_count"] == 1
    assert manual["orchestrator"] == "dagster"


def test_the_resource_configures_the_sensors(
    server: Stored, unconfigured: Client, instance: DagsterInstance
) -> None:
    defs = Definitions(
        jobs=[resourced],
        sensors=telemhq_sensors(monitor_all_code_locations=True, sync_schedules=False),
        resources={"telemhq": resource_for(server)},
    )
    repo = defs.get_repository_def()
    sensor = repo.get_sensor_def("telemhq_run_success")
    first = sensor.evaluate_tick(build_sensor_context(instance=instance, repository_def=repo))
    result = defs.resolve_job_def("resourced").execute_in_process(instance=instance)
    sensor.evaluate_tick(
        build_sensor_context(instance=instance, cursor=first.cursor, repository_def=repo)
    )
    (ping,) = server.wait("resourced", 1, result.run_id)
    assert ping["status"] == "success"
    assert ping["dagster"]["job_name"] == "resourced"
