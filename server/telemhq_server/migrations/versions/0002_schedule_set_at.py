"""trackers.schedule_set_at: when the schedule was set, so that a never-pinged tracker's
first run is expected (and missed) too.

Scheduled trackers that exist at the upgrade start their clock at the upgrade: one that has
never been pinged gets a full period (or until its next cron time) to send its first ping,
rather than an alert for every run missed before detection covered it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    # SQLite adds a nullable column in place (no table rebuild); so does PostgreSQL.
    op.add_column("trackers", sa.Column("schedule_set_at", TZ, nullable=True))
    trackers = sa.table(
        "trackers",
        sa.column("schedule_kind", sa.String()),
        sa.column("schedule_set_at", TZ),
    )
    op.execute(
        trackers.update()
        .where(trackers.c.schedule_kind != "none")
        .values(schedule_set_at=dt.datetime.now(dt.UTC))
    )


def downgrade() -> None:
    with op.batch_alter_table("trackers") as batch:
        batch.drop_column("schedule_set_at")
