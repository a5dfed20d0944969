"""docs/dagster.md's quick start, as written, run against the real reference server."""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from dagster import DagsterInstance, build_sensor_context

from telemhq_plugins.core import Client
from tests.dagster.conftest import Stored

DOC = Path(__file__).resolve().parents[2] / "docs" / "dagster.md"


def quick_start(tmp_path: Path) -> ModuleType:
    section = DOC.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    path = tmp_path / "definitions.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("telemhq_docs_definitions", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_quick_start_runs_as_written(
    server: Stored,
    client: Client,
    instance: DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = quick_start(tmp_path)
    try:
        repo = module.defs.get_repository_def()
        assert {s.name for s in repo.sensor_defs} >= {"telemhq_run_success", "telemhq_schedules"}
        result = module.defs.resolve_job_def("nightly_etl").execute_in_process(instance=instance)
        assert result.success
        (extract,) = server.wait("nightly_etl.extract", 1, f"{result.run_id}:extract")
        assert extract["records_processed"] == 3
        assert extract["source_files"] == 1
        (load,) = server.wait("nightly_etl.load", 1, f"{result.run_id}:load")
        assert load["status"] == "success"

        monkeypatch.setenv("TELEMHQ_API_KEY", server.live.api_key)
        sensor = repo.get_sensor_def("telemhq_schedules")
        sensor.evaluate_tick(build_sensor_context(instance=instance, repository_def=repo))
        deadline = time.monotonic() + 30
        tracker = server.tracker("nightly_etl")
        while (tracker is None or tracker["schedule"]["kind"] != "cron") and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
            tracker = server.tracker("nightly_etl")
        assert tracker is not None
        assert tracker["schedule"]["cron"] == "0 3 * * *"
    finally:
        sys.modules.pop("telemhq_docs_definitions", None)
