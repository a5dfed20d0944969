"""The TelemHQ documentation's curl, Node.js and Python examples, verbatim, against our server.

The examples are read from the documentation itself (``shared/reference`` beside the checkout,
else the copy next to this file, which a test keeps identical); only the ping URL is swapped
for the live server's tracker.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.live_server import LiveServer

HERE = Path(__file__).parent
COPY = HERE / "telemhq-integration-docs.md"
SHARED = HERE.parents[2] / "shared" / "reference" / "telemhq-integration-docs.md"
DOC_URL = "https://telemhq.com/ping/YOUR_TRACKING_TOKEN"


def docs() -> str:
    return (SHARED if SHARED.is_file() else COPY).read_text()


def examples(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", docs(), flags=re.DOTALL)


def test_it_keeps_the_copy_of_the_docs_current() -> None:
    if not SHARED.is_file():
        pytest.skip(f"{SHARED} is not beside this checkout")
    assert COPY.read_text() == SHARED.read_text()


def run_example(command: list[str], source: str, url: str) -> None:
    assert DOC_URL in source
    code = source.replace(DOC_URL, url)
    proc = subprocess.run([*command, code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def only_run(server: LiveServer, tracker: dict[str, Any]) -> dict[str, Any]:
    [run] = server.runs(tracker["id"])
    return run


DOC_PAYLOAD = {"status": "success", "duration": 1500, "records_processed": 450, "errors": 0}


def test_it_records_the_curl_heartbeat_and_json_examples(live_server: LiveServer) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    heartbeat, with_json = examples("bash")
    tracker = live_server.create_tracker(name="curl heartbeat")
    run_example(["bash", "-c"], heartbeat, tracker["ping_url"])
    run = only_run(live_server, tracker)
    assert (run["status"], run["passed"]) == ("success", True)
    assert live_server.tracker(tracker["id"])["state"] == "up"

    tracker = live_server.create_tracker(
        name="curl json", assertions=["records_processed > 0", "errors = 0", "status = success"]
    )
    run_example(["bash", "-c"], with_json, tracker["ping_url"])
    run = only_run(live_server, tracker)
    assert {k: run["payload"][k] for k in DOC_PAYLOAD} == DOC_PAYLOAD
    assert [a["passed"] for a in run["assertions"]] == [True, True, True]


def test_it_records_the_nodejs_example(live_server: LiveServer) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (the example needs Node 18+ for fetch)")
    [source] = examples("js")
    tracker = live_server.create_tracker(name="node", assertions=["records_processed > 0"])
    run_example([node, "--input-type=module", "-e"], source, tracker["ping_url"])
    run = only_run(live_server, tracker)
    assert {k: run["payload"][k] for k in DOC_PAYLOAD} == DOC_PAYLOAD
    assert live_server.tracker(tracker["id"])["state"] == "up"


def test_it_records_the_python_requests_example(live_server: LiveServer) -> None:
    [source] = examples("python")
    tracker = live_server.create_tracker(name="python", assertions=["errors = 0"])
    run_example([sys.executable, "-c"], source, tracker["ping_url"])
    run = only_run(live_server, tracker)
    assert {k: run["payload"][k] for k in DOC_PAYLOAD} == DOC_PAYLOAD
    assert run["passed"] is True
