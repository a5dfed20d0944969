"""trackers.resumed_at: when the tracker was last resumed, so that its clock restarts there
(its next ping is expected one period, or the next cron time, after the resume, whatever
state it is in and however long ago it was last pinged); alert_outbox.incident: the id a
message gives de-duplicating services (an Opsgenie alias), shared by its reminders and its
recovery.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    # A nullable column is added in place on SQLite and PostgreSQL alike.
    op.add_column("trackers", sa.Column("resumed_at", TZ, nullable=True))
    op.add_column("alert_outbox", sa.Column("incident", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alert_outbox") as batch:
        batch.drop_column("incident")
    with op.batch_alter_table("trackers") as batch:
        batch.drop_column("resumed_at")
