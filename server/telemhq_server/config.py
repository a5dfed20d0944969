"""Server settings, resolved once: command-line flags > environment > defaults.

Variables (``TELEMHQ_`` + the name):

- ``DATABASE_URL``: SQLAlchemy URL; default ``sqlite:///telemhq.db`` in the working
  directory; ``postgresql+psycopg://user@host/db`` for PostgreSQL.
- ``API_KEY``: the admin (read-write) API key, stored hashed; without it one is created on
  first start and printed once.
- ``PUBLIC_URL``: base of ``ping_url``/``badge_url`` in answers (default: the request's host).
- ``MAX_BODY_BYTES``: largest ping body accepted, default 102400 (413 above).
- ``RETENTION_RUNS``: runs kept per tracker, default 1000 (older ones pruned in the background).
- ``PRUNE_INTERVAL``: seconds between retention passes, default 30.
- ``CACHE_TTL``: seconds a process trusts its cached tracker config, default 1.0 (how soon
  other processes' changes are seen).
- ``WORKERS``: server processes (granian workers), default 1.
- ``LOG_LEVEL``: default ``INFO``.
- ``MAX_BATCH``: most pings written in one group-commit transaction, default 512.
- ``ALERT_GROUP_WINDOW``: seconds a notification waits for the others of its parent run
  (or of a wave of late jobs) to be folded into one message, default 60.
- ``ALERT_LATE_MIN``, ``ALERT_LATE_FRACTION``: how many late jobs of one orchestrator (or one
  tag) make one "N jobs are late" message instead of N: at least this many, default 5, and at
  least this fraction of its scheduled trackers, default 0.5.
- ``ALERT_LATE_TAGS``: comma-separated tags or globs (``team:*``); a late tracker with a
  matching tag is counted with the others of that tag instead of its orchestrator.
- ``AIRFLOW_UI_URL``, ``PREFECT_UI_URL``, ``DAGSTER_UI_URL``: base URLs of the orchestrators'
  own UIs, from which the dashboard links a run there when its ping carries no ``ui_url``.

Settings travel to granian's worker processes through the environment: :meth:`Settings.to_env`
writes them for the child and :func:`load_settings` reads them back (the parent's own
environment is not modified; the child gets a copy).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Final

from telemhq_plugins.core.config import parse_flag

__all__ = ["DEFAULT_DATABASE_URL", "Settings", "load_settings"]

DEFAULT_DATABASE_URL: Final = "sqlite:///telemhq.db"

_ENV: Final[dict[str, str]] = {
    "database_url": "TELEMHQ_DATABASE_URL",
    "api_key": "TELEMHQ_API_KEY",
    "public_url": "TELEMHQ_PUBLIC_URL",
    "max_body_bytes": "TELEMHQ_MAX_BODY_BYTES",
    "retention_runs": "TELEMHQ_RETENTION_RUNS",
    "prune_interval": "TELEMHQ_PRUNE_INTERVAL",
    "cache_ttl": "TELEMHQ_CACHE_TTL",
    "workers": "TELEMHQ_WORKERS",
    "log_level": "TELEMHQ_LOG_LEVEL",
    "max_batch": "TELEMHQ_MAX_BATCH",
    "public_dashboard": "TELEMHQ_PUBLIC_DASHBOARD",  # the dashboard without sign-in
    "alert_group_window": "TELEMHQ_ALERT_GROUP_WINDOW",  # seconds notifications wait to group
    "alert_late_min": "TELEMHQ_ALERT_LATE_MIN",
    "alert_late_fraction": "TELEMHQ_ALERT_LATE_FRACTION",
    "alert_late_tags": "TELEMHQ_ALERT_LATE_TAGS",
    "airflow_ui_url": "TELEMHQ_AIRFLOW_UI_URL",
    "prefect_ui_url": "TELEMHQ_PREFECT_UI_URL",
    "dagster_ui_url": "TELEMHQ_DAGSTER_UI_URL",
}


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    api_key: str | None = None
    public_url: str | None = None
    max_body_bytes: int = 100 * 1024
    retention_runs: int = 1000
    prune_interval: float = 30.0
    cache_ttl: float = 1.0
    workers: int = 1
    log_level: str = "INFO"
    max_batch: int = 512
    public_dashboard: bool = False
    alert_group_window: float = 60.0
    alert_late_min: int = 5
    alert_late_fraction: float = 0.5
    alert_late_tags: str | None = None
    airflow_ui_url: str | None = None
    prefect_ui_url: str | None = None
    dagster_ui_url: str | None = None

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given fields replaced; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_env(self) -> dict[str, str]:
        """The settings as ``TELEMHQ_*`` variables (for a child process's environment)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[_ENV[f.name]] = str(value)
        return out

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``environ`` (default ``os.environ``), then ``overrides`` on top."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = env.get(_ENV[f.name])
        if raw is None or raw == "":
            continue
        kind = type(getattr(Settings(), f.name))
        try:
            if kind is bool:  # TELEMHQ_PUBLIC_DASHBOARD=1/true/yes/on, 0/false/no/off
                values[f.name] = parse_flag(raw)
            elif kind is int:
                values[f.name] = int(raw)
            elif kind is float:
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        except ValueError:
            raise ValueError(f"{_ENV[f.name]}={raw!r} is not a valid {kind.__name__}") from None
    settings = Settings(**values).with_overrides(**overrides)
    if not (settings.alert_late_min >= 1 and 0 <= settings.alert_late_fraction <= 1):
        raise ValueError(
            "TELEMHQ_ALERT_LATE_MIN must be >= 1 and TELEMHQ_ALERT_LATE_FRACTION in [0, 1]"
        )
    if settings.max_body_bytes < 1 or settings.retention_runs < 1 or settings.max_batch < 1:
        raise ValueError(
            "TELEMHQ_MAX_BODY_BYTES, TELEMHQ_RETENTION_RUNS and TELEMHQ_MAX_BATCH must be >= 1"
        )
    return settings
