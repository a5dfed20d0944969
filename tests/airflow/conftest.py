"""Fixtures for the Airflow adapter tests: a real Airflow 3 (``dag.test()``, its metadata DB
migrated once per session in a temporary ``AIRFLOW_HOME``). The reference server, its ping key
and the process's delivery client are the test kit's (``server`` is ``live_server`` by the name
the Airflow tests use; ``ping_key``, ``client``).

Airflow reads its configuration when first imported, so the environment is set here, before
any test module imports it. Every DAG lives in ``tests/airflow/dags`` (``dag.test()`` parses
that folder on each call; one file keeps it quick).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

DAGS_FOLDER = Path(__file__).parent / "dags"
AIRFLOW_HOME = tempfile.mkdtemp(prefix="telemhq-airflow-")
AIRFLOW_ENV = {
    "AIRFLOW_HOME": AIRFLOW_HOME,
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__PLUGINS_FOLDER": os.path.join(AIRFLOW_HOME, "plugins"),
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
}
os.environ.update(AIRFLOW_ENV)
# The listener plugin stays off unless a test turns it on (see ``listener`` fixtures).
os.environ.pop("TELEMHQ_AIRFLOW_AUTO", None)

import warnings  # noqa: E402

# Airflow's in-process execution API (``dag.test()``) imports Starlette's test client, which
# warns at import that it prefers ``httpx2``: theirs, not ours, and under
# ``filterwarnings = error`` it would fail every task. Imported once here, warning ignored.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import starlette.testclient  # noqa: F401

from tests.live_server import LiveServer  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _airflow_home() -> Iterator[None]:
    """The temporary ``AIRFLOW_HOME`` goes away with the session."""
    yield
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """The metadata DB of this session, migrated once (``airflow db migrate``)."""
    subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        env={**os.environ, **AIRFLOW_ENV},
        check=True,
        capture_output=True,
        timeout=300,
    )
    return AIRFLOW_HOME


@pytest.fixture(scope="module")
def server(live_server: LiveServer) -> LiveServer:
    """The kit's ``live_server``, by the name the Airflow tests use."""
    return live_server
