"""The local agent (``telemhq agent``) as a real process between real clients and the real
reference server: hand-off, acknowledgement on disk, delivery, refusal, its lock and socket."""

from __future__ import annotations

from pathlib import Path

from telemhq_plugins.core.payload import Ping
from tests.core.agentkit import AgentProcess
from tests.kit import client_for, new_ping_key, wait_for_runs, wait_until
from tests.live_server import LiveServer


def test_pings_handed_to_the_agent_are_stored_by_the_server(
    live_server: LiveServer, tmp_path: Path
) -> None:
    key = new_ping_key(live_server)
    with AgentProcess(live_server, tmp_path) as agent:
        client = client_for(live_server, ping_key=key, agent=str(agent.socket))
        url = client.settings.ping_url_for("agent-job")
        assert url is not None
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
