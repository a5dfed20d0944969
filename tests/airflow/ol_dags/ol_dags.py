"""DAGs with no TelemHQ code at all: what Airflow's OpenLineage provider reports is all the
server gets. ``python ol_dags.py DAG_ID...`` runs each with ``dag.test()``."""

from __future__ import annotations

import datetime as dt
import sys

from airflow.sdk import CronTriggerTimetable, dag, task

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@dag(
    schedule=CronTriggerTimetable("30 6 * * 1-5", timezone="Europe/Paris"),
    start_date=START,
    catchup=False,
)
def ol_etl() -> None:
    @task
    def extract() -> int:
        return 3

    @task
    def load(rows: int) -> None:
        print(f"loaded {rows} rows")

    load(extract())


@dag(schedule=dt.timedelta(hours=1), start_date=START, catchup=False)
def ol_broken() -> None:
    @task
    def check() -> None:
        pass

    @task
    def publish() -> None:
        raise RuntimeError("warehouse unreachable")

    check() >> publish()


@dag(schedule="@hourly", start_date=START, catchup=False)
def ol_user_scheduled() -> None:
    @task
    def step() -> None:
        pass

    step()


DAGS = {d.dag_id: d for d in (ol_etl(), ol_broken(), ol_user_scheduled())}

if __name__ == "__main__":
    for dag_id in sys.argv[1:]:
        DAGS[dag_id].test()
