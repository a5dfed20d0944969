"""The management API's endpoint machinery, for every module that serves ``/api/v1`` routes.

A handler is a plain blocking function ``handler(ctx: Ctx) -> Response`` run in a worker
thread; :func:`api_route` wraps it into a Starlette route that refuses an oversized body,
checks the ``Authorization: Bearer <key>`` header against the route's scope (``read`` keys may
only read; ``write`` keys may do everything), reads the JSON body and answers
:class:`ApiError` and ``trackers.ValidationError`` as JSON errors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from telemhq_server.bodies import (
    MAX_API_BODY,
    BodyTooLarge,
    declared_too_large,
    holds_nul,
    read_body,
)
from telemhq_server.db import as_id
from telemhq_server.keys import ApiKey, verify_api_key
from telemhq_server.trackers import ValidationError

if TYPE_CHECKING:
    from telemhq_server.host import TelemHQ

__all__ = [
    "API_PREFIX",
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "ApiError",
    "Ctx",
    "Handler",
    "KeyScope",
    "api_route",
    "endpoint",
    "page",
]

logger = logging.getLogger("telemhq_server.api")

API_PREFIX: Final = "/api/v1"
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500

#: What a route needs of the key: ``read`` (GET) or ``write`` (everything).
KeyScope = Literal["read", "write"]


class ApiError(Exception):
    """An error answer: ``status`` with ``{"error": message, **extra}``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **extra}


@dataclass(slots=True)
class Ctx:
    """What a handler gets: the app, the request's path/query params, its JSON body, the key."""

    app: TelemHQ
    request: Request
    body: Any
    key: ApiKey

    @property
    def base_url(self) -> str:
        return self.app.public_url(self.request)

    def path_int(self, name: str) -> int:
        raw = self.request.path_params[name]
        value = as_id(raw)
        if value is None:
            raise ApiError(404, f"no such {name.removesuffix('_id')}: {raw!r}")
        return value

    def limit(self) -> int:
        raw = self.request.query_params.get("limit", str(DEFAULT_LIMIT))
        value = as_id(raw)
        if value is None or not 1 <= value <= MAX_LIMIT:
            raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
        return value

    def cursor(self) -> int | None:
        raw = self.request.query_params.get("cursor")
        if raw is None or raw == "":
            return None
        value = as_id(raw)
        if value is None:
            raise ApiError(400, "cursor must be the 'next' value of a previous page")
        return value


Handler = Callable[[Ctx], Response]


def endpoint(handler: Handler, scope: KeyScope) -> Callable[[Request], Any]:
    """The Starlette endpoint running ``handler`` for requests whose key has ``scope``."""

    async def run(request: Request) -> Response:
        app: TelemHQ = request.app.state.telemhq
        reads_body = request.method in ("POST", "PATCH", "PUT")
        if "\x00" in request.scope["path"] or "\x00" in request.url.query:
            # PostgreSQL cannot compare with NUL; both databases refuse it alike.
            return JSONResponse({"error": "NUL is not allowed in the URL"}, 400)
        if any("\x00" in value for value in request.query_params.values()):
            return JSONResponse({"error": "NUL is not allowed in the URL"}, 400)
        try:
            # The cheap refusals first: a declared oversized body, then the key; only an
            # authorised request has its body read (within the limit).
            if reads_body and declared_too_large(request, MAX_API_BODY):
                raise BodyTooLarge(MAX_API_BODY)
            key = await run_in_threadpool(_authorise, app, request, scope)
            body: Any = None
            if reads_body:
                raw = await read_body(request, MAX_API_BODY)
                if raw.strip():
                    try:
                        body = json.loads(raw)
                    except (ValueError, UnicodeDecodeError) as exc:
                        return JSONResponse({"error": f"body is not valid JSON: {exc}"}, 400)
                    if holds_nul(raw, body):
                        return JSONResponse({"error": "strings must not hold NUL (\\u0000)"}, 400)
            return await run_in_threadpool(handler, Ctx(app, request, body, key))
        except BodyTooLarge as exc:
            return JSONResponse({"error": str(exc)}, 413)
        except ApiError as exc:
            return JSONResponse(exc.body, exc.status)
        except ValidationError as exc:
            return JSONResponse(exc.to_json(), 422)
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError):
            logger.warning("database unavailable for %s %s", request.method, request.url.path)
            return JSONResponse({"error": "database unavailable; retry"}, 503)

    return run


def api_route(path: str, handler: Handler, method: str, scope: KeyScope) -> Route:
    """``method API_PREFIX + path`` served by ``handler`` (see :func:`endpoint`)."""
    return Route(API_PREFIX + path, endpoint(handler, scope), methods=[method])


def page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """A list answer: the first ``limit`` of ``items`` (fetch one more to know whether there
    is a next page) and the cursor of the next page, if any."""
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next": str(items[-1]["id"]) if more and items else None}


def _authorise(app: TelemHQ, request: Request, scope: KeyScope) -> ApiKey:
    key = _authenticate(app, request)
    if scope == "write" and key.scope != "write":
        raise ApiError(403, "this API key is read-only; this action needs a read-write key")
    return key


def _authenticate(app: TelemHQ, request: Request) -> ApiKey:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, "missing API key: send the header 'Authorization: Bearer <key>'")
    key = verify_api_key(app.engine, value.strip())
    if key is None:
        raise ApiError(401, "invalid API key")
    return key
