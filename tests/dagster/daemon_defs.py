"""The code location ``dagster-daemon`` loads in the production-path test."""

from dagster import Definitions

from telemhq_plugins.dagster import telemhq_sensors
from tests.dagster import jobs

defs = Definitions(
    jobs=[jobs.plain_job, jobs.broken],
    sensors=telemhq_sensors(minimum_interval_seconds=1, sync_schedules=False),
)
