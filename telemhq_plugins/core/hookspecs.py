"""The pluggy hook specifications of telemhq-plugins.

A plugin is any object or module with functions marked ``@telemhq_plugins.hookimpl`` whose
names match the specs below; register it with ``telemhq_plugins.plugin_manager().register(obj)``
or ship it in a distribution under the ``telemhq`` entry-point group.

Hooks are called with keyword arguments only, on the delivery worker thread (never on the
user's job thread). A plugin's exception is caught and logged at the call site: a broken
plugin never breaks a job and never loses a ping (the ping is sent as it was).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from telemhq_plugins.core.payload import Ping
    from telemhq_plugins.core.results import DeliveryResult

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("telemhq")
hookimpl = pluggy.HookimplMarker("telemhq")


@hookspec
def telemhq_enrich_ping(ping: Ping) -> None:
    """Add to ``ping`` before it is sent: mutate ``ping.fields`` (e.g. a team or git SHA)."""


@hookspec
def telemhq_filter_ping(ping: Ping) -> bool | None:
    """Scrub ``ping`` in place (e.g. drop secrets from ``ping.error``) or drop it.

    Return ``False`` to drop the ping (it is counted as filtered, not sent); ``None`` or
    ``True`` to keep it. Every implementation runs; any ``False`` drops.
    """


@hookspec
def telemhq_delivery_result(ping: Ping, result: DeliveryResult) -> None:
    """Observe the outcome of sending ``ping``: delivered, rejected, spooled or dropped."""
