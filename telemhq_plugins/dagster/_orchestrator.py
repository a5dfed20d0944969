"""Dagster itself: the first import of this package, so that a missing Dagster is an
ImportError that says which extra of telemhq-plugins to install."""

from __future__ import annotations

from telemhq_plugins.core.extras import missing_extra

try:
    import dagster  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in an environment without dagster
    raise ImportError(missing_extra("telemhq_plugins.dagster", "Dagster", "dagster")) from exc
