"""The ``[telemhq]`` section of Airflow's configuration, with environment fallbacks.

One small reader per option. Each reads Airflow's config first (``airflow.cfg`` or
``AIRFLOW__TELEMHQ__<OPTION>``), then the ``TELEMHQ_*`` variable named below, then the default.
Nothing is cached: the listener plugin reads them once when Airflow loads it.

========================  ===============================  ===========================
``[telemhq]`` option      environment fallback             default
========================  ===============================  ===========================
``auto``                  ``TELEMHQ_AIRFLOW_AUTO``         off: the plugin sends nothing
``include``               ``TELEMHQ_AIRFLOW_INCLUDE``      every DAG (comma-separated
                                                           ``dag_id`` globs)
``exclude``               ``TELEMHQ_AIRFLOW_EXCLUDE``      none
``send_start``            ``TELEMHQ_SEND_START``           off
``sync_schedules``        ``TELEMHQ_AIRFLOW_SYNC``         on (needs ``TELEMHQ_API_KEY``)
``conn_id``               ``TELEMHQ_AIRFLOW_CONN_ID``      ``telemhq_default``
========================  ===============================  ===========================
"""

from __future__ import annotations

import logging
import os
from typing import Any

from telemhq_plugins.core.config import ConfigError, env_flag, parse_flag
from telemhq_plugins.core.logs import log_once

__all__ = [
    "DEFAULT_CONN_ID",
    "SECTION",
    "auto",
    "conn_id",
    "exclude",
    "include",
    "send_start",
    "sync_schedules",
]

logger = logging.getLogger("telemhq")

SECTION = "telemhq"
DEFAULT_CONN_ID = "telemhq_default"


def _airflow_conf() -> Any:
    try:
        from airflow.configuration import conf
    except ImportError:  # a Task SDK worker without airflow-core
        from airflow.sdk.configuration import conf as sdk_conf

        return sdk_conf
    return conf


def _get(option: str) -> str | None:
    """``[telemhq] <option>`` from Airflow's config, None when unset (or unreadable)."""
    try:
        value = _airflow_conf().get(SECTION, option, fallback=None)
    except Exception:
        log_once(
            logger,
            logging.WARNING,
            ("airflow-conf", option),
            "TelemHQ: cannot read [%s] %s from Airflow's config",
            SECTION,
            option,
            exc_info=True,
        )
        return None
    return None if value is None else str(value)


def _flag(option: str, env: str, default: bool) -> bool:
    raw = _get(option)
    if raw is None:
        return env_flag(env, default=default)
    try:
        return parse_flag(raw)
    except ConfigError as exc:
        log_once(
            logger,
            logging.WARNING,
            ("airflow-conf-flag", option, raw),
            "TelemHQ: [%s] %s: %s; using the default, %s",
            SECTION,
            option,
            exc,
            "on" if default else "off",
        )
        return default


def _globs(option: str, env: str) -> tuple[str, ...]:
    raw = _get(option)
    if raw is None:
        raw = os.environ.get(env, "")
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def auto() -> bool:
    """Whether the listener plugin reports every DAG (off: it loads and sends nothing)."""
    return _flag("auto", "TELEMHQ_AIRFLOW_AUTO", False)


def include() -> tuple[str, ...]:
    """``dag_id`` globs the listener reports (none: every DAG)."""
    return _globs("include", "TELEMHQ_AIRFLOW_INCLUDE")


def exclude() -> tuple[str, ...]:
    """``dag_id`` globs the listener leaves alone."""
    return _globs("exclude", "TELEMHQ_AIRFLOW_EXCLUDE")


def send_start() -> bool | None:
    """Whether listener runs send ``start``; None leaves it to ``TELEMHQ_SEND_START``."""
    raw = _get("send_start")
    if raw is None:
        return None
    return _flag("send_start", "TELEMHQ_SEND_START", False)


def sync_schedules() -> bool:
    """Whether the listener syncs a DAG's schedule to its tracker at the end of each run."""
    return _flag("sync_schedules", "TELEMHQ_AIRFLOW_SYNC", True)


def conn_id() -> str:
    """The Airflow connection that may hold the base URL and ping key or token."""
    return _get("conn_id") or os.environ.get("TELEMHQ_AIRFLOW_CONN_ID") or DEFAULT_CONN_ID
