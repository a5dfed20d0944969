"""Server test fixtures: every storage test runs on SQLite AND PostgreSQL.

``db_url`` is parametrised: a SQLite file in ``tmp_path``, or a fresh schema in the machine's
PostgreSQL ``test`` database (``search_path`` set through the URL), dropped afterwards.
``app``/``client`` give the real ASGI app in-process (``AppClient`` runs its lifespan,
so the group-commit writer runs as in production).
"""

from __future__ import annotations

import contextlib
import gc
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from telemhq_server.app import TelemHQ, create_app
from telemhq_server.cli import prepare
from telemhq_server.config import Settings
from telemhq_server.db import make_engine, migrate

from tests.server.helpers import ADMIN_KEY, AppClient


def _pg_schema_url(base: str, schema: str) -> str:
    return f"{base}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """An empty database (not migrated): SQLite file or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/telemhq.db"
        return
    with postgres_schema(request.getfixturevalue("postgres_url")) as url:
        yield url


@contextlib.contextmanager
def postgres_schema(base: str) -> Iterator[str]:
    """The URL of a fresh schema in the PostgreSQL database ``base``, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _pg_schema_url(base, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """The engine of ``db_url``, migrated: for storage tests that run without the app."""
    engine = make_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(db_url: str) -> Settings:
    settings = Settings(database_url=db_url, api_key=ADMIN_KEY, prune_interval=3600)
    prepare(settings)  # migrate + store the admin key, as `serve` does
    return settings


@pytest.fixture
def app(settings: Settings) -> TelemHQ:
    return create_app(settings)


@pytest.fixture
def client(app: TelemHQ) -> Iterator[AppClient]:
    with AppClient(app, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        yield client
    gc.collect()  # surface a leaked connection in the test that leaked it
