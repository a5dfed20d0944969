"""The client's side of the agent: ``TELEMHQ_AGENT`` as a setting, the default path's checks,
and the hand-off across ``fork`` (Celery prefork, Airflow's task runners)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from telemhq_plugins.core import delivery
from telemhq_plugins.core.agent.paths import (
    AgentAddress,
    default_socket_path,
    parse_agent,
    private_dir_problem,
)
from telemhq_plugins.core.config import ConfigError, load_settings, settings_or_disabled
from telemhq_plugins.core.payload import Ping
from tests.kit import AgentProcess, job_client, new_ping_key, wait_for_runs
from tests.live_server import LiveServer


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/run/telemhq/agent.sock", AgentAddress(path=Path("/run/telemhq/agent.sock"))),
        ("auto", AgentAddress(path=default_socket_path(), auto=True)),
        ("tcp://127.0.0.1:7717", AgentAddress(host="127.0.0.1", port=7717)),
        ("tcp://[::1]:7717", AgentAddress(host="::1", port=7717)),
        ("", None),
    ],
)
def test_the_agent_setting_names_a_socket_or_loopback_tcp(
    value: str, expected: AgentAddress | None
) -> None:
    assert parse_agent(value) == expected
    settings = load_settings(env={"TELEMHQ_AGENT": value}, config_file=os.devnull)
    assert settings.agent == (value or None)


@pytest.mark.parametrize(
    "value", ["agent.sock", "tcp://10.0.0.5:7717", "tcp://example.com:7717", "tcp://127.0.0.1"]
)
def test_a_bad_agent_setting_turns_monitoring_off_with_one_error_line(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="telemhq")
    env = {"TELEMHQ_AGENT": value, "TELEMHQ_TOKEN": "t"}
    with pytest.raises(ConfigError, match="TELEMHQ_AGENT"):
        load_settings(env=env, config_file=os.devnull)
    settings = settings_or_disabled(env=env, config_file=os.devnull)
    assert settings.disabled
    [line] = [r.getMessage() for r in caplog.records if "TELEMHQ_AGENT" in r.getMessage()]
    assert line.startswith(
        f"TelemHQ: monitoring is off, the job runs as without it: TELEMHQ_AGENT={value!r}"
    )
    assert "\n" not in line


def test_the_agent_setting_is_read_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "telemhq.toml"
    config.write_text('agent = "auto"\n')
    assert load_settings(env={}, config_file=config).agent == "auto"
    config.write_text('agent = "relative.sock"\n')
    with pytest.raises(ConfigError, match=r"agent = 'relative.sock' in .*telemhq.toml"):
        load_settings(env={}, config_file=config)


def test_auto_uses_only_a_private_folder(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert private_dir_problem(private) is None
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert private_dir_problem(shared) == f"{shared} is open to other users (mode 777)"
    assert private_dir_problem(tmp_path / "missing") is not None


def test_auto_without_an_agent_delivers_directly(
    live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # no agent.sock there
    key = new_ping_key(live_server)
    client, url = job_client(live_server, key, "auto-no-agent", "auto")
    client.enqueue(Ping(status="success", run_id="direct"), url)
    client.close()
    assert (client.stats()["handed"], client.stats()["delivered"]) == (0, 1)
    wait_for_runs(live_server, "auto-no-agent", 1)


def _child_hands_off(url: str, run_id: str) -> None:
    # No flush: the multiprocessing child ends with os._exit; the exit finalizer hands off.
    delivery.get_client().enqueue(Ping(status="success", run_id=run_id), url)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_hands_off_on_its_own_connection(
    live_server: LiveServer, tmp_path: Path
) -> None:
    key = new_ping_key(live_server)
    with AgentProcess(live_server.base_url, tmp_path) as agent:
        client, url = job_client(live_server, key, "forked-agent-job", str(agent.socket))
        previous = delivery.set_client(client)
        try:
            client.enqueue(Ping(status="success", run_id="parent-1"), url)
            assert client.flush(10)  # the parent's connection to the agent is open now
            context = multiprocessing.get_context("fork")
            children = [
                context.Process(target=_child_hands_off, args=(url, f"child-{n}")) for n in range(3)
            ]
            for child in children:
                child.start()
            for child in children:
                child.join(30)
                assert child.exitcode == 0
            client.enqueue(Ping(status="success", run_id="parent-2"), url)
            client.close()
        finally:
            delivery.set_client(previous)
        assert client.stats()["handed"] == 2
        runs = wait_for_runs(live_server, "forked-agent-job", 5)
        assert sorted(r["run_id"] for r in runs) == [
            "child-0", "child-1", "child-2", "parent-1", "parent-2"
        ]  # fmt: skip
        assert agent.status()["acked"] == 5  # the children handed off too


_SIGPIPE_CLIENT = """
import signal, sys
from telemhq_plugins.core.delivery import get_client
from telemhq_plugins.core.payload import Ping

signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as some command-line programs do
client = get_client()
url = client.settings.ping_url_for("gone-agent-job")
client.enqueue(Ping(status="success", run_id="before"), url)
assert client.flush(10)
print("handed", flush=True)
sys.stdin.readline()  # the agent is gone now; this process's connection to it is dead
client.enqueue(Ping(status="success", run_id="after"), url)
client.close()
print(client.stats()["handed"], client.stats()["delivered"], flush=True)
"""


def test_an_agent_gone_between_two_hand_offs_never_kills_the_job(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """The kept connection is dead (the agent stopped): no SIGPIPE, even for a process that
    restored its default action; the ping is delivered directly."""
    key = new_ping_key(live_server)
    with AgentProcess(live_server.base_url, tmp_path) as agent:
        env = {**agent.environment(), "TELEMHQ_AGENT": str(agent.socket), "TELEMHQ_PING_KEY": key}
        proc = subprocess.Popen(
            [sys.executable, "-c", _SIGPIPE_CLIENT], env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert proc.stdout.readline().strip() == "handed"
        agent.stop()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert out.split() == ["1", "1"]  # one handed to the agent, one delivered directly
    runs = wait_for_runs(live_server, "gone-agent-job", 2)
    assert sorted(r["run_id"] for r in runs) == ["after", "before"]


def test_a_restarted_agent_takes_pings_on_a_new_connection(
    live_server: LiveServer, tmp_path: Path
) -> None:
    key = new_ping_key(live_server)
    agent = AgentProcess(live_server.base_url, tmp_path).start()
    client, url = job_client(live_server, key, "restarted-agent-job", str(agent.socket))
    try:
        client.enqueue(Ping(status="success", run_id="first"), url)
        assert client.flush(10)
        agent.stop()
        agent.start()  # same socket path, a new process: the kept connection is dead
        client.enqueue(Ping(status="success", run_id="second"), url)
        assert client.flush(10)
    finally:
        client.close()
        agent.stop()
    assert client.stats()["handed"] == 2
    runs = wait_for_runs(live_server, "restarted-agent-job", 2)
    assert sorted(r["run_id"] for r in runs) == ["first", "second"]
