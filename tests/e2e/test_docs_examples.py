"""The TelemHQ documentation's curl, Node.js and Python examples, verbatim, against our server.

The examples are read from the copy of the integration docs kept next to this file
(``telemhq-integration-docs.md``); only the ping URL is swapped for the live server's tracker.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.kit import require_tool
from tests.live_server import LiveServer

DOCS = Path(__file__).with_name("telemhq-integration-docs.md")
DOC_URL = "https://telemhq.com/ping/YOUR_TRACKING_TOKEN"


def examples(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)


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
    require_tool("curl", "the documentation's shell examples")
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
    node = require_tool("node", "Node.js 18+, for the documentation's fetch example")
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
