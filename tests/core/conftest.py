"""Fixtures of the core tests."""

from tests.core.recording import recorder

__all__ = ["recorder"]
