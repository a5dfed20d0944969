"""The local agent (``telemhq agent``) as a real process between real clients and the real
reference server: delivery, refusals, its lock, its socket, shutdown and status."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from telemhq_plugins.core.agent.server import allowed_url
from telemhq_plugins.core.payload import Ping
from telemhq_plugins.core.spool import SPOOL_FILENAME, Spool
from tests.kit import (
    TELEMHQ,
    AgentProcess,
    HeldEndpoint,
    hand,
    job_client,
    new_ping_key,
    ping_triple,
    wait_for_runs,
    wait_until,
)
from tests.live_server import LiveServer, free_port


def test_pings_handed_to_the_agent_are_stored_by_the_server(
    live_server: LiveServer, tmp_path: Path
) -> None:
    key = new_ping_key(live_server)
    with AgentProcess(live_server.base_url, tmp_path) as agent:
        client, url = job_client(live_server, key, "agent-job", str(agent.socket))
        for n in range(3):
            client.enqueue(Ping(status="success", run_id=f"agent-{n}"), url)
        client.close()
        assert client.stats()["handed"] == 3
        assert client.stats()["delivered"] == 0  # the agent delivers, not this process
        runs = wait_for_runs(live_server, "agent-job", 3)
        assert sorted(r["run_id"] for r in runs) == ["agent-0", "agent-1", "agent-2"]
        wait_until(lambda: agent.status()["spool_pings"] == 0, "the spool to empty")
        status = agent.status()
        assert (status["received"], status["acked"], status["delivered"]) == (3, 3, 3)


def test_an_acknowledged_ping_is_in_the_spool_before_the_reply(
    live_server: LiveServer, tmp_path: Path
) -> None:
    key = new_ping_key(live_server)
    with HeldEndpoint(live_server.base_url) as held:  # nothing leaves the agent meanwhile
        agent = AgentProcess(held.url, tmp_path, env={"TELEMHQ_TIMEOUT": "60"}).start()
        url = f"{held.url}/ping/{key}/acked-job"
        triple = ping_triple(url, "acked-1")
        assert hand(agent.socket, [triple])
        agent.kill()  # kill -9: no chance to write anything after the reply
        with contextlib.closing(sqlite3.connect(agent.spool / SPOOL_FILENAME)) as conn:
            rows = conn.execute("SELECT ping_id, url, body FROM pings").fetchall()
        assert rows == [triple]


def test_a_socket_path_that_reaches_no_agent_costs_nothing_but_direct_delivery(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """No agent at the path (never started, or dead with its socket file left behind): the
    client delivers as it does without an agent."""
    key = new_ping_key(live_server)
    agent = AgentProcess(live_server.base_url, tmp_path).start()
    agent.kill()  # its socket file stays: connections to it are refused
    assert agent.socket.exists()
    for path in (agent.socket, tmp_path / "never" / "agent.sock"):
        client, url = job_client(live_server, key, "no-agent-job", str(path))
        client.enqueue(Ping(status="success", run_id=f"direct-{path.parent.name}"), url)
        client.close()
        assert client.stats()["handed"] == 0
        assert client.stats()["delivered"] == 1
    wait_for_runs(live_server, "no-agent-job", 2)


def test_an_agent_that_does_not_answer_is_passed_over(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """A socket that accepts connections and never answers (a hung agent): after 50 ms the
    client delivers itself."""
    import socket

    key = new_ping_key(live_server)
    path = tmp_path / "hung.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as hung:
        hung.bind(str(path))
        hung.listen(8)  # connections wait in the backlog: connect succeeds, no reply comes
        client, url = job_client(live_server, key, "hung-agent-job", str(path))
        client.enqueue(Ping(status="success", run_id="hung-1"), url)
        client.close()
    assert client.stats()["handed"] == 0
    assert client.stats()["delivered"] == 1
    wait_for_runs(live_server, "hung-agent-job", 1)


def test_past_its_bound_the_agent_drops_the_oldest_pings_and_takes_new_ones(
    live_server: LiveServer, tmp_path: Path
) -> None:
    key = new_ping_key(live_server)
    # Nothing leaves the agent while held: the spool only grows.
    with HeldEndpoint(live_server.base_url) as held:
        agent = AgentProcess(
            held.url, tmp_path, "--max-bytes", "400", env={"TELEMHQ_TIMEOUT": "60"}
        )
        url = f"{held.url}/ping/{key}/bounded-agent-job"
        with agent:
            for n in range(10):  # about 100 bytes each: far more than 400 in all
                assert hand(agent.socket, [ping_triple(url, f"p{n}")])
            status = agent.status()
            assert (status["acked"], status["refused"]) == (10, 0)
            assert status["spool_bytes"] <= 400
            assert status["dropped"] == 10 - status["spool_pings"] >= 5
            with contextlib.closing(sqlite3.connect(agent.spool / SPOOL_FILENAME)) as db:
                left = [body for (body,) in db.execute("SELECT body FROM pings")]
            # The newest are what is kept.
            assert any(b'"p9"' in body for body in left)
            assert not any(b'"p0"' in body for body in left)
            held.release()
            runs = wait_for_runs(live_server, "bounded-agent-job", 1)
            wait_until(lambda: agent.status()["spool_pings"] == 0, "the spool to drain")
    stored = [r["run_id"] for r in wait_for_runs(live_server, "bounded-agent-job", len(runs))]
    assert "p9" in stored
    assert len(stored) == len(set(stored))


def test_the_agent_sends_nothing_but_pings_to_its_own_server(
    live_server: LiveServer, tmp_path: Path
) -> None:
    key = new_ping_key(live_server)
    with AgentProcess(live_server.base_url, tmp_path) as agent:
        for url in (
            f"http://127.0.0.1:1/ping/{key}/elsewhere",  # another host
            f"{live_server.base_url}/api/v1/trackers",  # another path of its server
            f"{live_server.base_url}/ping/../api/v1/trackers",
            f"{live_server.base_url}/ping/{key}?x=1",
        ):
            assert not hand(agent.socket, [ping_triple(url, "nope")])
        assert agent.status()["refused"] == 4
        assert agent.status()["spool_pings"] == 0


def test_allowed_url_is_a_ping_url_of_the_base() -> None:
    base = "https://telemhq.example"
    assert allowed_url(f"{base}/ping/abc", base)
    assert allowed_url(f"{base}/ping/key/etl-daily", base)
    assert allowed_url(f"{base}/ping/abc/start", base + "/")
    assert not allowed_url(f"{base}/ping/", base)
    assert not allowed_url(f"{base}/ping/a//b", base)
    assert not allowed_url(f"{base}/ping/a/../../x", base)
    assert not allowed_url(f"{base}.evil.example/ping/abc", base)
    assert not allowed_url(f"{base}/ping/abc#x", base)
    assert not allowed_url("https://other.example/ping/abc", base)


def test_two_agents_cannot_share_a_spool(live_server: LiveServer, tmp_path: Path) -> None:
    with AgentProcess(live_server.base_url, tmp_path) as first:
        proc = subprocess.run(
            [*TELEMHQ, "agent", "--socket", str(tmp_path / "second.sock"),
             "--spool", str(first.spool)],
            env=first.environment(), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 2
        pid = first.status()["pid"]
        assert f"another agent (pid {pid}) uses the spool {first.spool}" in proc.stderr
        assert not (tmp_path / "second.sock").exists()


def test_a_second_agent_on_the_same_socket_is_refused(
    live_server: LiveServer, tmp_path: Path
) -> None:
    with AgentProcess(live_server.base_url, tmp_path) as first:
        proc = subprocess.run(
            [*TELEMHQ, "agent", "--socket", str(first.socket), "--spool", str(tmp_path / "s2")],
            env=first.environment(), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 2
        assert f"an agent already listens on {first.socket}" in proc.stderr
        assert first.status()["received"] == 0  # the first one still answers


def test_the_socket_is_its_owners_alone(live_server: LiveServer, tmp_path: Path) -> None:
    with AgentProcess(live_server.base_url, tmp_path) as agent:
        assert stat.S_ISSOCK(agent.socket.stat().st_mode)
        assert stat.S_IMODE(agent.socket.stat().st_mode) == 0o600
        assert stat.S_IMODE(agent.socket.parent.stat().st_mode) == 0o700  # created by it
        assert stat.S_IMODE(agent.spool.stat().st_mode) == 0o700


def test_the_default_socket_is_per_user_and_auto_finds_it(
    live_server: LiveServer, tmp_path: Path
) -> None:
    key = new_ping_key(live_server)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(runtime), "XDG_STATE_HOME": str(tmp_path / "state")}
    agent = AgentProcess(live_server.base_url, tmp_path, env=env)
    agent.socket = runtime / "telemhq" / "agent.sock"
    command = [*TELEMHQ, "agent"]  # no --socket, no --spool: the defaults
    agent.command = lambda: command  # type: ignore[method-assign]
    with agent:
        assert (tmp_path / "state" / "telemhq" / "agent" / "telemhq-spool.sqlite3").exists()
        code = (
            "from telemhq_plugins.core.runs import start_run\n"
            "start_run('auto-agent-job').finish('success')\n"
        )
        subprocess.run(
            [sys.executable, "-c", code],
            env={
                **agent.environment(),
                "TELEMHQ_AGENT": "auto",
                "TELEMHQ_PING_KEY": key,
            },
            check=True,
            timeout=60,
        )
        wait_for_runs(live_server, "auto-agent-job", 1)
        assert agent.status()["acked"] == 1


def test_telemhq_run_hands_its_ping_to_the_agent(live_server: LiveServer, tmp_path: Path) -> None:
    key = new_ping_key(live_server)
    with AgentProcess(live_server.base_url, tmp_path) as agent:
        env = {**agent.environment(), "TELEMHQ_AGENT": str(agent.socket), "TELEMHQ_PING_KEY": key}
        proc = subprocess.run(
            [*TELEMHQ, "run", "--job", "run-via-agent", "--", "true"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        (run,) = wait_for_runs(live_server, "run-via-agent", 1)
        assert run["status"] == "success"
        assert agent.status()["acked"] == 1


def test_status_prints_the_counters(live_server: LiveServer, tmp_path: Path) -> None:
    with AgentProcess(live_server.base_url, tmp_path) as agent:
        proc = subprocess.run(
            [*TELEMHQ, "agent", "status", "--socket", str(agent.socket)],
            env=agent.environment(), capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        status = json.loads(proc.stdout)
        for counter in ("received", "acked", "delivered", "refused", "dropped", "spool_bytes"):
            assert status[counter] == 0
        assert status["listening"] == [str(agent.socket)]
    proc = subprocess.run(
        [*TELEMHQ, "agent", "status", "--socket", str(agent.socket)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"no agent answers on {agent.socket}" in proc.stderr


def test_sigterm_delivers_what_it_can_and_keeps_the_rest_for_the_next_start(
    live_server: LiveServer, tmp_path: Path
) -> None:
    key = new_ping_key(live_server)
    with HeldEndpoint(live_server.base_url) as held:
        env = {"TELEMHQ_FLUSH_TIMEOUT": "0.5", "TELEMHQ_TIMEOUT": "60"}
        agent = AgentProcess(held.url, tmp_path, env=env).start()
        url = f"{held.url}/ping/{key}/sigterm-job"
        assert hand(agent.socket, [ping_triple(url, f"term-{n}") for n in range(5)])
        assert agent.stop() == 0  # SIGTERM: stops within its flush bound, the server held
        assert not agent.socket.exists()
        assert Spool(agent.spool).count() == 5
        held.release()
        with AgentProcess(held.url, tmp_path, env=env):
            runs = wait_for_runs(live_server, "sigterm-job", 5)
            assert sorted(r["run_id"] for r in runs) == [f"term-{n}" for n in range(5)]


@pytest.mark.parametrize("signum", [signal.SIGINT])
def test_sigint_stops_it_too(live_server: LiveServer, tmp_path: Path, signum: int) -> None:
    agent = AgentProcess(live_server.base_url, tmp_path).start()
    assert agent.proc is not None
    agent.proc.send_signal(signum)
    assert agent.proc.wait(timeout=60) == 0
    assert not agent.socket.exists()
    assert os.path.exists(agent.spool)


def test_a_ping_the_server_refuses_for_good_leaves_the_spool(
    live_server: LiveServer, tmp_path: Path
) -> None:
    with AgentProcess(live_server.base_url, tmp_path) as agent:
        url = f"{live_server.base_url}/ping/no-such-token-here"  # 404: not retried
        assert hand(agent.socket, [ping_triple(url, "unknown")])
        wait_until(lambda: agent.status()["rejected"] == 1, "the server's refusal")
        assert agent.status()["spool_pings"] == 0
        assert agent.status()["delivered"] == 0


def test_a_ping_for_another_server_goes_direct_and_the_next_batch_to_the_agent(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """A process pinging two servers: the agent refuses what is not its server's, and the
    client hands it the next batch all the same (no cool-down for such a refusal)."""
    key = new_ping_key(live_server)
    other = "http://localhost:" + live_server.base_url.rsplit(":", 1)[1]  # same server, other name
    with AgentProcess(live_server.base_url, tmp_path) as agent:
        client, url = job_client(live_server, key, "two-servers-job", str(agent.socket))
        try:
            elsewhere = url.replace(live_server.base_url, other)
            client.enqueue(Ping(status="success", run_id="other"), elsewhere)
            assert client.flush(10)
            client.enqueue(Ping(status="success", run_id="own"), url)
            assert client.flush(10)
        finally:
            client.close()
        assert (client.stats()["delivered"], client.stats()["handed"]) == (1, 1)
        runs = wait_for_runs(live_server, "two-servers-job", 2)
        assert sorted(r["run_id"] for r in runs) == ["other", "own"]


def test_loopback_tcp_takes_pings_too(live_server: LiveServer, tmp_path: Path) -> None:
    key = new_ping_key(live_server)
    port = free_port()
    with AgentProcess(live_server.base_url, tmp_path, "--tcp", f"127.0.0.1:{port}") as agent:
        assert agent.status()["listening"] == [str(agent.socket), f"127.0.0.1:{port}"]
        client, url = job_client(live_server, key, "tcp-agent-job", f"tcp://127.0.0.1:{port}")
        client.enqueue(Ping(status="success", run_id="over-tcp"), url)
        client.close()
        assert client.stats()["handed"] == 1
        wait_for_runs(live_server, "tcp-agent-job", 1)
        proc = subprocess.run(
            [*TELEMHQ, "agent", "status", "--tcp", f"127.0.0.1:{port}"],
            env=agent.environment(), capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert json.loads(proc.stdout)["acked"] == 1


def test_tcp_beyond_loopback_is_refused(live_server: LiveServer, tmp_path: Path) -> None:
    agent = AgentProcess(live_server.base_url, tmp_path, "--tcp", "0.0.0.0:7717")
    proc = subprocess.run(
        agent.command(), env=agent.environment(), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "expected a loopback HOST:PORT" in proc.stderr
    assert not agent.socket.exists()
