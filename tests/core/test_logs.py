"""What the integration's logs and CLI output may show of a ping URL."""

from __future__ import annotations

import pytest

from telemhq_plugins.core.logs import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://telemhq.com/ping/default-token-1234", "https://telemhq.com/ping/defa..."),
        # a ping key's job slug is no secret: it says which job
        (
            "http://127.0.0.1:8000/ping/pk_0123456789/etl-load",
            "http://127.0.0.1:8000/ping/pk_0.../etl-load",
        ),
        # a server under a path prefix
        ("https://example.com/telemhq/ping/abcdefgh", "https://example.com/telemhq/ping/abcd..."),
        ("https://user:secret@example.com/ping/abcdefgh", "https://example.com/ping/abcd..."),
        (
            "https://example.com/ping/abcdefgh?token=xyz&x=1#frag",
            "https://example.com/ping/abcd...?token=...&x=...",
        ),
        ("https://example.com/api/v1/trackers", "https://example.com/api/v1/trackers"),
        ("https://example.com/ping/", "https://example.com/ping/"),
        ("bare-token-abcdef", "bare..."),
        ("http://[::1/ping/abcdefgh", "http://..."),
    ],
)
def test_a_url_is_shown_without_its_secrets(url: str, shown: str) -> None:
    assert redact_url(url) == shown
