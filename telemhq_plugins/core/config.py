"""Configuration and token resolution: the one place that decides where a ping goes.

Precedence, highest first (documented once, here):

1. explicit arguments (``load_settings(token=...)``, ``@monitor(token=...)``, task options);
2. the environment (``TELEMHQ_*``; read, never written);
3. the config file: ``$TELEMHQ_CONFIG``, else ``./telemhq.toml`` if present;
4. defaults.

Token resolution for one job (:meth:`Settings.ping_url_for`): an explicit token > a match in
the ``TELEMHQ_TRACKERS`` glob map > ping key + slug of the job name > ``TELEMHQ_PING_URL`` /
``TELEMHQ_TOKEN`` > nothing (the job is not monitored; logged once, never an exception).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

from telemhq_plugins.core.logs import log_once

__all__ = [
    "DEFAULT_BASE_URL",
    "ConfigError",
    "Settings",
    "env_flag",
    "load_settings",
    "parse_flag",
    "slugify",
    "warn_unconfigured",
]

logger = logging.getLogger("telemhq")

DEFAULT_BASE_URL: Final = "https://telemhq.com"
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
}
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the source and the fix."""


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
    **explicit: Any,
) -> Settings:
    """Resolve settings: explicit keyword arguments > ``env`` (default ``os.environ``) >
    config file > defaults. Unknown keywords and unusable values raise :class:`ConfigError`."""
    known = {f.name for f in fields(Settings)} - {"sources"}
    unknown = set(explicit) - known
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    environ = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    file_path = config_file or environ.get("TELEMHQ_CONFIG")
    path = Path(file_path) if file_path else Path("telemhq.toml")
    if file_path or path.is_file():
        for key, value in _read_config_file(path).items():
            if key not in known:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            values[key], sources[key] = value, str(path)
    for key, var in _ENV.items():
        if var in environ:
            values[key], sources[key] = environ[var], var
    for key, value in explicit.items():
        if value is not None:
            values[key], sources[key] = value, "argument"

    typed = {key: _cast(key, value, sources[key]) for key, value in values.items()}
    if "base_url" in typed:
        typed["base_url"] = typed["base_url"].rstrip("/")
    settings = replace(Settings(), **typed, sources=sources)
    if settings.trackers_file and not settings.trackers:
        settings = replace(settings, trackers=_read_trackers(Path(settings.trackers_file)))
    return settings


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (TELEMHQ_CONFIG)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    # Accept both a flat file and a [telemhq] table; [[jobs]] is read by ``telemhq sync``.
    section = data.get("telemhq", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [telemhq] must be a table")
    if section is data:
        section = {k: v for k, v in data.items() if k != "jobs"}
    if isinstance(section.get("trackers"), dict):
        section = dict(section)
        section["trackers"] = tuple((str(k), str(v)) for k, v in section["trackers"].items())
    return dict(section)


def _read_trackers(path: Path) -> tuple[tuple[str, str], ...]:
    """Read a TOML or JSON map ``{"glob": "token or URL"}`` (a TOML ``[trackers]`` table too)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"TELEMHQ_TRACKERS file {path} cannot be read: {exc}") from None
    data: Any
    try:
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"TELEMHQ_TRACKERS file {path} does not parse: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("trackers"), dict):
        data = data["trackers"]
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"TELEMHQ_TRACKERS file {path} must map job-name globs to tokens")
    return tuple((str(k), v) for k, v in data.items())


def _cast(key: str, value: Any, source: str) -> Any:
    default = getattr(Settings(), key)
    try:
        if key == "trackers":
            if isinstance(value, Mapping):
                return tuple((str(k), str(v)) for k, v in value.items())
            return tuple((str(k), str(v)) for k, v in value)
        if isinstance(default, bool):
            return parse_flag(value)
        if isinstance(default, int):
            number = int(value)
            if number < 0:
                raise ValueError("must not be negative")
            return number
        if isinstance(default, float):
            number_f = float(value)
            if not number_f > 0:
                raise ValueError("must be a positive number of seconds")
            return number_f
        text = str(value).strip()
        return text or None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: invalid value {value!r} for {key}: {exc}") from None


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
    raise ConfigError(f"{value!r} is not a switch: expected 1/0, true/false, yes/no or on/off")


def env_flag(name: str, *, default: bool = False, env: Mapping[str, str] | None = None) -> bool:
    """The ``TELEMHQ_*`` switch ``name`` from ``env`` (default ``os.environ``); ``default`` when
    it is unset, or when its value is unusable (one warning naming the variable; never raises)."""
    environ = os.environ if env is None else env
    raw = environ.get(name)
    if raw is None:
        return default
    try:
        return parse_flag(raw)
    except ConfigError:
        log_once(
            logger,
            logging.WARNING,
            ("env_flag", name, raw),
            "TelemHQ: %s=%r is not a switch (expected 1/0, true/false, yes/no or on/off); "
            "using the default, %s",
            name,
            raw,
            "on" if default else "off",
        )
        return default


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
