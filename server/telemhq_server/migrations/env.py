"""Alembic environment: runs on the connection handed over by ``telemhq_server.db.migrate``,
or on ``TELEMHQ_DATABASE_URL`` when run through the ``alembic`` command."""

from __future__ import annotations

from alembic import context

from telemhq_server.config import load_settings
from telemhq_server.db import make_engine, metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the alembic command line
    engine = make_engine(load_settings().database_url)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()
else:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
