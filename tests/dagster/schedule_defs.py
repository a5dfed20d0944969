"""A code location with one running schedule, for ``dagster schedule stop/start`` to switch."""

from dagster import DefaultScheduleStatus, Definitions, EnvVar, ScheduleDefinition, job, op

from telemhq_plugins.dagster import TelemHQResource, telemhq_sensors


@op
def hourly_op() -> int:
    return 1


@job
def hourly_job() -> None:
    hourly_op()


defs = Definitions(
    jobs=[hourly_job],
    schedules=[
        ScheduleDefinition(
            name="pausable",
            job=hourly_job,
            cron_schedule="0 * * * *",
            default_status=DefaultScheduleStatus.RUNNING,
        )
    ],
    sensors=telemhq_sensors(monitor_all_code_locations=True),
    resources={
        "telemhq": TelemHQResource(
            base_url=EnvVar("TELEMHQ_DAGSTER_TEST_BASE_URL"),
            ping_key=EnvVar("TELEMHQ_DAGSTER_TEST_PING_KEY"),
            api_key=EnvVar("TELEMHQ_DAGSTER_TEST_API_KEY"),
            timeout=2.0,
        )
    },
)
