"""Notification channels: Apprise URLs (Slack, Teams, e-mail, PagerDuty, ...) each with a
policy, silences, and delivery from a durable outbox.

Flow. :func:`enqueue_alerts` is a flip listener: inside the transaction that records a state
change it queues one message per channel that wants it (:mod:`.enqueue`). An
:class:`AlertDispatcher` per server process claims due messages, decides whether each is
still true and not silenced, sends it through Apprise off the event loop under a deadline and
records the attempt (:mod:`.delivery`, :mod:`.sender`). :mod:`.policy` holds durations and
selectors, :mod:`.silences` when a silence holds, :mod:`.message` the words, :mod:`.routes`
the ``/api/v1/channels`` and ``/api/v1/silences`` API.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from telemhq_server.alerts.delivery import AlertCounts, AlertDispatcher
from telemhq_server.alerts.enqueue import channel_event, enqueue_alerts, wants
from telemhq_server.alerts.message import render
from telemhq_server.alerts.policy import (
    CHANNEL_EVENTS,
    DEFAULT_CHANNEL_EVENTS,
    format_duration,
    matches,
    parse_duration,
    validate_selector,
)
from telemhq_server.alerts.routes import api_routes, validate_channel
from telemhq_server.alerts.sender import Message, Outcome, send_blocking, url_hint
from telemhq_server.alerts.silences import silence_end, validate_silence
from telemhq_server.dashboard.runinfo import UiBases

if TYPE_CHECKING:
    from telemhq_server.host import TelemHQ

__all__ = [
    "CHANNEL_EVENTS",
    "DEFAULT_CHANNEL_EVENTS",
    "AlertCounts",
    "AlertDispatcher",
    "Message",
    "Outcome",
    "api_routes",
    "channel_event",
    "enqueue_alerts",
    "format_duration",
    "matches",
    "parse_duration",
    "register",
    "render",
    "send_blocking",
    "silence_end",
    "url_hint",
    "validate_channel",
    "validate_selector",
    "validate_silence",
    "wants",
]


def register(app: TelemHQ) -> None:
    """Serve ``/api/v1/channels`` and ``/api/v1/silences``, queue notifications on every flip
    and run one :class:`AlertDispatcher` per server process."""
    app.add_routes(api_routes())
    settings = app.settings
    dispatcher = AlertDispatcher(
        app.engine,
        public_url=app.public_url(None) or None,
        group_window=settings.alert_group_window,
        late_group_min=settings.alert_late_min,
        late_group_fraction=settings.alert_late_fraction,
        ui_bases=UiBases(settings.airflow_ui_url, settings.prefect_ui_url, settings.dagster_ui_url),
    )
    late_tags = [t.strip() for t in (settings.alert_late_tags or "").split(",") if t.strip()]
    app.flip_listeners.add(
        functools.partial(enqueue_alerts, late_tags=late_tags), committed=dispatcher.wake
    )
    app.add_metrics(dispatcher.counts.lines)

    async def loop(_app: TelemHQ) -> None:
        await dispatcher.run()

    app.add_background(loop)
