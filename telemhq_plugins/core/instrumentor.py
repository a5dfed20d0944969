"""``Instrumentor``: the base of every adapter's switch (``CeleryInstrumentor``, ...).

Modelled on OpenTelemetry's ``BaseInstrumentor``: one instance per subclass in the process,
``instrument()`` installs once (a second call logs and does nothing), ``uninstrument()`` takes
back what was installed, and the orchestrator's installed version is checked against the
versions the adapter supports (a ``packaging`` specifier with a ceiling, as OpenTelemetry's
``_instruments`` declares them) before anything is touched. Neither ever raises into the
application: an adapter that cannot instrument leaves the orchestrator as it found it.

Whether an unsupported orchestrator is an error depends on who asked, as in sentry-python
(``DidNotEnable``): automatic instrumentation (an environment switch, an entry point) only
logs, while an explicit request (each adapter package's ``instrument()``) raises
:class:`UnsupportedOrchestrator` through :meth:`Instrumentor.require`.
"""

from __future__ import annotations

import abc
import importlib.metadata
import logging
import os
import threading
from typing import Any, ClassVar, Self

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from telemhq_plugins.core.logs import log_once

__all__ = ["Instrumentor", "UnsupportedOrchestrator", "check_version"]

logger = logging.getLogger("telemhq")


class UnsupportedOrchestrator(RuntimeError):
    """An explicit request to instrument an orchestrator that is not installed, or not at a
    version the adapter supports; the message names both versions."""


class Instrumentor(abc.ABC):
    """Subclass, set :attr:`instruments` and implement :meth:`_instrument` (install the hooks;
    raise on failure) and :meth:`_uninstrument` (take back whatever is installed, also after
    a partial :meth:`_instrument`)::

        class AcmeInstrumentor(Instrumentor):
            instruments = ("acme", ">=2.1,<3")

            def _init_state(self): self.hooks = []   # per-instance state, set once
            def _instrument(self, *, option=None): ...
            def _uninstrument(self): ...

        AcmeInstrumentor().instrument()   # True; the same instance everywhere in the process

    Per-instance state is set in :meth:`_init_state`, which runs once, when the process's
    instance is created (``__init__`` would run again at every ``AcmeInstrumentor()``).
    """

    #: the orchestrator's distribution and the versions supported, as a PEP 440 specifier
    #: (``("celery", ">=5.3,<6")``); a bare version is a minimum (``"5.3"`` is ``">=5.3"``).
    instruments: ClassVar[tuple[str, str] | None] = None

    _instances: ClassVar[dict[type[Instrumentor], Instrumentor]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()
    _lock: threading.RLock
    _instrumented: bool

    def __new__(cls) -> Self:
        with Instrumentor._instances_lock:
            instance = Instrumentor._instances.get(cls)
            if instance is None:
                instance = super().__new__(cls)
                instance._lock = threading.RLock()
                instance._instrumented = False
                instance._init_state()
                Instrumentor._instances[cls] = instance
            return instance  # type: ignore[return-value]  # keyed by its own class

    def _init_state(self) -> None:  # noqa: B027 - optional: most instrumentors have none
        """Set this instrumentor's own state (called once per process, at creation)."""

    def unsupported(self) -> str | None:
        """None when the orchestrator is installed at a supported version, else why not."""
        return None if self.instruments is None else check_version(*self.instruments)

    def require(self) -> None:
        """Raise :class:`UnsupportedOrchestrator` when the orchestrator is missing or at a
        version this adapter does not support: what an explicit request (an adapter
        package's ``instrument()``) calls before :meth:`instrument`."""
        problem = self.unsupported()
        if problem is not None:
            raise UnsupportedOrchestrator(f"TelemHQ: {problem}")

    @property
    def is_instrumented(self) -> bool:
        return self._instrumented

    def instrument(self, *args: Any, **options: Any) -> bool:
        """Install; True if this call did. False, with one log line, when already instrumented,
        when the orchestrator is missing or too old, or when installing failed (what was
        installed is taken back first). Never raises; thread-safe."""
        name = type(self).__name__
        try:
            with self._lock:
                if self._instrumented:
                    log_once(
                        logger,
                        logging.WARNING,
                        ("already instrumented", type(self)),
                        "TelemHQ: %s is already instrumented; this call changes nothing "
                        "(uninstrument() first to change its options)",
                        name,
                    )
                    return False
                problem = self.unsupported()
                if problem is not None:
                    log_once(
                        logger,
                        logging.ERROR,
                        ("instruments", type(self), problem),
                        "TelemHQ: %s; %s is not instrumented (nothing is monitored)",
                        problem,
                        name,
                    )
                    return False
                try:
                    self._instrument(*args, **options)
                except Exception:
                    # Half installed is worse than not at all: take back what was installed.
                    logger.exception("TelemHQ: %s failed to instrument; nothing is monitored", name)
                    self._undo(name)
                    return False
                self._instrumented = True
                return True
        except Exception:  # the guard itself (a logging handler raising): never the caller's
            return False

    def uninstrument(self) -> bool:
        """Take back what :meth:`instrument` installed; True if something was installed.
        Never raises."""
        try:
            with self._lock:
                if not self._instrumented:
                    return False
                self._instrumented = False
                self._undo(type(self).__name__)
                return True
        except Exception:
            return False

    def _undo(self, name: str) -> None:
        try:
            self._uninstrument()
        except Exception:
            log_once(
                logger,
                logging.ERROR,
                ("uninstrument", type(self)),
                "TelemHQ: %s failed to uninstrument",
                name,
                exc_info=True,
            )

    @abc.abstractmethod
    def _instrument(self, *args: Any, **options: Any) -> None:
        """Install the hooks; raise on failure (:meth:`_uninstrument` is then called)."""

    @abc.abstractmethod
    def _uninstrument(self) -> None:
        """Take back every hook installed so far, whether or not :meth:`_instrument` finished."""


def _new_locks_in_child() -> None:
    # A fork while another thread instruments would leave the child's locks held forever.
    Instrumentor._instances_lock = threading.Lock()
    for instance in Instrumentor._instances.values():
        instance._lock = threading.RLock()


os.register_at_fork(after_in_child=_new_locks_in_child)


def check_version(distribution: str, supported: str) -> str | None:
    """None when ``distribution`` is installed at a version ``supported`` allows (a PEP 440
    specifier such as ``">=5.3,<6"``; a bare version is a minimum), else why not: a message
    naming the installed version and the requirement. Pre-releases of a supported version
    pass; a version that is not PEP 440 (a source build's own string) is not refused, and
    neither is anything when ``supported`` cannot be read."""
    specifier = supported.strip()
    if specifier[:1].isdigit():
        specifier = f">={specifier}"
    requirement = f"{distribution}{specifier}"
    try:
        installed = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return f"{distribution} is not installed (telemhq-plugins needs {requirement})"
    try:
        allowed = SpecifierSet(specifier).contains(Version(installed), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return None
    if allowed:
        return None
    return (
        f"{distribution} {installed} is installed but telemhq-plugins needs {requirement} "
        f'(pip install "{requirement}")'
    )
