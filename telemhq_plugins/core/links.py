"""Links to a run in its orchestrator's own UI, from a base URL the process knows and the
run's ids. Pure and never raising: a base that is not an http(s) URL gives no link."""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["ui_base", "ui_link"]


def ui_base(raw: object) -> str | None:
    """``raw`` as a UI's base URL without its trailing ``/``; None unless it is http(s)."""
    if not isinstance(raw, str):
        return None
    base = raw.strip().rstrip("/")
    if not base.startswith(("https://", "http://")):
        return None
    return base


def ui_link(base: str | None, *segments: object) -> str | None:
    """``base`` followed by each segment, quoted whole (a ``/`` in an id stays in its segment);
    None without a base."""
    if base is None:
        return None
    return base + "".join("/" + quote(str(segment), safe="") for segment in segments)
