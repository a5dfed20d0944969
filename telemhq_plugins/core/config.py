"""Configuration and token resolution: the one place that decides where a ping goes.

Precedence, highest first (documented once, here):

1. explicit arguments (``load_settings(token=...)``, ``@monitor(token=...)``, task options);
2. the environment (``TELEMHQ_*``; read, never written);
3. the config file: ``$TELEMHQ_CONFIG``, else ``./telemhq.toml`` if present;
4. defaults.

Every documented ``TELEMHQ_<NAME>`` setting is ``<name>`` in the config file, flat or under
``[telemhq]``, beside a ``[trackers]`` table (or ``trackers = "<path>"``) and ``[[jobs]]``
(read by ``telemhq sync``). An unknown key is refused and named with the closest valid one.

A setting that cannot be used is a :class:`ConfigError` from :func:`load_settings`. What
monitors a job asks :func:`settings_or_disabled` instead: the error is logged as one ERROR
line (which setting, its value, where it came from, what is valid) and monitoring is off for
the process, so the job runs exactly as it would without TelemHQ.

Token resolution for one job (:meth:`Settings.ping_url_for`): an explicit token > a match in
the ``TELEMHQ_TRACKERS`` glob map > ping key + slug of the job name > ``TELEMHQ_PING_URL`` /
``TELEMHQ_TOKEN`` > nothing (the job is not monitored; logged once, never an exception).
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import logging
import os
import re
import tomllib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

from telemhq_plugins.core.agent.paths import parse_agent
from telemhq_plugins.core.logs import log_once

__all__ = [
    "ADAPTER_SETTINGS",
    "DEFAULT_BASE_URL",
    "ConfigError",
    "Settings",
    "env_flag",
    "env_setting",
    "known_options",
    "load_settings",
    "log_config_error",
    "parse_flag",
    "settings_or_disabled",
    "slugify",
    "warn_unconfigured",
]

logger = logging.getLogger("telemhq")

DEFAULT_BASE_URL: Final = "https://telemhq.com"
_PREFIX: Final = "TELEMHQ_"
_ENV: Final[dict[str, str]] = {
    "base_url": "TELEMHQ_BASE_URL",
    "ping_url": "TELEMHQ_PING_URL",
    "token": "TELEMHQ_TOKEN",
    "ping_key": "TELEMHQ_PING_KEY",
    "trackers_file": "TELEMHQ_TRACKERS",
    "disabled": "TELEMHQ_DISABLED",
    "timeout": "TELEMHQ_TIMEOUT",
    "spool_dir": "TELEMHQ_SPOOL_DIR",
    "spool_max_bytes": "TELEMHQ_SPOOL_MAX_BYTES",
    "replay_interval": "TELEMHQ_REPLAY_INTERVAL",
    "send_start": "TELEMHQ_SEND_START",
    "queue_size": "TELEMHQ_QUEUE_SIZE",
    "flush_timeout": "TELEMHQ_FLUSH_TIMEOUT",
    "max_retries": "TELEMHQ_MAX_RETRIES",
    "api_key": "TELEMHQ_API_KEY",
    "agent": "TELEMHQ_AGENT",
}
#: Settings the adapters read themselves (:func:`env_flag`, :func:`env_setting`), by their
#: name in the config file: True for an on/off switch, False for text. They are checked with
#: the others, so a bad one turns monitoring off like any bad setting.
ADAPTER_SETTINGS: Final[dict[str, bool]] = {
    "celery_auto": True,
    "celery_beat_schedules": True,
    "airflow_auto": True,
    "airflow_sync": True,
    "airflow_include": False,
    "airflow_exclude": False,
    "airflow_conn_id": False,
    "prefect_auto": True,
    "prefect_tasks": True,
}
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})
_SWITCH: Final = "1/0, true/false, yes/no or on/off"


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message is one line naming the setting,
    its value, where it came from and what would be valid."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved settings. Build with :func:`load_settings`; immutable afterwards."""

    base_url: str = DEFAULT_BASE_URL
    ping_url: str | None = None
    token: str | None = None
    ping_key: str | None = None
    trackers_file: str | None = None
    #: glob over job names -> token or full ping URL, first match wins (file order).
    trackers: tuple[tuple[str, str], ...] = ()
    disabled: bool = False
    timeout: float = 15.0
    spool_dir: str | None = None
    #: the most bytes of ping bodies the spool keeps (the oldest pings are dropped beyond
    #: it, as beyond its 10,000 rows); 0: no byte bound
    spool_max_bytes: int = 50_000_000
    #: seconds between two passes of the worker over the spool's due pings
    replay_interval: float = 30.0
    send_start: bool = False
    queue_size: int = 10_000
    flush_timeout: float = 5.0
    max_retries: int = 3
    #: the management API key (schedule sync, ``telemhq sync``); never shown in ``repr``
    api_key: str | None = field(default=None, repr=False)
    #: the local agent pings are handed to: ``auto``, a socket path or ``tcp://127.0.0.1:PORT``
    #: (see :mod:`telemhq_plugins.core.agent.paths`); None: deliver directly
    agent: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def ping_url_for(self, job: str | None = None, token: str | None = None) -> str | None:
        """The ping URL for ``job`` by the precedence in the module docstring, or ``None``."""
        if token:
            return self.url_for_token(token)
        if job is not None:
            for pattern, target in self.trackers:
                if fnmatch.fnmatchcase(job, pattern):
                    return self.url_for_token(target)
            if self.ping_key:
                return f"{self.base_url}/ping/{self.ping_key}/{slugify(job)}"
        if self.ping_url:
            return self.ping_url
        if self.token:
            return self.url_for_token(self.token)
        return None

    def url_for_token(self, token: str) -> str:
        """A full URL is used as is; a bare token is joined with ``base_url``."""
        if token.startswith(("http://", "https://")):
            return token
        return f"{self.base_url}/ping/{token}"


def slugify(name: str) -> str:
    """``etl_daily.Load Orders`` -> ``etl-daily-load-orders`` (the server's slug rule)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:100] or "job"


def load_settings(
    *,
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    origin: str = "argument",
    **explicit: Any,
) -> Settings:
    """Resolve settings: explicit keyword arguments > ``env`` (default ``os.environ``) >
    config file > defaults. ``origin`` says where the explicit values come from, for messages
    (``"Dagster resource TelemHQResource"``). Unknown keywords and unusable values raise
    :class:`ConfigError` (see :func:`settings_or_disabled` for code that monitors a job)."""
    known = [f.name for f in fields(Settings) if f.name != "sources"]
    for key in explicit:
        if key not in known:
            raise ConfigError(f"unknown setting {key!r} ({origin}): {_valid_names(key, known)}")
    environ = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    path = _config_path(environ, config_file)
    if path is not None:
        for key, value in _read_config_file(path).items():
            if key in ADAPTER_SETTINGS:
                _check_adapter_setting(key, value, str(path))
            else:
                values[key], sources[key] = value, str(path)
    for name in ADAPTER_SETTINGS:
        var = _PREFIX + name.upper()
        if var in environ:
            _check_adapter_setting(name, environ[var], var)
    for key, var in _ENV.items():
        if var in environ:
            values[key], sources[key] = environ[var], var
    for key, value in explicit.items():
        if value is not None:
            values[key], sources[key] = value, origin

    typed = {key: _cast(key, value, sources[key]) for key, value in values.items()}
    if "base_url" in typed:
        typed["base_url"] = typed["base_url"].rstrip("/")
    settings = replace(Settings(), **typed, sources=sources)
    if settings.trackers_file and not settings.trackers:
        source = sources["trackers_file"]
        trackers = _read_trackers(Path(settings.trackers_file), source)
        settings = replace(settings, trackers=trackers)
    return settings


def settings_or_disabled(
    *,
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    origin: str = "argument",
    **explicit: Any,
) -> Settings:
    """:func:`load_settings` for code that monitors a job: a setting that cannot be used never
    reaches the job. It is logged as one ERROR line (:func:`log_config_error`) and the settings
    returned are disabled, so monitoring is off and the job runs as without TelemHQ."""
    try:
        return load_settings(env=env, config_file=config_file, origin=origin, **explicit)
    except ConfigError as exc:
        log_config_error(exc)
        return Settings(disabled=True, sources={"disabled": "configuration error"})


def log_config_error(error: ConfigError) -> None:
    """Log, once per process and message, that ``error`` turned monitoring off."""
    log_once(
        logger,
        logging.ERROR,
        ("config-error", str(error)),
        "TelemHQ: monitoring is off, the job runs as without it: %s",
        error,
    )


def known_options(options: Mapping[str, Any], valid: Sequence[str], origin: str) -> bool:
    """True when every key of ``options`` (a hook's keyword arguments) is in ``valid``; else
    the first unknown one is the ERROR line of :func:`log_config_error`, named with the
    closest valid one, and False: the caller then monitors nothing with these options."""
    for key in options:
        if key not in valid:
            names = _valid_names(key, list(valid))
            log_config_error(ConfigError(f"unknown option {key!r} ({origin}): {names}"))
            return False
    return True


def _config_path(
    environ: Mapping[str, str], config_file: str | os.PathLike[str] | None
) -> Path | None:
    """The config file to read: ``config_file``, ``$TELEMHQ_CONFIG`` (both must exist), else
    ``./telemhq.toml`` when there is one."""
    if config_file:
        return Path(config_file)
    named = environ.get("TELEMHQ_CONFIG")
    if named:
        path = Path(named)
        if not path.exists():
            raise ConfigError(
                f"TELEMHQ_CONFIG={named!r} (environment): no such file; expected the path of "
                "a telemhq.toml file, or TELEMHQ_CONFIG unset"
            )
        return path
    default = Path("telemhq.toml")
    return default if default.is_file() else None


#: Keys of the config file: every setting by its documented name (``TELEMHQ_TRACKERS`` is
#: ``trackers``, a table or a path), and the adapters' own.
_FILE_KEYS: Final = tuple(
    ["trackers" if key == "trackers_file" else key for key in _ENV] + list(ADAPTER_SETTINGS)
)


def _read_config_file(path: Path) -> dict[str, Any]:
    """The settings of a ``telemhq.toml``, by their :class:`Settings` or adapter name.

    Flat keys and a ``[telemhq]`` table are read together, and so are a top-level
    ``[trackers]`` table and one under ``[telemhq]``; ``[[jobs]]`` is left to ``telemhq sync``.
    Anything else is refused, named with the closest valid key."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist (TELEMHQ_CONFIG); expected a telemhq.toml file"
        ) from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    section = data.get("telemhq", {})
    if not isinstance(section, dict):
        raise ConfigError(f"telemhq = {section!r} in {path}: expected a [telemhq] table")
    merged: dict[str, Any] = {}
    trackers: list[tuple[str, str]] = []
    for where, table in (("", data), (" [telemhq]", section)):
        for key, value in table.items():
            if table is data and key in ("telemhq", "jobs"):
                continue
            if key == "trackers" and isinstance(value, dict):
                trackers.extend(_tracker_pairs(value, f"[trackers] in {path}"))
                continue
            if key not in _FILE_KEYS:
                names = _valid_names(key, [*_FILE_KEYS, "[telemhq]", "[trackers]", "[[jobs]]"])
                raise ConfigError(f"unknown setting {key!r} in {path}{where}: {names}")
            name = "trackers_file" if key == "trackers" else key
            if name in merged:
                raise ConfigError(
                    f"{key} is set twice in {path} (flat and under [telemhq]); expected it once"
                )
            merged[name] = value
    if trackers:
        merged["trackers"] = tuple(trackers)
    return merged


def _valid_names(key: str, valid: list[str]) -> str:
    """``did you mean 'timeout'?`` when one is close, else the list of valid names."""
    close = difflib.get_close_matches(key.lower(), valid, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "expected one of " + ", ".join(valid)


def _tracker_pairs(table: Mapping[Any, Any], where: str) -> list[tuple[str, str]]:
    for glob, target in table.items():
        if not isinstance(target, str) or not target.strip():
            raise ConfigError(
                f"{glob!r} = {target!r} {where}: expected a tracker token or ping URL (a string)"
            )
    return [(str(glob), str(target).strip()) for glob, target in table.items()]


def _read_trackers(path: Path, source: str) -> tuple[tuple[str, str], ...]:
    """Read a TOML or JSON map ``{"glob": "token or URL"}`` (a TOML ``[trackers]`` table too)."""
    where = _describe("trackers_file", str(path), source)
    expected = "expected a TOML or JSON file mapping job-name globs to tokens"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror}); {expected}") from None
    data: Any
    try:
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: does not parse ({exc}); {expected}") from None
    if isinstance(data, dict) and isinstance(data.get("trackers"), dict):
        data = data["trackers"]
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {expected}")
    return tuple(_tracker_pairs(data, f"in {path}"))


def _describe(key: str, value: Any, source: str) -> str:
    """Which setting, its value and where it came from, as a user would have written it."""
    if source.startswith(_PREFIX):
        return f"{source}={value!r} (environment)"
    name = "trackers" if key == "trackers_file" else key
    if os.sep in source or source.endswith((".toml", ".json")):  # a config file
        return f"{name} = {value!r} in {source}"
    return f"{name}={value!r} ({source})"


def _check_adapter_setting(key: str, value: Any, source: str) -> None:
    if ADAPTER_SETTINGS[key]:
        try:
            parse_flag(value)
        except ConfigError:
            raise ConfigError(
                f"{_describe(key, value, source)}: not a switch; expected {_SWITCH}"
            ) from None
    elif not isinstance(value, str):
        raise ConfigError(f"{_describe(key, value, source)}: expected a string")


def _cast(key: str, value: Any, source: str) -> Any:
    """``value`` as the type of setting ``key``, or a :class:`ConfigError` that names it."""
    default = getattr(Settings(), key)
    where = _describe(key, value, source)
    if key == "trackers":
        try:
            pairs = value.items() if isinstance(value, Mapping) else value
            return tuple((str(k), str(v)) for k, v in pairs)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a map of job-name globs to tokens") from None
    if isinstance(default, bool):
        try:
            return parse_flag(value)
        except ConfigError:
            raise ConfigError(f"{where}: not a switch; expected {_SWITCH}") from None
    if isinstance(default, (int, float)):
        return _number(value, default, where)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string")
    text = value.strip()
    if text and key in ("base_url", "ping_url") and not text.startswith(("http://", "https://")):
        example = DEFAULT_BASE_URL if key == "base_url" else f"{DEFAULT_BASE_URL}/ping/<token>"
        raise ConfigError(f"{where}: expected an http:// or https:// URL, e.g. {example}")
    if text and key == "agent":
        try:
            parse_agent(text)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return text or None


def _number(value: Any, default: float, where: str) -> float:
    whole = isinstance(default, int)
    expected = (
        f"a whole number, 0 or more (default {default})"
        if whole
        else f"a number of seconds above 0 (default {default:g})"
    )
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected {expected}")
    try:
        number = int(str(value).strip()) if whole else float(str(value).strip())
    except ValueError:
        raise ConfigError(f"{where}: not a number; expected {expected}") from None
    if (whole and number < 0) or (not whole and not number > 0):
        raise ConfigError(f"{where}: out of range; expected {expected}")
    return number


def parse_flag(value: object) -> bool:
    """A switch's value as a bool: ``1/true/yes/on`` are True, ``0/false/no/off`` and the empty
    string False (any case, surrounding blanks ignored; a bool is returned as is). Anything else
    raises :class:`ConfigError` naming the value."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{value!r} is not a switch: expected {_SWITCH}")


def _lookup(name: str, environ: Mapping[str, str]) -> tuple[Any, str] | None:
    """``TELEMHQ_<NAME>``'s raw value and its source: the environment, else the config file's
    ``<name>`` (lower case); None when neither has it."""
    if name in environ:
        return environ[name], name
    key = name.removeprefix(_PREFIX).lower()
    path = _config_path(environ, None)
    if path is None:
        return None
    values = _read_config_file(path)
    key = "trackers_file" if key == "trackers" else key
    return (values[key], str(path)) if key in values else None


def _found(name: str, env: Mapping[str, str] | None) -> tuple[Any, str] | None:
    """:func:`_lookup` that never raises: a config file that cannot be read is logged as
    :func:`settings_or_disabled` logs it (monitoring is off) and counts as no value."""
    try:
        return _lookup(name, os.environ if env is None else env)
    except ConfigError as exc:
        log_config_error(exc)
        return None


def env_setting(name: str, *, env: Mapping[str, str] | None = None) -> str | None:
    """The setting ``TELEMHQ_<NAME>`` as text: from ``env`` (default ``os.environ``), else the
    config file's ``<name>`` (lower case), else None. Never raises."""
    found = _found(name, env)
    if found is None:
        return None
    value = found[0]
    return str(value).lower() if isinstance(value, bool) else str(value)


def env_flag(name: str, *, default: bool = False, env: Mapping[str, str] | None = None) -> bool:
    """The switch ``TELEMHQ_<NAME>`` (environment, then config file, as :func:`env_setting`);
    ``default`` when it is unset. A value that is not a switch turns monitoring off: one ERROR
    line naming it (the one :func:`settings_or_disabled` logs for it), and False."""
    found = _found(name, env)
    if found is None:
        return default
    value, source = found
    try:
        return parse_flag(value)
    except ConfigError:
        key = name if source == name else name.removeprefix(_PREFIX).lower()
        log_config_error(
            ConfigError(f"{_describe(key, value, source)}: not a switch; expected {_SWITCH}")
        )
        return False


def warn_unconfigured(job: str | None) -> None:
    """Log once per process that pings for ``job`` go nowhere."""
    log_once(
        logger,
        logging.WARNING,
        ("unconfigured", job),
        "TelemHQ: no tracker for %s; set TELEMHQ_PING_URL, TELEMHQ_TOKEN, TELEMHQ_PING_KEY or "
        "TELEMHQ_TRACKERS (pings for it are skipped)",
        job or "this process",
    )
