"""``TelemHQHook`` and the ``telemhq`` connection type.

A ``telemhq`` connection holds what ``TELEMHQ_*`` variables would: host = the server's base
URL, password = a ping key (default) or a tracker token (login ``token``), extra =
``{"api_key": "..."}`` for schedule sync. As an environment variable::

    AIRFLOW_CONN_TELEMHQ_DEFAULT='{"conn_type": "telemhq", "host": "https://telemhq.example",
                                   "password": "<ping key>", "extra": {"api_key": "thq_..."}}'

or as a URI: ``telemhq://ping_key:<key>@telemhq.example:443?scheme=https&api_key=thq_...``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from telemhq_plugins.core.config import Settings, load_settings
from telemhq_plugins.core.delivery import Client

if TYPE_CHECKING:
    from airflow.sdk import BaseHook
else:
    try:
        from airflow.sdk import BaseHook
    except ImportError:  # Airflow 2
        from airflow.hooks.base import BaseHook

__all__ = ["TelemHQHook", "connection_api_key", "connection_settings"]


def connection_settings(conn: Any) -> dict[str, Any]:
    """The ``load_settings`` keywords a ``telemhq`` connection stands for."""
    extra: dict[str, Any] = dict(getattr(conn, "extra_dejson", None) or {})
    values: dict[str, Any] = {}
    host = (conn.host or "").strip()
    if host:
        if "://" not in host:
            scheme = str(extra.get("scheme") or "https")
            host = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
        values["base_url"] = host.rstrip("/")
    secret = conn.password or None
    if secret:
        kind = (conn.login or "ping_key").strip().lower()
        values["token" if kind == "token" else "ping_key"] = secret
    return values


def connection_api_key(conn: Any) -> str | None:
    extra: dict[str, Any] = dict(getattr(conn, "extra_dejson", None) or {})
    key = extra.get("api_key")
    return str(key) if key else None


class TelemHQHook(BaseHook):
    """The ``telemhq`` connection as TelemHQ settings and a delivery client.

    ``TelemHQHook().get_conn()`` is a :class:`~telemhq_plugins.core.Client` (its own, not the
    process's); ``settings()`` the resolved :class:`~telemhq_plugins.core.Settings`;
    ``api_key`` the management API key for schedule sync, if the connection has one."""

    conn_name_attr = "telemhq_conn_id"
    default_conn_name = "telemhq_default"
    conn_type = "telemhq"
    hook_name = "TelemHQ"

    def __init__(self, telemhq_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.telemhq_conn_id = telemhq_conn_id

    def settings(self) -> Settings:
        conn = self.get_connection(self.telemhq_conn_id)
        return load_settings(**connection_settings(conn))

    @property
    def api_key(self) -> str | None:
        return connection_api_key(self.get_connection(self.telemhq_conn_id))

    def get_conn(self) -> Client:
        return Client(self.settings())

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {
                "host": "Base URL",
                "login": "Password is (ping_key or token)",
                "password": "Ping key or tracker token",
            },
            "placeholders": {
                "host": "https://telemhq.example",
                "login": "ping_key",
                "extra": '{"api_key": "thq_... (schedule sync)"}',
            },
        }
