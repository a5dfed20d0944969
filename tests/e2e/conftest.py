"""End-to-end tests: the real ``telemhq-server`` in a subprocess, real clients over loopback."""

from tests.live_server import live_server

__all__ = ["live_server"]
