"""The Airflow quick starts of the README and docs/airflow.md, run as written by Airflow's own
``airflow dags test`` against the reference server; the ``[telemhq]`` options the provider
declares, as ``airflow config list`` shows them; and docs/airflow.md's ``airflow.cfg``
example, read back by the adapter."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from telemhq_plugins.airflow import conf
from telemhq_plugins.airflow.provider import CONFIG_OPTIONS
from tests.airflow.conftest import AIRFLOW_ENV
from tests.docs_snippets import (
    ROOT,
    assert_one_success_each,
    exports,
    run_command,
    snippet,
    venv_env,
)
from tests.kit import new_ping_key
from tests.live_server import LiveServer

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
README = ROOT / "README.md"
PAGE = ROOT / "docs" / "airflow.md"


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without any TELEMHQ_ or [telemhq] setting of the developer's."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TELEMHQ_", "AIRFLOW__TELEMHQ__"))
    }
    return venv_env({**env, **extra})


def test_the_provider_declares_every_option_the_adapter_reads() -> None:
    readers = set(conf.__all__) - {"SECTION", "DEFAULT_CONN_ID", "OPTIONS", "check"}
    assert set(CONFIG_OPTIONS) == readers == set(conf.OPTIONS)


@pytest.mark.slow
def test_airflow_config_list_shows_the_telemhq_options(tmp_path: Path) -> None:
    proc = run_command(
        [AIRFLOW, "config", "list", "--section", "telemhq", "--include-descriptions"],
        env=_clean_env(AIRFLOW_HOME=str(tmp_path)),
        cwd=tmp_path,
    )
    assert "[telemhq]" in proc.stdout
    for option, (_kind, description, _example) in CONFIG_OPTIONS.items():
        assert f"# {option} = " in proc.stdout, proc.stdout
        assert f"# {description}" in proc.stdout


def _read_back(home: Path, **env: str) -> dict[str, Any]:
    """The adapter's reading of ``[telemhq]`` in a fresh process on ``home``'s airflow.cfg."""
    code = (
        "import json\n"
        "from telemhq_plugins.airflow import conf\n"
        "print(json.dumps({'auto': conf.auto(), 'include': conf.include(),"
        " 'exclude': conf.exclude(), 'conn_id': conf.conn_id()}))\n"
    )
    environment = _clean_env(AIRFLOW_HOME=str(home), **env)
    proc = run_command([sys.executable, "-c", code], env=environment, cwd=home)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_the_documented_airflow_cfg_means_what_it_says(tmp_path: Path) -> None:
    (tmp_path / "airflow.cfg").write_text(snippet(PAGE, "airflow-cfg").code)
    assert _read_back(tmp_path) == {
        "auto": True,
        "include": ["etl_*", "ml_*"],
        "exclude": ["*_tmp"],
        "conn_id": "telemhq_default",
    }
    # Declared without defaults, the options still fall back to their variables.
    bare = tmp_path / "bare"
    bare.mkdir()
    assert _read_back(
        bare, TELEMHQ_AIRFLOW_AUTO="1", TELEMHQ_AIRFLOW_EXCLUDE="a*", TELEMHQ_AIRFLOW_CONN_ID="c"
    ) == {"auto": True, "include": [], "exclude": ["a*"], "conn_id": "c"}


class QuickStart(NamedTuple):
    doc: Path
    env_block: str
    dag_block: str
    expected: dict[str, dict[str, Any]]  # tracker slug -> fields of its one run


QUICK_STARTS = [
    pytest.param(
        QuickStart(
            README,
            "readme-airflow-env",
            "readme-airflow-dag",
            {"etl-orders-extract": {"records_processed": 450}, "etl-orders": {}},
        ),
        id="README",
    ),
    pytest.param(
        QuickStart(
            PAGE,
            "airflow-env",
            "airflow-dag",
            {
                "etl-orders-extract": {"records_processed": 450},
                "etl-orders-load": {"records_loaded": 450},
                "etl-orders": {},
            },
        ),
        id="airflow.md",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("quick_start", QUICK_STARTS)
def test_the_quick_start_runs_as_written(
    airflow_db: str, tmp_path: Path, quick_start: QuickStart
) -> None:
    doc = quick_start.doc
    dag = snippet(doc, quick_start.dag_block)
    path = tmp_path / dag.code.splitlines()[0].removeprefix("# ").split(":")[0]
    path.parent.mkdir(parents=True)
    path.write_text(dag.code)
    with LiveServer() as live:
        variables = exports(
            snippet(doc, quick_start.env_block), base_url=live.base_url, ping_key=new_ping_key(live)
        )
        env = _clean_env(**{**AIRFLOW_ENV, "AIRFLOW__CORE__DAGS_FOLDER": str(path.parent)})
        env.update(variables)
        run_command([AIRFLOW, "dags", "test", "etl_orders"], env=env, cwd=tmp_path)
        assert_one_success_each(live, quick_start.expected)
