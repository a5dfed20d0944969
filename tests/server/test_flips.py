"""Flip listeners: what the server's parts register on ``app.flip_listeners`` runs inside the
transaction of every state change, whichever part records it (ping writer, API, detector)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from telemhq_server import db
from telemhq_server.app import TelemHQ
from telemhq_server.detector import Detector
from telemhq_server.flips import Flip

from tests.server.helpers import AppClient, flips_of, make_tracker, runs_of, tracker_of


class Recorder:
    """A listener noting each flip and the flips rows its transaction sees at that moment."""

    def __init__(self) -> None:
        self.flips: list[Flip] = []
        self.rows_seen: list[int] = []
        self.committed = 0

    def __call__(self, conn: Connection, flips: Sequence[Flip]) -> None:
        for flip in flips:
            self.flips.append(flip)
            self.rows_seen.append(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(db.flips)
                    .where(db.flips.c.tracker_id == flip.tracker_id)
                ).scalar_one()
            )

    def on_commit(self) -> None:
        self.committed += 1


def test_a_ping_that_changes_the_state_runs_the_listeners_in_its_transaction(
    app: TelemHQ, client: AppClient
) -> None:
    recorder = Recorder()
    app.flip_listeners.add(recorder, committed=recorder.on_commit)
    tracker = make_tracker(client)
    assert client.post(f"/ping/{tracker['token']}").json()["state"] == "up"
    assert client.post(f"/ping/{tracker['token']}").json()["state"] == "up"  # no change
    assert client.post(f"/ping/{tracker['token']}/fail").json()["state"] == "failing"

    runs = runs_of(client, tracker["id"])  # newest first
    assert [(f.tracker_id, f.old, f.new, f.run_id) for f in recorder.flips] == [
        (tracker["id"], "new", "up", runs[2]["id"]),
        (tracker["id"], "up", "failing", runs[0]["id"]),
    ]
    # Each listener call saw its own flip row, not yet committed: the same transaction.
    assert recorder.rows_seen == [1, 2]
    assert recorder.committed == 2


def test_a_failing_listener_rolls_the_whole_change_back(app: TelemHQ, client: AppClient) -> None:
    tracker = make_tracker(client)

    def refuse(_conn: Connection, _flips: Sequence[Flip]) -> None:
        raise RuntimeError("listener failed")

    app.flip_listeners.add(refuse)
    response = client.post(f"/ping/{tracker['token']}")
    assert response.status_code == 503
    assert runs_of(client, tracker["id"]) == []
    assert flips_of(client, tracker["id"]) == []
    assert tracker_of(client, tracker["id"])["state"] == "new"


def test_the_api_and_the_detector_run_the_same_listeners(app: TelemHQ, client: AppClient) -> None:
    recorder = Recorder()
    app.flip_listeners.add(recorder)
    tracker = make_tracker(
        client, schedule={"kind": "period", "period_seconds": 60, "grace_seconds": 60}
    )
    assert client.post(f"/ping/{tracker['token']}").status_code == 200
    assert client.post(f"/api/v1/trackers/{tracker['id']}/pause").status_code == 200
    assert client.post(f"/api/v1/trackers/{tracker['id']}/resume").status_code == 200
    assert client.post(f"/ping/{tracker['token']}").status_code == 200

    later = db.utcnow() + dt.timedelta(hours=1)
    detected = Detector(app.engine, listeners=app.flip_listeners).tick(later)
    assert detected.flips == [(tracker["id"], "up", "down")]

    changes: list[Any] = [(f.old, f.new) for f in recorder.flips]
    assert changes == [
        ("new", "up"),
        ("up", "paused"),
        ("paused", "new"),
        ("new", "up"),
        ("up", "down"),
    ]
    stored = reversed(flips_of(client, tracker["id"]))
    assert [(f["old_state"], f["new_state"]) for f in stored] == changes
