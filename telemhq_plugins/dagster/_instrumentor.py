"""``DagsterInstrumentor``: the adapter contract for Dagster, where there is nothing to patch.

Dagster reports through what a code location's definitions carry (:func:`telemhq_hooks`,
:func:`telemhq_sensors`, :class:`TelemHQResource`), never through process-wide state, so
``instrument()`` installs nothing: it checks the installed Dagster against the versions this
adapter supports, and an explicit call on an unsupported one raises (a code location then
fails at load, rather than its hooks and sensors running on APIs they do not expect). The
factories make the same check and only log it, as automatic instrumentation does elsewhere.
"""

from __future__ import annotations

import logging

from telemhq_plugins.core.instrumentor import Instrumentor
from telemhq_plugins.core.logs import log_once

__all__ = ["DagsterInstrumentor", "instrument", "uninstrument", "warn_if_unsupported"]

logger = logging.getLogger("telemhq")


class DagsterInstrumentor(Instrumentor):
    """The version check of the Dagster adapter (see the module docstring)."""

    instruments = ("dagster", ">=1.12,<2")

    def _instrument(self) -> None:
        """Nothing to install: the definitions carry the hooks and sensors."""

    def _uninstrument(self) -> None:
        """Nothing to take back."""


def instrument() -> bool:
    """Check that the installed Dagster is supported; True on the first call. Dagster needs
    nothing patched: add :func:`telemhq_hooks` and :func:`telemhq_sensors` to the
    definitions. Raises :class:`~telemhq_plugins.core.instrumentor.UnsupportedOrchestrator`
    when Dagster is not a supported version."""
    instrumentor = DagsterInstrumentor()
    instrumentor.require()
    return instrumentor.instrument()


def uninstrument() -> bool:
    """Undo :func:`instrument` (nothing was installed); True if it was on."""
    return DagsterInstrumentor().uninstrument()


def warn_if_unsupported() -> None:
    """Log once when the installed Dagster is not a supported version (the factories call
    this: they go on, as automatic instrumentation does)."""
    problem = DagsterInstrumentor().unsupported()
    if problem is not None:
        log_once(
            logger,
            logging.ERROR,
            ("dagster-unsupported", problem),
            "TelemHQ: %s; the Dagster hooks and sensors may not report",
            problem,
        )
