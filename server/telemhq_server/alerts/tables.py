"""The alerting tables: channels, their outbox and attempt log, and silences.

They live on :data:`telemhq_server.db.metadata` like every other table and change only through
the migrations (``0003_alerts``). The outbox follows the webhooks' design (a row per message,
leased by ``claimed_until``, retried from ``next_attempt_at``) with what channels add: the
state it tells of (so a message no longer true is dropped instead of sent), the reminder
number, and the silence holding it.
"""

from __future__ import annotations

import sqlalchemy as sa

from telemhq_server.db import BigId, metadata

__all__ = ["alert_attempts", "alert_outbox", "channels", "silences"]

TZ = sa.DateTime(timezone=True)

channels = sa.Table(
    "channels",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    # The Apprise URL, secrets included: never returned by the API, never logged.
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

alert_outbox = sa.Table(
    "alert_outbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "channel_id",
        BigId,
        sa.ForeignKey("channels.id", ondelete="CASCADE", name="fk_alert_outbox_channel"),
        nullable=False,
    ),
    sa.Column("tracker_id", sa.BigInteger(), nullable=False),
    # failing | late | down | recovered
    sa.Column("event", sa.String(16), nullable=False),
    # the tracker's state the message tells of (for recovered: "up")
    sa.Column("state", sa.String(16), nullable=False),
    # 0: the first message of the change; n: the n-th reminder
    sa.Column("repeat_no", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("body", sa.Text(), nullable=False),
    # when the state change happened (a reminder keeps its change's time)
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("next_attempt_at", TZ, nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("delivered_at", TZ, nullable=True),
    sa.Column("failed_at", TZ, nullable=True),
    # not sent, by design (no longer true, the channel was not told of the problem...)
    sa.Column("dropped_at", TZ, nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("held_by", sa.BigInteger(), nullable=True),
    # what the message may be folded with (a parent run, late trackers of one orchestrator)
    sa.Column("group_key", sa.String(400), nullable=True),
    # the id de-duplicating services get (an Opsgenie alias): set when first sent, shared by
    # the rows folded into it, its reminders and its recovery
    sa.Column("incident", sa.String(200), nullable=True),
    sa.Column("claimed_until", TZ, nullable=True),
    sa.Index(
        "ix_alert_outbox_pending", "delivered_at", "failed_at", "dropped_at", "next_attempt_at"
    ),
    sa.Index("ix_alert_outbox_channel_tracker", "channel_id", "tracker_id", "id"),
)

alert_attempts = sa.Table(
    "alert_attempts",
    metadata,
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
    sa.Index("ix_alert_attempts_outbox_id", "outbox_id"),
)

silences = sa.Table(
    "silences",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("selector", sa.JSON(), nullable=False),
    sa.Column("starts_at", TZ, nullable=True),
    sa.Column("ends_at", TZ, nullable=True),
    sa.Column("cron", sa.String(200), nullable=True),
    sa.Column("duration_seconds", sa.Integer(), nullable=True),
    sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
    sa.Column("comment", sa.Text(), nullable=False, server_default=""),
    # set by DELETE: the silence ended early
    sa.Column("ended_at", TZ, nullable=True),
    sa.Column("created_at", TZ, nullable=False),
)
