"""Trackers that all fall due at one moment, written straight into a migrated database: the
missed-run detector's test at scale and its benchmark (``benchmarks/detector.py``) start from
them."""

from __future__ import annotations

import datetime as dt
import secrets

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from telemhq_server import db

__all__ = ["GRACE", "PERIOD", "T0", "add_due_trackers"]

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
PERIOD, GRACE = 3600, 300


def add_due_trackers(engine: Engine, count: int, *, never_pinged: bool = False) -> None:
    """``count`` trackers that are ``up``, pinged at T0 and expected again an hour later; or,
    ``never_pinged``, ``new`` ones whose schedule was set at T0 and whose first expected time
    the detector has not computed yet."""
    rows = [
        {
            "name": f"job {i}",
            "slug": f"job-{i}",
            "token": secrets.token_hex(16),
            "badge_key": secrets.token_hex(8),
            "assertions": [],
            "tags": [],
            "schedule_kind": "period",
            "period_seconds": PERIOD,
            "grace_seconds": GRACE,
            "state": "up",
            "state_changed_at": T0,
            "last_ping_at": T0,
            "last_run_at": T0,
            "next_expected_at": T0 + dt.timedelta(seconds=PERIOD),
            "created_at": T0,
            "updated_at": T0,
            "schedule_set_at": T0,
        }
        for i in range(count)
    ]
    if never_pinged:
        for row in rows:
            row.update(
                state="new",
                state_changed_at=None,
                last_ping_at=None,
                last_run_at=None,
                next_expected_at=None,
            )
    with db.write_tx(engine) as conn:
        conn.execute(sa.insert(db.trackers), rows)
