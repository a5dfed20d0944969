"""Which jobs an adapter monitors, and how: include/exclude globs over job names and the
per-job option (``True``/``False``, or a mapping with ``enabled``, ``token``, ``send_start``).

Pure functions and a small frozen policy; nothing here sends anything.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from telemhq_plugins.core.config import known_options

__all__ = ["JobPolicy", "matches", "policy_from_kwargs", "resolve_policy"]


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
    valid: Sequence[str] = ("token", "send_start", "enabled"),
) -> JobPolicy | None:
    """The policy of a helper that takes ``token``, ``send_start`` and ``**options``
    (``callbacks(...)``, ``hooks(...)``), or None when it monitors nothing: ``enabled=False``
    in ``options``, or a name not in ``valid`` (a misspelt option). The latter is the one
    ERROR line of a setting that cannot be used, naming ``where`` and the closest valid name;
    it is never raised: a misspelt option must not stop the DAG or flow that passes it, nor
    monitor it on a guess."""
    if not known_options(options, valid, where):
        return None
    if options.get("enabled", True) is False:
        return None
    return JobPolicy(token=token, send_start=send_start)
