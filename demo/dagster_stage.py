"""The demo's Dagster stage: real Dagster runs monitored by ``telemhq_hooks()`` (a ping per
step) and ``telemhq_sensors()`` (a ping per run).

Run by ``python -m demo`` when ``.venvs/dagster`` exists::

    .venvs/dagster/bin/python -m demo.dagster_stage --base-url URL --ping-key KEY

The jobs run in this process (``execute_in_process``, instance in ``.demo/dagster``); the
sensors are ticked by Dagster's own tick code, as the daemon would tick them, once before the
runs (a sensor's first tick only sets its cursor) and once after.
"""

import argparse
import os
import sys
from pathlib import Path

from dagster import (
    DagsterInstance,
    Definitions,
    OpExecutionContext,
    Output,
    RetryPolicy,
    build_sensor_context,
    job,
    op,
)

import telemhq_plugins
from telemhq_plugins.core.config import load_settings
from telemhq_plugins.core.delivery import Client, set_client
from telemhq_plugins.dagster import telemhq_hooks, telemhq_sensors

HOME = Path(__file__).resolve().parent.parent / ".demo" / "dagster"
HOOKS = telemhq_hooks()
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@op(config_schema={"rows": int})
def extract(context: OpExecutionContext) -> Output[int]:
    rows = context.op_config["rows"]
    telemhq_plugins.report(source_files=3)
    return Output(rows, metadata={"records_processed": rows})


@op
def load(rows: int) -> None:
    pass


@job(hooks=HOOKS)
def dagster_etl() -> None:
    load(extract())


@op(retry_policy=RetryPolicy(max_retries=2))
def fetch(context: OpExecutionContext) -> None:
    marker = HOME / f"fetched-{context.run_id}"
    if not marker.exists():  # the first attempt times out, the retry succeeds
        marker.write_text("1")
        raise TimeoutError("the upstream API timed out")


@job(hooks=HOOKS)
def dagster_flaky() -> None:
    fetch()


@op
def transform() -> None:
    raise ValueError("column 'amount' has 12 null values")


@job(hooks=HOOKS)
def dagster_broken() -> None:
    transform()


SENSORS = telemhq_sensors(monitor_all_code_locations=True, sync_schedules=False)
defs = Definitions(jobs=[dagster_etl, dagster_flaky, dagster_broken], sensors=SENSORS)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--ping-key", required=True)
    args = parser.parse_args()
    HOME.mkdir(parents=True, exist_ok=True)
    (HOME / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(HOME)
    client = Client(
        load_settings(
            env={}, config_file=os.devnull, base_url=args.base_url, ping_key=args.ping_key
        )
    )
    set_client(client)

    repo = defs.get_repository_def()
    with DagsterInstance.get() as instance:
        cursors: dict[str, str | None] = {}

        def tick() -> None:
            for sensor in repo.sensor_defs:
                context = build_sensor_context(
                    instance=instance, cursor=cursors.get(sensor.name), repository_def=repo
                )
                cursors[sensor.name] = sensor.evaluate_tick(context).cursor

        tick()
        runs = (
            (dagster_etl, {"ops": {"extract": {"config": {"rows": 1200}}}}),
            (dagster_flaky, {}),
            (dagster_broken, {}),
            (dagster_etl, {"ops": {"extract": {"config": {"rows": 0}}}}),
        )
        for definition, config in runs:
            result = definition.execute_in_process(
                instance=instance, run_config={**config, **QUIET}, raise_on_error=False
            )
            print(f"dagster run {definition.name}: {'success' if result.success else 'failure'}")
        tick()
    client.close(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
