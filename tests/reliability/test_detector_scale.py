"""The missed-run detector with 10,000 trackers falling due at once: one pass flags every one
of them (late, then down after the grace), on SQLite and PostgreSQL; the same for 10,000
trackers that have never been pinged (their first run is due)."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from telemhq_server import db
from telemhq_server.detector import Detector

from tests.reliability.due_trackers import GRACE, PERIOD, T0, add_due_trackers

pytestmark = pytest.mark.slow

N = 10_000


def states(engine: Engine) -> dict[str, int]:
    t = db.trackers
    with engine.connect() as conn:
        query = sa.select(t.c.state, sa.func.count()).group_by(t.c.state)
        return {str(row[0]): int(row[1]) for row in conn.execute(query)}


@pytest.mark.parametrize("never_pinged", [False, True], ids=["pinged", "never-pinged"])
def test_every_tracker_due_at_once_is_flagged_in_one_pass(
    engine: Engine, never_pinged: bool
) -> None:
    add_due_trackers(engine, N, never_pinged=never_pinged)
    detector = Detector(engine)
    first = detector.tick(T0 + dt.timedelta(seconds=PERIOD - 1))
    assert first.flips == []
    assert first.refreshed == (N if never_pinged else 0)

    late = detector.tick(T0 + dt.timedelta(seconds=PERIOD))
    assert len(late.flips) == N
    assert states(engine) == {"late": N}

    down = detector.tick(T0 + dt.timedelta(seconds=PERIOD + GRACE))
    assert len(down.flips) == N
    assert states(engine) == {"down": N}
    with engine.connect() as conn:
        flips = conn.execute(sa.select(sa.func.count()).select_from(db.flips)).scalar_one()
    assert flips == 2 * N  # one flip per change, none twice
    assert detector.tick(T0 + dt.timedelta(seconds=2 * PERIOD)).flips == []
