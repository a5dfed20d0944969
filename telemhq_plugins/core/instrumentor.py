"""``Instrumentor``: the base of every adapter's switch (``CeleryInstrumentor``, ...).

Modelled on OpenTelemetry's ``BaseInstrumentor``: one instance per subclass in the process,
``instrument()`` installs once (a second call logs and does nothing), ``uninstrument()`` takes
back what was installed, and the orchestrator's installed version is checked against the
minimum the adapter supports before anything is touched. Neither ever raises into the
application: an adapter that cannot instrument leaves the orchestrator as it found it.
"""

from __future__ import annotations

import abc
import importlib.metadata
import logging
import os
import re
import threading
from typing import Any, ClassVar, Self

from telemhq_plugins.core.logs import log_once

__all__ = ["Instrumentor", "check_version"]

logger = logging.getLogger("telemhq")


class Instrumentor(abc.ABC):
    """Subclass, set :attr:`instruments` and implement :meth:`_instrument` (install the hooks;
    raise on failure) and :meth:`_uninstrument` (take back whatever is installed, also after
    a partial :meth:`_instrument`)::

        class AcmeInstrumentor(Instrumentor):
            instruments = ("acme", "2.1")

            def _instrument(self, *args, **options): ...
            def _uninstrument(self): ...

        AcmeInstrumentor().instrument()   # True; the same instance everywhere in the process
    """

    #: the orchestrator's distribution and minimum version, e.g. ``("celery", "5.3")``.
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
                Instrumentor._instances[cls] = instance
            return instance  # type: ignore[return-value]  # keyed by its own class

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
                if self.instruments is not None:
                    problem = check_version(*self.instruments)
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


def check_version(distribution: str, minimum: str) -> str | None:
    """None when ``distribution`` is installed at ``minimum`` or later, else why not (a message
    naming the installed and the required version). A version this cannot read (not of the
    ``1.2.3`` form) passes: only a provably older one is refused."""
    requirement = f"{distribution}>={minimum}"
    try:
        installed = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return f"{distribution} is not installed (telemhq-plugins needs {requirement})"
    have, need = _version_key(installed), _version_key(minimum)
    if have is None or need is None or have >= need:
        return None
    return (
        f"{distribution} {installed} is installed but telemhq-plugins needs {requirement} "
        f'(pip install "{requirement}")'
    )


_VERSION = re.compile(
    r"\s*v?(?:(?P<epoch>\d+)!)?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre>a|b|c|rc|alpha|beta|pre|preview|dev)\d*)?",
    re.IGNORECASE,
)


def _version_key(version: str) -> tuple[int, tuple[int, ...], int] | None:
    """A comparable key for the parts of a PEP 440 version that decide "at least": epoch,
    release (trailing zeros dropped: 5.3 == 5.3.0) and whether it is a pre-release or dev
    build of that release (``5.3rc1`` < ``5.3``). Post and local parts do not matter here."""
    match = _VERSION.match(version)
    if match is None:
        return None
    release = [int(part) for part in match["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    return int(match["epoch"] or 0), tuple(release), 0 if match["pre"] else 1
