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
from telemhq_server.alerts.sender import Outcome, send_blocking, url_hint
from telemhq_server.alerts.silences import silence_end, validate_silence

if TYPE_CHECKING:
    from telemhq_server.host import TelemHQ

__all__ = [
    "CHANNEL_EVENTS",
    "DEFAULT_CHANNEL_EVENTS",
    "AlertCounts",
    "AlertDispatcher",
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
    dispatcher = AlertDispatcher(
        app.engine,
        public_url=app.public_url(None) or None,
        group_window=app.settings.alert_group_window,
    )
    app.flip_listeners.add(enqueue_alerts, committed=dispatcher.wake)
    app.add_metrics(dispatcher.counts.lines)

    async def loop(_app: TelemHQ) -> None:
        await dispatcher.run()

    app.add_background(loop)
