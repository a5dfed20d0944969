"""The demo's Airflow stage, run with the Airflow environment's Python::

    .venvs/airflow/bin/python -m demo.airflow_stage --base-url URL --ping-key KEY

A real Airflow 3 in a temporary ``AIRFLOW_HOME`` (SQLite, migrated here) runs
``demo/airflow_dags/airflow_demo.py`` once with ``dag.test()``. The DAG holds no TelemHQ code:
the ``telemhq`` listener plugin, switched on by ``TELEMHQ_AIRFLOW_AUTO=1``, reports a success
with metrics, a retry then success, a failure, a task that loads 0 records, and the DAG run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DAGS = Path(__file__).resolve().parent / "airflow_dags"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--ping-key", required=True)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="telemhq-demo-airflow-")
    # Read by Airflow and the plugin when they load: set before either is imported.
    os.environ.update(
        {
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
            "TELEMHQ_BASE_URL": args.base_url,
            "TELEMHQ_PING_KEY": args.ping_key,
            "TELEMHQ_AIRFLOW_AUTO": "1",
        }
    )
    airflow = str(Path(sys.executable).with_name("airflow"))
    try:
        subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True)

        from demo.airflow_dags.airflow_demo import demo_dag

        dag_run = demo_dag.test()
        print(f"Airflow DAG airflow_demo: run {dag_run.run_id} ended {dag_run.state}")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
