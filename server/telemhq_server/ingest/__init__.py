"""The ping path: a raw ASGI handler, a tracker cache and a group-commit writer.

Request flow for ``POST /ping/...`` (no framework, no ORM):

1. find the tracker the path names (``/ping/{token}[/start|/fail]`` or
   ``/ping/{ping_key}/{slug}[/start|/fail]``) in :class:`TrackerCache` (:mod:`.cache`; parsed
   assertions included; refreshed in the background every ``cache_ttl`` seconds, so other
   processes' changes are seen within about a second);
2. read the body within the size limit and parse it as a JSON object (any or no content type;
   :class:`PingHandler` in :mod:`.handler`);
3. evaluate the assertions (core's ``evaluate_all``) and queue the ping to :class:`BatchWriter`;
   a tracker with history-relative assertions (``median(last 20)``, ``sum(cost_usd, 24h)``)
   is evaluated by the writer instead, in its transaction, against the runs stored before
   (:mod:`.history`);
4. the writer (:mod:`.writer`) takes every queued ping, writes them in ONE transaction (runs,
   tracker updates, flips) with driver SQL (:mod:`.sql`), commits, and only then answers each
   waiting request.

``POST /ping/_batch`` takes several pings in one request (the delivery worker of
``telemhq_plugins`` uses it) and answers each as if it had come alone.

The transaction locks the trackers it changes (``SELECT ... FOR UPDATE`` on PostgreSQL; the
write lock and ``BEGIN IMMEDIATE`` on SQLite) and re-reads their state, so several server
processes on one database compute states in order. A failed transaction rolls back whole: no
partial rows, and every ping in it is answered 503 (the client retries; ``ping_id`` makes that
safe).
"""

from __future__ import annotations

from telemhq_server.ingest.cache import CachedTracker, TrackerCache
from telemhq_server.ingest.errors import PingError
from telemhq_server.ingest.handler import (
    BATCH_BODY_FACTOR,
    BATCH_MAX_PINGS,
    BATCH_PATH,
    PingHandler,
    parse_body,
)
from telemhq_server.ingest.writer import BatchWriter, Pending
from telemhq_server.types import Receive, Scope, Send

__all__ = [
    "BATCH_BODY_FACTOR",
    "BATCH_MAX_PINGS",
    "BATCH_PATH",
    "BatchWriter",
    "CachedTracker",
    "Pending",
    "PingError",
    "PingHandler",
    "Receive",
    "Scope",
    "Send",
    "TrackerCache",
    "parse_body",
]
