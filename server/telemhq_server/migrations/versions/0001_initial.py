"""Initial schema: trackers, runs, flips, API and ping keys, webhooks and their outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "trackers",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("slug", sa.String(100), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("badge_key", sa.String(64), nullable=False),
        sa.Column("assertions", sa.JSON(), nullable=False),
        sa.Column("schedule_kind", sa.String(10), nullable=False, server_default="none"),
        sa.Column("period_seconds", sa.Integer(), nullable=True),
        sa.Column("cron", sa.String(200), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
        sa.Column("grace_seconds", sa.Integer(), nullable=False, server_default="300"),
        sa.Column("max_runtime_seconds", sa.Integer(), nullable=True),
        sa.Column("failure_threshold", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("state", sa.String(16), nullable=False, server_default="new"),
        sa.Column("state_changed_at", TZ, nullable=True),
        sa.Column("last_ping_at", TZ, nullable=True),
        sa.Column("last_run_at", TZ, nullable=True),
        sa.Column("open_start_at", TZ, nullable=True),
        sa.Column("open_start_run_id", sa.String(200), nullable=True),
        sa.Column("next_expected_at", TZ, nullable=True),
        sa.Column("n_runs", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.UniqueConstraint("token", name="uq_trackers_token"),
        sa.UniqueConstraint("slug", name="uq_trackers_slug"),
        sa.UniqueConstraint("badge_key", name="uq_trackers_badge_key"),
    )
    op.create_index("ix_trackers_next_expected_at", "trackers", ["next_expected_at"])
    op.create_index("ix_trackers_updated_at", "trackers", ["updated_at"])

    op.create_table(
        "runs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "tracker_id",
            BigId,
            sa.ForeignKey("trackers.id", ondelete="CASCADE", name="fk_runs_tracker"),
            nullable=False,
        ),
        sa.Column("ping_id", sa.String(200), nullable=True),
        sa.Column("run_id", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("assertions", sa.Text(), nullable=False),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("started_at", TZ, nullable=True),
    )
    op.create_index("ix_runs_tracker_id_id", "runs", ["tracker_id", "id"])
    op.create_index("uq_runs_tracker_ping_id", "runs", ["tracker_id", "ping_id"], unique=True)

    op.create_table(
        "flips",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "tracker_id",
            BigId,
            sa.ForeignKey("trackers.id", ondelete="CASCADE", name="fk_flips_tracker"),
            nullable=False,
        ),
        sa.Column("old_state", sa.String(16), nullable=False),
        sa.Column("new_state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_index("ix_flips_tracker_id_id", "flips", ["tracker_id", "id"])

    op.create_table(
        "api_keys",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("last_used_at", TZ, nullable=True),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )

    op.create_table(
        "ping_keys",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("auto_create", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("key", name="uq_ping_keys_key"),
    )

    op.create_table(
        "webhooks",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", TZ, nullable=False),
    )

    op.create_table(
        "webhook_outbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "webhook_id",
            BigId,
            sa.ForeignKey("webhooks.id", ondelete="CASCADE", name="fk_outbox_webhook"),
            nullable=False,
        ),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("tracker_id", sa.BigInteger(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("next_attempt_at", TZ, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("delivered_at", TZ, nullable=True),
        sa.Column("failed_at", TZ, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("claimed_until", TZ, nullable=True),
    )
    op.create_index(
        "ix_outbox_pending", "webhook_outbox", ["delivered_at", "failed_at", "next_attempt_at"]
    )

    op.create_table(
        "webhook_attempts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "outbox_id",
            BigId,
            sa.ForeignKey("webhook_outbox.id", ondelete="CASCADE", name="fk_attempts_outbox"),
            nullable=False,
        ),
        sa.Column("attempted_at", TZ, nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
    )
    op.create_index("ix_attempts_outbox_id", "webhook_attempts", ["outbox_id"])


def downgrade() -> None:
    for table in (
        "webhook_attempts",
        "webhook_outbox",
        "webhooks",
        "ping_keys",
        "api_keys",
        "flips",
        "runs",
        "trackers",
    ):
        op.drop_table(table)
