"""The dashboard: server-rendered HTML pages and SVG charts, served by the server process.

``/dashboard/`` lists the trackers; ``/dashboard/trackers/{id}`` shows one (config, charts of
duration and of every numeric payload metric, runs, state changes);
``/dashboard/trackers/{id}/runs/{run}`` shows a run's payload and assertion results. Sign-in
is with an API key (see :mod:`.auth`); ``--public-dashboard`` turns it off for local use.
No JavaScript and nothing loaded from elsewhere: it works offline and in a text browser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from telemhq_server.host import TelemHQ

__all__ = ["register"]


async def _root(_request: Request) -> Response:
    return RedirectResponse("/dashboard/", 307)


def register(app: TelemHQ) -> None:
    """Add the dashboard routes (and ``/`` -> ``/dashboard/``) to the server."""
    from telemhq_server.dashboard.views import routes

    app.add_routes([Route("/", _root, methods=["GET", "HEAD"]), *routes()])
