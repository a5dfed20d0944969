"""The delivery client the Airflow adapter sends through: the process's (``TELEMHQ_*``
settings), or, when those name no target, one built from the ``telemhq_default`` Airflow
connection (``[telemhq] conn_id``), looked up once per process client."""

from __future__ import annotations

import logging
import os
import threading

from telemhq_plugins.core.config import Settings, settings_or_disabled
from telemhq_plugins.core.delivery import Client, current_client, get_client
from telemhq_plugins.core.logs import log_once

__all__ = ["airflow_client", "connection_api_key", "existing_client"]

logger = logging.getLogger("telemhq")

_lock = threading.Lock()
#: process client -> (client from the connection or None, the connection's API key).
_from_connection: dict[int, tuple[Client | None, str | None]] = {}


def _has_target(settings: Settings) -> bool:
    return bool(settings.ping_url or settings.token or settings.ping_key or settings.trackers)


def _lookup() -> tuple[Client | None, str | None]:
    from telemhq_plugins.airflow import conf
    from telemhq_plugins.airflow.hooks import TelemHQHook, connection_settings
    from telemhq_plugins.airflow.hooks import connection_api_key as api_key_of

    conn_id = conf.conn_id()
    try:
        conn = TelemHQHook.get_connection(conn_id)
    except Exception as exc:  # not defined (the usual case without it), or unreachable
        log_once(
            logger,
            logging.DEBUG,
            ("airflow-connection", conn_id),
            "TelemHQ: no Airflow connection %s (%s)",
            conn_id,
            exc,
        )
        return None, None
    values = connection_settings(conn)
    origin = f"Airflow connection {conn_id}"
    client = Client(settings_or_disabled(origin=origin, **values)) if values else None
    return client, api_key_of(conn)


def _connection_entry(base: Client) -> tuple[Client | None, str | None]:
    with _lock:
        found = _from_connection.get(id(base))
    if found is None:
        found = _lookup()
        with _lock:
            _from_connection.clear()  # one process client at a time
            _from_connection[id(base)] = found
    return found


def airflow_client() -> Client:
    """The process's client when its settings name a target, else the connection's."""
    base = get_client()
    if base.settings.disabled or _has_target(base.settings):
        return base
    client, _ = _connection_entry(base)
    return client or base


def connection_api_key() -> str | None:
    """The management API key of the ``telemhq`` connection when the adapter sends through
    it and ``TELEMHQ_API_KEY`` is unset (None: core's own resolution)."""
    base = get_client()
    if os.environ.get("TELEMHQ_API_KEY") or _has_target(base.settings):
        return None
    return _connection_entry(base)[1]


def existing_client() -> Client | None:
    """The client pings were sent through in this process, None when there is none yet."""
    base = current_client()
    if base is None:
        return None
    with _lock:
        found = _from_connection.get(id(base))
    if found is not None and found[0] is not None:
        return found[0]
    return base
