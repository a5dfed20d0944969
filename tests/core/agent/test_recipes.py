"""The deployment recipes of ``docs/agent.md`` hold together: every YAML block parses, each
container that names the agent's socket mounts its folder, the systemd unit reads as one, and
every ``telemhq agent`` command line in them starts a real agent that its documented probe
(``telemhq agent status``) then reaches."""

from __future__ import annotations

import configparser
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.docs_snippets import ROOT, Block, blocks
from tests.kit import wait_until

yaml = pytest.importorskip("yaml")

DOC = ROOT / "docs" / "agent.md"
HEADING = "## Deployment recipes"
TELEMHQ = [sys.executable, "-m", "telemhq_plugins.core.cli"]


def recipes(lang: str) -> list[Block]:
    start = DOC.read_text().splitlines().index(HEADING) + 1
    return [block for block in blocks(DOC) if block.lang == lang and block.line > start]


def documents() -> list[dict[str, Any]]:
    return [doc for block in recipes("yaml") for doc in yaml.safe_load_all(block.code)]


def unit() -> configparser.ConfigParser:
    (block,) = recipes("ini")
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(block.code)
    return parser


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs of a Kubernetes object (a Pod, a DaemonSet's template); none otherwise."""
    if doc.get("kind") == "Pod":
        return [doc["spec"]]
    if doc.get("kind") == "DaemonSet":
        return [doc["spec"]["template"]["spec"]]
    return []


def agent_env(env: list[Any]) -> str | None:
    """The value of TELEMHQ_AGENT in a container's ``env`` or Dagster's ``env_vars``."""
    for item in env:
        if isinstance(item, dict) and item.get("name") == "TELEMHQ_AGENT":
            return str(item["value"])
        if isinstance(item, str) and item.startswith("TELEMHQ_AGENT="):
            return item.partition("=")[2]
    return None


def test_the_yaml_blocks_parse_and_the_socket_folder_is_mounted_where_it_is_named() -> None:
    docs = documents()
    assert [doc.get("kind") or next(iter(doc)) for doc in docs] == [
        "Pod",
        "DaemonSet",
        "Pod",
        "run_launcher",
    ]
    named = 0
    for doc in docs:
        if "run_launcher" in doc:
            config = doc["run_launcher"]["config"]
            specs = [{"volumes": config["volumes"], "containers": [config]}]
            config.setdefault("env", config["env_vars"])
            config.setdefault("volumeMounts", config["volume_mounts"])
        else:
            specs = pod_specs(doc)
        for spec in specs:
            volumes = {volume["name"] for volume in spec["volumes"]}
            for container in spec["containers"] + spec.get("initContainers", []):
                mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
                assert set(mounts.values()) <= volumes, container
                socket = agent_env(container.get("env", []))
                if socket is not None:
                    named += 1
                    assert mounts.get(os.path.dirname(socket)) == "telemhq-run", container
    assert named == 3  # the sidecar's job, the Airflow task pod, the Dagster run pod


def test_the_unit_is_a_systemd_service_of_the_jobs_user() -> None:
    parsed = unit()
    assert parsed.sections() == ["Unit", "Service", "Install"]
    service = parsed["Service"]
    assert service["User"] == "airflow"
    assert service["RuntimeDirectory"] == "telemhq"
    assert shlex.split(service["ExecStart"])[1:4] == [
        "agent",
        "--socket",
        "/run/telemhq/agent.sock",
    ]
    assert parsed["Install"]["WantedBy"] == "multi-user.target"


def command_lines() -> list[list[str]]:
    """Every documented ``telemhq agent`` command (unit and containers), without the program."""
    found = [shlex.split(unit()["Service"]["ExecStart"])[1:]]
    for doc in documents():
        for spec in pod_specs(doc):
            for container in spec["containers"] + spec.get("initContainers", []):
                command = container.get("command", [])
                if command[:2] == ["telemhq", "agent"]:
                    found.append(command[1:])
    return found


def moved_path(arg: str, folders: dict[str, Path]) -> str:
    for documented, here in folders.items():
        if arg == documented or arg.startswith(documented + "/"):
            return str(here) + arg.removeprefix(documented)
    return arg


@pytest.mark.parametrize("args", command_lines(), ids=" ".join)
def test_a_documented_command_line_runs_an_agent_its_probe_reaches(
    args: list[str], tmp_path: Path
) -> None:
    # The documented folders, moved under the test's own.
    folders = {"/run/telemhq": tmp_path / "run", "/var/lib/telemhq-agent": tmp_path / "spool"}
    moved = [moved_path(arg, folders) for arg in args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
    env.update(TELEMHQ_BASE_URL="https://telemhq.example.com", TELEMHQ_CONFIG=os.devnull)
    agent = subprocess.Popen([*TELEMHQ, *moved], env=env, stderr=subprocess.PIPE, text=True)
    socket = moved[moved.index("--socket") + 1]
    probe = [*TELEMHQ, "agent", "status", "--socket", socket]

    def answers() -> bool:
        assert agent.poll() is None, agent.communicate()[1]
        return subprocess.run(probe, env=env, capture_output=True, check=False).returncode == 0

    try:
        wait_until(answers, f"the agent of {args} to answer its probe", interval=0.2)
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0, stderr
