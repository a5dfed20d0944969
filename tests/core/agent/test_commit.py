"""Group commit: concurrent writers share transactions and every one learns its outcome."""

from __future__ import annotations

import threading
from pathlib import Path

from telemhq_plugins.core.agent.commit import GroupCommit
from telemhq_plugins.core.spool import Spool


def test_concurrent_requests_are_all_written(tmp_path: Path) -> None:
    commit = GroupCommit(Spool(tmp_path, durable=True), claim_for=60.0)
    answers: list[bool] = []

    def writer(number: int) -> None:
        for n in range(20):
            answers.append(commit.write([(f"{number}-{n}", "http://x/ping/t", b"{}")]))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [True] * 160
    assert commit.spool.count() == 160
    assert commit.requests == 160
    assert 1 <= commit.writes <= 160


def test_a_failed_write_fails_every_request_it_carried(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    commit = GroupCommit(Spool(blocker / "spool"), claim_for=60.0)  # cannot be created
    assert commit.write([("p1", "http://x/ping/t", b"{}")]) is False
