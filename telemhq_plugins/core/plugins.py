"""The plugin manager: loads the ``telemhq`` entry-point group once, wraps every hook call."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import pluggy

from telemhq_plugins.core import hookspecs
from telemhq_plugins.core.logs import log_once

if TYPE_CHECKING:
    from telemhq_plugins.core.payload import Ping
    from telemhq_plugins.core.results import DeliveryResult

__all__ = [
    "has_before_send_hooks",
    "has_result_hooks",
    "plugin_manager",
    "run_before_send_hooks",
    "run_result_hooks",
]

logger = logging.getLogger("telemhq")
_pm: pluggy.PluginManager | None = None
_pm_lock = threading.Lock()


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with the ``telemhq`` entry points loaded."""
    global _pm
    if _pm is None:
        with _pm_lock:
            if _pm is None:
                pm = pluggy.PluginManager("telemhq")
                pm.add_hookspecs(hookspecs)
                try:
                    pm.load_setuptools_entrypoints("telemhq")
                except Exception:
                    logger.exception("TelemHQ: loading plugins of entry-point group 'telemhq'")
                _pm = pm
    return _pm


def _plugin_failed(hook: str) -> None:
    log_once(
        logger,
        logging.ERROR,
        ("plugin", hook),
        "TelemHQ: a plugin's %s hook raised; the ping is sent as if the hook were absent",
        hook,
        exc_info=True,
    )


def run_before_send_hooks(ping: Ping) -> bool:
    """Enrich then filter ``ping``; False when a plugin dropped it. Never raises."""
    hook = plugin_manager().hook
    # Hooks nobody implements are skipped: this runs for every ping on the delivery thread.
    if hook.telemhq_enrich_ping.get_hookimpls():
        try:
            hook.telemhq_enrich_ping(ping=ping)
        except Exception:
            _plugin_failed("telemhq_enrich_ping")
    if not hook.telemhq_filter_ping.get_hookimpls():
        return True
    try:
        verdicts = hook.telemhq_filter_ping(ping=ping)
    except Exception:
        _plugin_failed("telemhq_filter_ping")
        return True
    return all(v is not False for v in verdicts)


def has_before_send_hooks() -> bool:
    """True when a plugin enriches or filters pings (else delivery need not ask per ping)."""
    hook = plugin_manager().hook
    enrich, filters = hook.telemhq_enrich_ping, hook.telemhq_filter_ping
    return bool(enrich.get_hookimpls() or filters.get_hookimpls())


def has_result_hooks() -> bool:
    """True when a plugin implements ``telemhq_delivery_result`` (else delivery need not build
    a result per ping)."""
    return bool(plugin_manager().hook.telemhq_delivery_result.get_hookimpls())


def run_result_hooks(ping: Ping, result: DeliveryResult) -> None:
    hook = plugin_manager().hook.telemhq_delivery_result
    if not hook.get_hookimpls():
        return
    try:
        hook(ping=ping, result=result)
    except Exception:
        _plugin_failed("telemhq_delivery_result")
