"""Fixtures shared by every part's tests: the test kit (``tests/kit.py``, loaded as a plugin)
and the machine's services, required in CI.

PostgreSQL (127.0.0.1:5432, trust auth, database ``test``) and Redis (127.0.0.1:6379) run on
the developers' machines and in CI. Where one is missing, its tests skip with the reason;
with ``TELEMHQ_REQUIRE_SERVICES=1`` (CI) they fail instead, so nothing is skipped silently
(programs a test needs, such as curl or a browser, follow the same rule: ``require_tool``).
"""

from __future__ import annotations

import os
import socket

import pytest
from hypothesis import settings

# The test kit's fixtures (``live_server``, ``ping_key``, ``client`` ...) for every suite; as a
# plugin, its asserts are rewritten like a test's.
pytest_plugins = ["tests.kit"]

# CI (``CI=true``) replays the same examples on every run: a property test that found nothing
# yesterday cannot fail a build today on a newly drawn example. Developers' runs draw new ones
# (and keep the failures Hypothesis finds in its local example database).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI", "").lower() in {"1", "true"}:
    settings.load_profile("ci")

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, with TELEMHQ_REQUIRE_SERVICES=1, fail) unless host:port accepts TCP."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        from tests.kit import unavailable  # imported by pytest as a plugin, not from here first

        unavailable(f"{name} is not reachable at {host}:{port} ({exc})")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL of the machine's PostgreSQL ``test`` database."""
    require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    return f"postgresql+psycopg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/test"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Base URL of the machine's Redis (pick a database number per test run)."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}"
