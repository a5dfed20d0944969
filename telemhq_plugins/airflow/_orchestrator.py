"""Apache Airflow itself: the first import of this package, so that a missing Apache Airflow is an
ImportError that says which extra of telemhq-plugins to install."""

from __future__ import annotations

from telemhq_plugins.core.extras import missing_extra

try:
    import airflow  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in an environment without airflow
    raise ImportError(
        missing_extra("telemhq_plugins.airflow", "Apache Airflow", "airflow")
    ) from exc
