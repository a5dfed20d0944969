"""The delivery client the Airflow adapter sends through."""

from __future__ import annotations

from telemhq_plugins.core.delivery import Client, current_client, get_client

__all__ = ["airflow_client", "existing_client"]


def airflow_client() -> Client:
    """The process's delivery client (``TELEMHQ_*`` settings)."""
    return get_client()


def existing_client() -> Client | None:
    """The client pings were sent through in this process, None when there is none yet."""
    return current_client()
