"""The ``[telemhq]`` section of Airflow's configuration, with environment fallbacks.

One small reader per option. Each reads Airflow's config first (``airflow.cfg`` or
``AIRFLOW__TELEMHQ__<OPTION>``), then the ``TELEMHQ_*`` setting named below, then the default.
Nothing is cached: the listener plugin reads them once when Airflow loads it. A value that
cannot be used (:func:`check`) turns monitoring off for the process, with one ERROR line.

========================  ===============================  ===========================
``[telemhq]`` option      fallback (environment, then      default
                          ``telemhq.toml`` in lower case)
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

import difflib
import logging
import os
from typing import Any, Final

from telemhq_plugins.core.config import (
    ConfigError,
    env_flag,
    env_setting,
    log_config_error,
    parse_flag,
)
from telemhq_plugins.core.logs import log_once

__all__ = [
    "DEFAULT_CONN_ID",
    "OPTIONS",
    "SECTION",
    "auto",
    "check",
    "conn_id",
    "exclude",
    "include",
    "send_start",
    "sync_schedules",
]

logger = logging.getLogger("telemhq")

SECTION = "telemhq"
DEFAULT_CONN_ID = "telemhq_default"
#: every option of the section, and those that are on/off switches.
OPTIONS: Final = ("auto", "include", "exclude", "send_start", "sync_schedules", "conn_id")
_SWITCHES: Final = frozenset({"auto", "send_start", "sync_schedules"})


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


def _not_a_switch(option: str, raw: str) -> ConfigError:
    return ConfigError(
        f"[{SECTION}] {option} = {raw!r} in Airflow's configuration: not a switch; "
        "expected True/False (or 1/0, yes/no, on/off)"
    )


def _flag(option: str, env: str, default: bool) -> bool:
    """``[telemhq] <option>``, else the ``TELEMHQ_*`` setting, else ``default``; a value that
    is not a switch is one ERROR line (monitoring off) and False."""
    raw = _get(option)
    if raw is None:
        return env_flag(env, default=default)
    try:
        return parse_flag(raw)
    except ConfigError:
        log_config_error(_not_a_switch(option, raw))
        return False


def _globs(option: str, env: str) -> tuple[str, ...]:
    raw = _get(option)
    if raw is None:
        raw = env_setting(env) or ""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def check() -> None:
    """Raise :class:`ConfigError` for the first ``[telemhq]`` option that cannot be used: one
    this adapter does not know (named with the closest that it does) or a switch that is not
    one. The plugin turns monitoring off for the process on it."""
    for option in _options_set():
        if option not in OPTIONS:
            close = difflib.get_close_matches(option, OPTIONS, n=1)
            valid = f"did you mean {close[0]!r}?" if close else "expected " + ", ".join(OPTIONS)
            raise ConfigError(
                f"unknown option [{SECTION}] {option} in Airflow's configuration: {valid}"
            )
        raw = _get(option) if option in _SWITCHES else None
        if raw is not None:
            try:
                parse_flag(raw)
            except ConfigError:
                raise _not_a_switch(option, raw) from None


def _options_set() -> list[str]:
    """The options set in the section: in ``airflow.cfg``, and as ``AIRFLOW__TELEMHQ__*``
    variables (Airflow's ``getsection`` leaves those out for a section the file lacks)."""
    try:
        found = list(_airflow_conf().getsection(SECTION) or {})
    except Exception:  # an Airflow without getsection: the variables alone
        found = []
    prefix = f"AIRFLOW__{SECTION.upper()}__"
    for name in os.environ:
        if name.startswith(prefix):
            option = name.removeprefix(prefix).lower()
            found.append(option.removesuffix("_cmd").removesuffix("_secret"))
    return list(dict.fromkeys(found))


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
    return _get("conn_id") or env_setting("TELEMHQ_AIRFLOW_CONN_ID") or DEFAULT_CONN_ID
