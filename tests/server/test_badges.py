"""Badges: ``/badge/{key}.svg`` and ``.json`` with the tracker's state, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from telemhq_server.badges import BADGE_COLOURS, badge_json, badge_svg

from tests.live_server import LiveServer


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer() as live:
        yield live


def test_it_serves_the_state_as_svg_and_json(server: LiveServer) -> None:
    tracker = server.create_tracker(name="nightly", assertions=["errors = 0"])
    svg_url = tracker["badge_url"]
    assert svg_url.endswith(".svg")
    assert tracker["token"] not in svg_url  # the badge key is not the ping token
    new = httpx.get(svg_url)
    assert new.status_code == 200
    assert new.headers["content-type"] == "image/svg+xml"
    assert 'aria-label="nightly: new"' in new.text
    server.ping(tracker, {"errors": 3})
    failing = httpx.get(svg_url.removesuffix(".svg") + ".json")
    assert failing.status_code == 200
    assert failing.json() == {
        "schemaVersion": 1,
        "label": "nightly",
        "message": "failing",
        "color": BADGE_COLOURS["failing"],
        "state": "failing",
    }
    server.ping(tracker, {"errors": 0})
    assert "nightly: up" in httpx.get(svg_url).text
    assert "max-age=30" in httpx.get(svg_url).headers["cache-control"]
    assert httpx.get(svg_url, params={"label": "etl"}).text.count("etl: up") == 2


def test_it_answers_404_for_unknown_keys_and_formats(server: LiveServer) -> None:
    tracker = server.create_tracker(name="other")
    key = tracker["badge_url"].rsplit("/", 1)[1].removesuffix(".svg")
    assert httpx.get(f"{server.base_url}/badge/nope.svg").status_code == 404
    assert httpx.get(f"{server.base_url}/badge/{key}.png").status_code == 404
    assert httpx.get(f"{server.base_url}/badge/{key}").status_code == 404
    # No sign-in needed: badges are for public READMEs.
    assert httpx.get(f"{server.base_url}/badge/{key}.json").status_code == 200


def test_it_escapes_the_label() -> None:
    svg = badge_svg("<b>x</b>", "down")
    assert "<b>" not in svg
    assert "&lt;b&gt;x&lt;/b&gt;" in svg
    assert BADGE_COLOURS["down"] in svg
    assert badge_json("x", "weird")["color"] == "#9e9e9e"
