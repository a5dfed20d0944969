"""Status badges for READMEs: ``/badge/{badge_key}.svg`` and ``/badge/{badge_key}.json``.

The key is the tracker's ``badge_key`` (random, not the ping token: a badge URL is public and
must not allow pinging). The JSON form follows the shields.io "endpoint" schema, so
``https://img.shields.io/endpoint?url=<server>/badge/<key>.json`` works too.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from telemhq_server import db

if TYPE_CHECKING:
    from telemhq_server.host import TelemHQ

__all__ = ["BADGE_COLOURS", "badge", "badge_json", "badge_svg", "register"]

#: State -> colour, shared with the dashboard's state pills.
BADGE_COLOURS: Final[dict[str, str]] = {
    "up": "#2e7d32",
    "new": "#607d8b",
    "late": "#f9a825",
    "failing": "#c62828",
    "down": "#b71c1c",
    "paused": "#757575",
}
_UNKNOWN: Final = "#9e9e9e"


def _text_width(text: str) -> int:
    """Approximate width in px of ``text`` in 11px Verdana (no font metrics needed)."""
    return 10 + sum(7 if ch.isupper() or ch in "mwMW" else 6 for ch in text)


def badge_svg(label: str, state: str) -> str:
    """A flat two-part badge: ``label | state`` with the state's colour."""
    colour = BADGE_COLOURS.get(state, _UNKNOWN)
    lw, rw = _text_width(label), _text_width(state)
    total = lw + rw
    el, es = escape(label), escape(state)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{el}: {es}"><title>{el}: {es}</title>'
        f'<rect width="{lw}" height="20" fill="#555"/>'
        f'<rect x="{lw}" width="{rw}" height="20" fill="{colour}"/>'
        '<g fill="#fff" text-anchor="middle" '
        'font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{lw / 2:.1f}" y="14">{el}</text>'
        f'<text x="{lw + rw / 2:.1f}" y="14">{es}</text></g></svg>'
    )


def badge_json(label: str, state: str) -> dict[str, Any]:
    """The shields.io endpoint document for a tracker state (plus ``state`` for scripts)."""
    return {
        "schemaVersion": 1,
        "label": label,
        "message": state,
        "color": BADGE_COLOURS.get(state, _UNKNOWN),
        "state": state,
    }


async def badge(request: Request) -> Response:
    """``GET /badge/{key}.svg`` / ``.json``: the tracker's state; 404 for an unknown key."""
    name = request.path_params["name"]
    key, dot, ext = name.rpartition(".")
    if not dot or ext not in ("svg", "json"):
        return PlainTextResponse("badge URLs end in .svg or .json", 404)
    app: TelemHQ = request.app.state.telemhq
    t = db.trackers
    with_label = request.query_params.get("label")

    def lookup() -> tuple[str, str] | None:
        with app.engine.connect() as conn:
            row = conn.execute(sa.select(t.c.name, t.c.state).where(t.c.badge_key == key)).first()
        return None if row is None else (row.name, row.state)

    found = await run_in_threadpool(lookup)
    if found is None:
        return PlainTextResponse("no tracker has this badge key", 404)
    label = (with_label or found[0])[:60]
    # Short cache: READMEs proxied by GitHub's camo re-fetch; a badge must not lie for long.
    headers = {"Cache-Control": "max-age=30, must-revalidate"}
    if ext == "json":
        return JSONResponse(badge_json(label, found[1]), headers=headers)
    return Response(badge_svg(label, found[1]), media_type="image/svg+xml", headers=headers)


def register(app: TelemHQ) -> None:
    app.add_routes([Route("/badge/{name}", badge, methods=["GET", "HEAD"])])
