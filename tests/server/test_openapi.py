"""The OpenAPI document describes the whole management API the server serves."""

from __future__ import annotations

from starlette.routing import Route
from telemhq_server.host import TelemHQ

from tests.server.helpers import AppClient


def test_every_api_route_the_app_serves_is_in_its_openapi_document(
    app: TelemHQ, client: AppClient
) -> None:
    doc = client.get("/api/v1/openapi.json", headers={"Authorization": ""}).json()
    documented = {
        (path, method.upper())
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
        if isinstance(operation, dict) and "responses" in operation
    }
    served = {
        (route.path, method)
        for route in app.starlette.routes
        if isinstance(route, Route) and route.path.startswith("/api/v1/")
        for method in route.methods or ()
        if method != "HEAD"  # Starlette answers HEAD wherever it answers GET
    }
    assert {p for p, _ in served} >= {"/api/v1/trackers", "/api/v1/webhooks"}
    assert served - documented == set()
    # ...and the document promises nothing under /api/v1 that is not served.
    assert {(p, m) for p, m in documented if p.startswith("/api/v1/")} == served
