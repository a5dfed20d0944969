"""Fixtures of the security tests: the server tests' databases (SQLite and PostgreSQL) and the
in-process app."""

from tests.server.conftest import app, client, db_url, engine, settings

__all__ = ["app", "client", "db_url", "engine", "settings"]
