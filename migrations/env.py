"""Alembic environment for the Distillery run store.

Two ways in:
- the app (``core.store.Store``) runs ``upgrade head`` programmatically and hands over its
  own open connection in ``config.attributes["connection"]``, so the migration uses the
  same engine set-up (SQLite pragmas, write lock) as everything else;
- a developer runs the ``alembic`` command with ``-c migrations/alembic.ini``; then the
  URL comes from ``DISTILLERY_DB_URL`` (or the default SQLite file), as in the app.
"""

from __future__ import annotations

import logging.config

from alembic import context
from sqlalchemy.engine import Connection

from core.db import Base

config = context.config
target_metadata = Base.metadata

# Only the command line configures logging; the app keeps its own logging set-up.
if config.attributes.get("connection") is None and config.config_file_name is not None:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode recreates the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    from core.engine import database_url

    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=database_url().startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return

    from core.engine import database_url, make_engine, migration_connection

    engine = make_engine(database_url())
    try:
        with migration_connection(engine) as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
