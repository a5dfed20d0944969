"""The demo's Airflow DAG: no TelemHQ code, the listener plugin reports it."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, get_current_context, task

import telemhq_plugins


@dag(
    schedule="0 6 * * *",
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    default_args={"retries": 1, "retry_delay": dt.timedelta(0)},
)
def airflow_demo() -> None:
    @task
    def extract() -> int:
        telemhq_plugins.report(records_processed=450, cost_usd=0.12)
        return 450

    @task
    def flaky(rows: int) -> None:
        if get_current_context()["ti"].try_number == 1:
            raise ConnectionError("warehouse connection reset")
        telemhq_plugins.report(records_processed=rows)

    @task
    def load() -> None:
        telemhq_plugins.report(records_processed=0)  # succeeds, yet loaded nothing

    @task(retries=0)
    def broken() -> None:
        raise RuntimeError("schema mismatch in orders.csv")

    flaky(extract())
    load()
    broken()


demo_dag = airflow_demo()
