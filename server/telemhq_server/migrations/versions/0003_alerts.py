"""Alerting: notification channels (Apprise URLs with a policy), their outbox and attempt
log, and silences.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("url_hint", sa.Text(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("after_failures", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("repeat_every_seconds", sa.Integer(), nullable=True),
        sa.Column("max_repeats", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("delay_seconds", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("selector", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "alert_outbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "channel_id",
            BigId,
            sa.ForeignKey("channels.id", ondelete="CASCADE", name="fk_alert_outbox_channel"),
            nullable=False,
        ),
        sa.Column("tracker_id", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("repeat_no", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("next_attempt_at", TZ, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("delivered_at", TZ, nullable=True),
        sa.Column("failed_at", TZ, nullable=True),
        sa.Column("dropped_at", TZ, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("held_by", sa.BigInteger(), nullable=True),
        sa.Column("group_key", sa.String(400), nullable=True),
        sa.Column("claimed_until", TZ, nullable=True),
    )
    op.create_index(
        "ix_alert_outbox_pending",
        "alert_outbox",
        ["delivered_at", "failed_at", "dropped_at", "next_attempt_at"],
    )
    op.create_index(
        "ix_alert_outbox_channel_tracker", "alert_outbox", ["channel_id", "tracker_id", "id"]
    )
    op.create_table(
        "alert_attempts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "outbox_id",
            BigId,
            sa.ForeignKey("alert_outbox.id", ondelete="CASCADE", name="fk_alert_attempts_outbox"),
            nullable=False,
        ),
        sa.Column("attempted_at", TZ, nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
    )
    op.create_index("ix_alert_attempts_outbox_id", "alert_attempts", ["outbox_id"])
    op.create_table(
        "silences",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("selector", sa.JSON(), nullable=False),
        sa.Column("starts_at", TZ, nullable=True),
        sa.Column("ends_at", TZ, nullable=True),
        sa.Column("cron", sa.String(200), nullable=True),
        sa.Column("duration_seconds", sa.Integer(), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
        sa.Column("comment", sa.Text(), nullable=False, server_default=""),
        sa.Column("ended_at", TZ, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("silences")
    op.drop_table("alert_attempts")
    op.drop_table("alert_outbox")
    op.drop_table("channels")
