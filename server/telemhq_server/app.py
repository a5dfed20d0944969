"""The server assembled from its parts: ``create_app(settings)`` -> :class:`TelemHQ`.

:data:`PARTS` lists every part's ``register`` function, imported like any other name: a part
that is renamed or broken fails at import, loudly, instead of silently leaving the server
without a feature. How a part plugs in is described in :mod:`telemhq_server.host`.
"""

from __future__ import annotations

from typing import Final

from telemhq_server import api, badges, dashboard, detector, retention, webhooks
from telemhq_server.config import Settings, load_settings
from telemhq_server.host import Register, TelemHQ

__all__ = ["PARTS", "TelemHQ", "app_from_env", "create_app"]

#: The parts of the server, in order (the management API first: its routes are matched
#: before the others').
PARTS: Final[tuple[Register, ...]] = (
    api.register,
    retention.register,
    detector.register,
    webhooks.register,
    badges.register,
    dashboard.register,
)


def create_app(settings: Settings | None = None, *, tune_gc: bool = False) -> TelemHQ:
    """The ASGI app for ``settings`` (default: from the environment)."""
    return TelemHQ(settings or load_settings(), PARTS, tune_gc=tune_gc)


def app_from_env() -> TelemHQ:
    """Factory used by granian's workers: settings come through the environment. The
    worker process is the server's own, so it also tunes the garbage collector."""
    from telemhq_server.logs import setup_logging

    settings = load_settings()
    setup_logging(settings.log_level)
    return create_app(settings, tune_gc=True)
