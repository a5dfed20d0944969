"""The dashboard: server-rendered HTML pages and SVG charts, served by the server process.

``/dashboard/`` lists the trackers grouped by orchestrator and DAG / flow / job / module,
problems first, with why each failed (:mod:`.overview`, :mod:`.grouping`), filtered by query
parameters; ``/dashboard/trackers/{id}`` shows one (config, charts of duration and of every
numeric payload metric, runs with their errors, state changes);
``/dashboard/trackers/{id}/runs/{run}`` shows a run: its error, assertion results, metrics, the
orchestrator's details and a link to the run in the orchestrator's UI (:mod:`.runinfo`). Sign-in
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
