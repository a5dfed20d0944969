"""The delivery client the Airflow adapter sends through."""

from __future__ import annotations

from telemhq_plugins.core.delivery import Client, get_client

__all__ = ["airflow_client"]


def airflow_client() -> Client:
    """The process's delivery client (``TELEMHQ_*`` settings)."""
    return get_client()
