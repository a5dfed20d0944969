"""Fixtures of the core tests."""

from tests.core.recording import _close_clients, recorder, results

__all__ = ["_close_clients", "recorder", "results"]
