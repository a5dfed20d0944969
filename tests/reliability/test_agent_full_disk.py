"""The local agent on a full disk (a small tmpfs for its spool): it refuses new pings while
it has less than its reserve left, never loses one it acknowledged, and takes pings again
once delivery freed room."""

from __future__ import annotations

import collections
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from telemhq_plugins.core.payload import Ping
from telemhq_plugins.core.spool import Spool
from tests.kit import (
    AgentProcess,
    HeldEndpoint,
    hand,
    new_ping_key,
    ping_triple,
    unavailable,
    wait_for_runs,
    wait_until,
)
from tests.live_server import LiveServer

pytestmark = pytest.mark.slow

BATCH = 10
#: each ping this big, so that a few hundred fill the disk (the runs API lists 500 at most)
PAD = 50_000


def big_ping(url: str, run_id: str) -> tuple[str, str, bytes]:
    ping = Ping(status="success", run_id=run_id, fields={"pad": "x" * PAD})
    return ping.ping_id, url, ping.to_json()


@pytest.fixture(name="small_disk")
def fixture_small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MB tmpfs (needs the right to mount: root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        unavailable(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_refuses_new_pings_and_loses_no_acknowledged_one(
    live_server: LiveServer, tmp_path: Path, small_disk: Path
) -> None:
    key = new_ping_key(live_server)
    with HeldEndpoint(live_server.base_url) as held:  # nothing leaves the agent: the disk fills
        agent = AgentProcess(held.url, tmp_path, "--max-bytes", "0", env={"TELEMHQ_TIMEOUT": "120"})
        agent.spool = small_disk / "spool"
        url = f"{held.url}/ping/{key}/full-disk"
        acked: list[str] = []
        with agent:
            for batch in range(100):
                run_ids = [f"b{batch}-{n}" for n in range(BATCH)]
                if not hand(agent.socket, [big_ping(url, run_id) for run_id in run_ids]):
                    break
                acked.extend(run_ids)
            else:
                pytest.fail("the disk never filled")
            status = agent.status()
            assert status["refused"] == BATCH
            assert status["acked"] == len(acked) > 0
            assert Spool(agent.spool).count() == len(acked)

            held.release()  # the server is reachable: the agent delivers, the spool drains
            runs = wait_for_runs(live_server, "full-disk", len(acked), timeout=120)
            wait_until(lambda: agent.status()["spool_pings"] == 0, "the spool to drain")
            assert hand(agent.socket, [ping_triple(url, "after")])  # room again
            runs = wait_for_runs(live_server, "full-disk", len(acked) + 1)
    stored = collections.Counter(r["run_id"] for r in runs)
    assert set(stored) == {*acked, "after"}
    assert max(stored.values()) == 1
