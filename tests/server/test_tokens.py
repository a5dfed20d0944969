"""Tokens in URLs and on command lines."""

from __future__ import annotations

from telemhq_server.tokens import url_token
from telemhq_server.trackers import new_token


def test_it_never_starts_a_token_with_a_dash() -> None:
    # One-byte tokens start with "-" once in 64 draws: 5,000 draws exercise the redraw.
    short = [url_token(1) for _ in range(5_000)]
    assert not [t for t in short if t.startswith("-")]
    assert len({t[0] for t in short}) == 63  # every other first character still occurs


def test_it_keeps_tracker_tokens_long_and_url_safe() -> None:
    tokens = {new_token() for _ in range(1_000)}
    assert len(tokens) == 1_000
    assert all(len(t) == 32 and not t.startswith("-") for t in tokens)
    assert all(c.isalnum() or c in "-_" for t in tokens for c in t)
