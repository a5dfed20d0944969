"""The DAGs of the Airflow adapter tests (one file: ``dag.test()`` parses the folder)."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

import telemhq_plugins
from telemhq_plugins.airflow import callbacks, dag_callbacks

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
NO_DELAY = dt.timedelta(0)


def _try_number() -> int:
    number: int = get_current_context()["ti"].try_number
    return number


@dag(schedule=None, start_date=START, catchup=False, default_args=callbacks(), **dag_callbacks())
def cb_success() -> None:
    @task
    def load() -> int:
        telemhq_plugins.report(records_processed=450, cost_usd=0.12)
        return 450

    load()


@dag(
    schedule=None,
    start_date=START,
    catchup=False,
    default_args={"retries": 2, "retry_delay": NO_DELAY, **callbacks()},
    **dag_callbacks(),
)
def cb_retry() -> None:
    @task
    def flaky() -> None:
        if _try_number() == 1:
            raise ValueError("first try fails")
        telemhq_plugins.report(records_processed=7)

    flaky()


@dag(
    schedule=None,
    start_date=START,
    catchup=False,
    default_args={"retries": 1, "retry_delay": NO_DELAY, **callbacks()},
    **dag_callbacks(),
)
def cb_failure() -> None:
    @task
    def broken() -> None:
        raise RuntimeError("always broken")

    broken()


@dag(schedule=None, start_date=START, catchup=False, default_args=callbacks(), **dag_callbacks())
def cb_skipped() -> None:
    @task
    def nothing_to_do() -> None:
        raise AirflowSkipException("no new files")

    @task(trigger_rule="none_failed")
    def after() -> None:
        pass

    nothing_to_do() >> after()


@dag(schedule=None, start_date=START, catchup=False, default_args=callbacks(), **dag_callbacks())
def cb_mapped() -> None:
    @task
    def part(n: int) -> int:
        telemhq_plugins.report(part=n)
        return n

    part.expand(n=[0, 1, 2])


@dag(
    schedule=None,
    start_date=START,
    catchup=False,
    default_args=callbacks(send_start=True),
    **dag_callbacks(),
)
def cb_start() -> None:
    @task
    def with_start() -> None:
        pass

    with_start()


# -- for the listener: no TelemHQ code in the DAG ------------------------------------------------


@dag(
    schedule="0 6 * * *",
    start_date=START,
    catchup=False,
    default_args={"retries": 1, "retry_delay": NO_DELAY},
)
def ls_etl() -> None:
    @task
    def extract() -> int:
        telemhq_plugins.report(records_processed=12)
        return 12

    @task
    def flaky(_: int) -> None:
        if _try_number() == 1:
            raise ValueError("first try fails")

    @task
    def skip() -> None:
        raise AirflowSkipException("nothing new")

    @task
    def part(n: int) -> int:
        return n

    flaky(extract()) >> skip()
    part.expand(n=[0, 1])


@dag(schedule="@hourly", start_date=START, catchup=False)
def ls_broken() -> None:
    @task
    def broken() -> None:
        raise RuntimeError("always broken")

    broken()


@dag(schedule=dt.timedelta(minutes=30), start_date=START, catchup=False)
def ls_excluded() -> None:
    @task
    def quiet() -> None:
        pass

    quiet()


@dag(schedule=None, start_date=START, catchup=False)
def ls_start() -> None:
    @task
    def step() -> None:
        telemhq_plugins.report(rows=2)

    step()


# -- callbacks and the listener together --------------------------------------------------------


@dag(
    schedule=None,
    start_date=START,
    catchup=False,
    default_args={"retries": 1, "retry_delay": NO_DELAY, **callbacks()},
    **dag_callbacks(),
)
def both_etl() -> None:
    @task
    def flaky() -> None:
        if _try_number() == 1:
            raise ValueError("first try fails")
        telemhq_plugins.report(records_processed=3)

    @task
    def plain() -> None:
        pass

    flaky() >> plain()


# -- for the connection: callbacks with no TELEMHQ_* settings ------------------------------------


@dag(schedule=None, start_date=START, catchup=False, default_args=callbacks(), **dag_callbacks())
def conn_dag() -> None:
    @task
    def work() -> None:
        telemhq_plugins.report(rows=1)

    work()


#: every DAG above by its id (Airflow also finds them, registered as they are created).
DAGS = {
    d.dag_id: d
    for d in (
        cb_success(),
        cb_retry(),
        cb_failure(),
        cb_skipped(),
        cb_mapped(),
        cb_start(),
        ls_etl(),
        ls_broken(),
        ls_excluded(),
        ls_start(),
        both_etl(),
        conn_dag(),
    )
}
