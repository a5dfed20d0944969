"""Outgoing webhooks: signed JSON POSTs on state changes, from a durable outbox.

Flow. :func:`enqueue_flips` is a flip listener: it runs inside the transaction that records a
flip (:func:`telemhq_server.flips.record_flip`), so an alert exists exactly when the state change
does. A :class:`Dispatcher` per server process then claims due outbox rows, POSTs them with
httpx (async, short timeout) and records every attempt in ``webhook_attempts``. An alert
written before a crash is still in the outbox after the restart and is delivered then.

:mod:`.signing` says how requests are signed and checked, :mod:`.outbox` what is queued for
which change, :mod:`.dispatcher` how it is delivered and retried (on :mod:`.loop`, the
delivery loop the alert channels' sender shares), :mod:`.routes` the ``/api/v1/webhooks``
API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from telemhq_server.webhooks.dispatcher import KEEP_DAYS, Dispatcher, RetryPolicy
from telemhq_server.webhooks.outbox import (
    DEFAULT_EVENTS,
    EVENTS,
    build_body,
    enqueue_flip,
    enqueue_flips,
    event_for,
    subscribed,
)
from telemhq_server.webhooks.routes import api_routes, validate_webhook
from telemhq_server.webhooks.signing import SIGNATURE_HEADER, new_secret, sign, verify_signature

if TYPE_CHECKING:
    from telemhq_server.host import TelemHQ

__all__ = [
    "DEFAULT_EVENTS",
    "EVENTS",
    "KEEP_DAYS",
    "SIGNATURE_HEADER",
    "Dispatcher",
    "RetryPolicy",
    "api_routes",
    "build_body",
    "enqueue_flip",
    "enqueue_flips",
    "event_for",
    "new_secret",
    "register",
    "sign",
    "subscribed",
    "validate_webhook",
    "verify_signature",
]


def register(app: TelemHQ) -> None:
    """Serve ``/api/v1/webhooks``, queue alerts on every flip and run one :class:`Dispatcher`
    per server process (woken when a flip commits, else polling each second)."""
    app.add_routes(api_routes())
    dispatcher = Dispatcher(app.engine, public_url=app.public_url(None) or None)
    app.flip_listeners.add(enqueue_flips, committed=dispatcher.wake)

    async def loop(_app: TelemHQ) -> None:
        await dispatcher.run()

    app.add_background(loop)
