"""Which jobs an adapter monitors, and how: include/exclude globs over job names and the
per-job option (``True``/``False``, or a mapping with ``enabled``, ``token``, ``send_start``).

Pure functions and a small frozen policy; nothing here sends anything.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from telemhq_plugins.core.logs import log_once

__all__ = ["JobPolicy", "matches", "policy_from_kwargs", "resolve_policy"]

logger = logging.getLogger("telemhq")


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """How one job is monitored: an explicit token or ping URL (else the core resolver decides)
    and whether to send a ``start`` ping (``None``: the ``TELEMHQ_SEND_START`` setting)."""

    token: str | None = None
    send_start: bool | None = None


def matches(name: str, *, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> bool:
    """True when ``name`` matches no ``exclude`` glob and, with ``include`` globs given, one of
    them (case-sensitive shell globs: ``etl.*``, ``*_daily``)."""
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude):
        return False
    return not include or any(fnmatch.fnmatchcase(name, pattern) for pattern in include)


def resolve_policy(
    name: str,
    options: object,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> JobPolicy | None:
    """The policy for job ``name`` with its per-job option ``options``, or ``None`` when the job
    is not monitored.

    An explicit ``enabled`` in the option wins over the globs (per-job opt-in/opt-out);
    otherwise :func:`matches` decides. ``options`` may be ``True``/``False`` as a shorthand for
    ``enabled``, or a mapping with ``enabled``, ``token`` and ``send_start``; anything else
    counts as no option."""
    if isinstance(options, bool):
        options = {"enabled": options}
    elif not isinstance(options, Mapping):
        options = {}
    enabled = options.get("enabled")
    if enabled is None:
        if not matches(name, include=include, exclude=exclude):
            return None
    elif not enabled:
        return None
    token = options.get("token")
    send_start = options.get("send_start")
    return JobPolicy(
        token=str(token) if token else None,
        send_start=None if send_start is None else bool(send_start),
    )


def policy_from_kwargs(
    token: str | None,
    send_start: bool | None,
    options: Mapping[str, object],
    *,
    where: str,
) -> JobPolicy:
    """The policy of a helper that takes ``token``, ``send_start`` and ``**options``
    (``callbacks(...)``, ``hooks(...)``). ``options`` may hold ``enabled``, which the helper
    reads itself; any other name is logged once (naming ``where``) and ignored, never raised:
    a misspelt option must not stop the DAG or flow that passes it."""
    unknown = sorted(set(options) - {"enabled"})
    if unknown:
        log_once(
            logger,
            logging.WARNING,
            ("job-options", where, tuple(unknown)),
            "TelemHQ: unknown option(s) %s for %s are ignored (known: token, send_start, enabled)",
            ", ".join(unknown),
            where,
        )
    return JobPolicy(token=token, send_start=send_start)
