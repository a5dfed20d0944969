"""Hypothesis drives the real server from its own OpenAPI document (every documented
operation, valid and hostile parameters and bodies, with the admin key), on SQLite and
PostgreSQL: no answer is a 5xx, every status is one the document lists for the operation, and
every JSON answer fits the schema the document gives for it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.live_server import LiveServer
from tests.security.openapi_fuzz import hostile_json, problems, value_for

pytestmark = pytest.mark.slow

EXAMPLES = 400
#: A ping's known fields with values of any JSON type.
ping_fields = st.dictionaries(
    st.sampled_from(
        ["status", "duration", "ping_id", "run_id", "job", "orchestrator", "tags", "n"]
    ),
    hostile_json,
    max_size=5,
)


@pytest.fixture
def server(db_url: str) -> Iterator[LiveServer]:
    with LiveServer(db_url) as live:
        yield live


def _param_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _segment(value: str) -> str:
    """``value`` as one path segment, as a client sends it: percent-encoded, and never a dot
    segment (``.`` or ``..``), which a client resolves away before sending (``/keys/.`` would
    become ``/keys``, another operation)."""
    quoted = quote(value, safe="") or "x"
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def test_the_server_keeps_to_its_openapi_document(server: LiveServer) -> None:
    doc = server.client.get("/api/v1/openapi.json").json()
    tracker = server.create_tracker(name="fuzz", slug="fuzz", assertions=["n > 0"])
    ping_key = server.api("POST", "/ping-keys", json={"name": "fuzz"}).json()["key"]
    hook = server.api("POST", "/webhooks", json={"url": "http://127.0.0.1:9/fuzz"}).json()
    protected = max(k["id"] for k in server.api("GET", "/keys").json()["items"])
    operations = sorted(
        (path, method)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if isinstance(op, dict) and "responses" in op
    )
    text = st.text(
        alphabet=st.characters(exclude_characters="/", exclude_categories=("Cs",)), max_size=20
    )
    path_values: dict[str, st.SearchStrategy[Any]] = {
        "token": st.one_of(st.just(tracker["token"]), text),
        "tracker": st.one_of(st.sampled_from([str(tracker["id"]), "fuzz"]), text),
        # never the admin key the test signs in with
        "key_id": st.one_of(st.integers(min_value=protected + 1), text),
        "ping_key": st.one_of(st.just(ping_key), text),
        "webhook_id": st.one_of(st.just(hook["id"]), st.integers(), text),
        "slug": st.one_of(st.from_regex(r"[a-z0-9]{1,8}(-[a-z0-9]{1,8})?", fullmatch=True), text),
    }
    seen: dict[tuple[str, str], set[int]] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def one_request(data: st.DataObject) -> None:
        path, method = data.draw(st.sampled_from(operations), label="operation")
        op = doc["paths"][path][method]
        url = path
        for name, values in path_values.items():
            if "{" + name + "}" in url:
                value = _param_text(data.draw(values, label=name))
                url = url.replace("{" + name + "}", _segment(value))
        params = {}
        for param in op.get("parameters", []):
            if param["in"] == "query" and data.draw(st.booleans(), label=f"with {param['name']}"):
                value = data.draw(value_for(param["schema"], doc), label=param["name"])
                params[param["name"]] = _param_text(value)
        content: bytes | None = None
        if "requestBody" in op:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            drawn = [value_for(schema, doc), hostile_json]
            if path.startswith("/ping/") and path != "/ping/_batch":
                drawn.append(ping_fields)  # the fields the server reads, of any type
            body = data.draw(st.one_of(*drawn), label="body")
            content = json.dumps(body).encode()
        try:
            answer = server.client.request(
                method.upper(),
                url,
                params=params,
                content=content,
                headers={**server.headers, "Content-Type": "application/json"},
            )
        except httpx.InvalidURL:
            return  # not a request a client can send
        where = f"{method.upper()} {url} {params} {content!r:.300}"
        assert answer.status_code < 500, f"{where} -> {answer.status_code}: {answer.text[:300]}"
        documented = op["responses"]
        assert str(answer.status_code) in documented, (
            f"{where} -> undocumented {answer.status_code}: {answer.text[:300]}"
        )
        schema = (
            documented[str(answer.status_code)]
            .get("content", {})
            .get("application/json", {})
            .get("schema")
        )
        if schema is not None:
            broken = problems(answer.json(), schema, doc)
            assert not broken, f"{where} -> {answer.status_code} breaks the document: {broken}"
        seen.setdefault((path, method), set()).add(answer.status_code)

    one_request()
    # Every operation was tried, and the server was healthy throughout.
    assert set(seen) == set(operations), set(operations) - set(seen)
    assert server.client.get("/healthz").status_code == 200
