"""Alembic environment: `elue.server.db.migrate` hands over a connection; the `alembic` CLI can use
`-x url=...` (or ELUE_DATABASE_URL) instead."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from elue.server.db import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ["ELUE_DATABASE_URL"]
    engine = create_engine(url)
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
