"""What a channel or a silence is made of, checked: durations (``30s``, ``15m``, ``1h``,
``2d``), selectors (tags, orchestrator, name glob, tracker) and the channel's policy fields.

Validation raises :class:`telemhq_server.trackers.ValidationError` (the API answers 422).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Any, Final

from telemhq_server.trackers import ValidationError

__all__ = [
    "CHANNEL_EVENTS",
    "DEFAULT_CHANNEL_EVENTS",
    "format_duration",
    "matches",
    "parse_duration",
    "validate_selector",
]

CHANNEL_EVENTS: Final = ("failing", "late", "down", "recovered")
#: As for webhooks: ``late`` is opt-in (a job pinging at its end is briefly late by design).
DEFAULT_CHANNEL_EVENTS: Final = ("failing", "down", "recovered")

_DURATION = re.compile(r"^\s*(\d{1,9})\s*([smhd])\s*$")
_UNIT: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: Longest duration accepted (a year): beyond it a silence or a delay is a mistake.
MAX_SECONDS: Final = 366 * 86400


def parse_duration(value: Any, field: str, *, minimum: int = 1) -> int:
    """Seconds of ``30s``/``15m``/``1h``/``2d`` (an integer is seconds); at least ``minimum``."""
    if isinstance(value, bool):
        raise ValidationError(field, f"must be a duration like 30s, 15m, 1h or 2d, got {value!r}")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = int(m.group(1)) * _UNIT[m.group(2)]
    else:
        raise ValidationError(field, f"must be a duration like 30s, 15m, 1h or 2d, got {value!r}")
    if not minimum <= seconds <= MAX_SECONDS:
        raise ValidationError(field, f"must be from {minimum} s to 366d, got {value!r}")
    return seconds


def format_duration(seconds: int | None) -> str | None:
    """The shortest ``30s``/``15m``/``1h``/``2d`` spelling of ``seconds``."""
    if seconds is None:
        return None
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNIT[unit] == 0:
            return f"{seconds // _UNIT[unit]}{unit}"
    return f"{seconds}s"


def validate_selector(value: Any, field: str = "selector") -> dict[str, Any]:
    """A selector: ``{"tags": [...], "orchestrator": str, "name": glob, "tracker": id}``, every
    key optional (empty: every tracker)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(field, "must be an object with tags, orchestrator, name, tracker")
    unknown = sorted(set(value) - {"tags", "orchestrator", "name", "tracker"})
    if unknown:
        raise ValidationError(
            f"{field}.{unknown[0]}", "unknown; known: tags, orchestrator, name, tracker"
        )
    out: dict[str, Any] = {}
    tags = value.get("tags")
    if tags is not None:
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise ValidationError(f"{field}.tags", "must be a list of non-empty strings")
        out["tags"] = list(dict.fromkeys(tags))
    for key in ("orchestrator", "name"):
        text = value.get(key)
        if text is not None:
            if not isinstance(text, str) or not 1 <= len(text) <= 200:
                raise ValidationError(f"{field}.{key}", "must be a string of 1 to 200 characters")
            out[key] = text
    tracker = value.get("tracker")
    if tracker is not None:
        if isinstance(tracker, bool) or not isinstance(tracker, int) or not 1 <= tracker < 2**63:
            raise ValidationError(f"{field}.tracker", "must be a tracker id")
        out["tracker"] = tracker
    return out


def matches(
    selector: Mapping[Any, Any], tracker: Mapping[Any, Any], orchestrator: str | None
) -> bool:
    """Does ``selector`` take ``tracker`` (a trackers row; ``orchestrator``: what its runs say)?
    Every given key must match: all the tags, the orchestrator, the name glob (on the name or
    the slug), the tracker id."""
    if "tracker" in selector and selector["tracker"] != tracker["id"]:
        return False
    tags = selector.get("tags")
    if tags and not set(tags) <= set(tracker["tags"] or ()):
        return False
    wanted = selector.get("orchestrator")
    if wanted is not None and (orchestrator or "").lower() != wanted.lower():
        return False
    glob = selector.get("name")
    return glob is None or any(fnmatch.fnmatchcase(str(tracker[k]), glob) for k in ("name", "slug"))
