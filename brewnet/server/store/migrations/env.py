"""Alembic's environment for brewnet's store.

brewnet runs migrations itself (``Database.migrate()``), handing its own connection over in
``config.attributes["connection"]`` so SQLite's PRAGMAs and the migration's single transaction are
the Database's.  The plain ``alembic`` command works too: it opens a Database on sqlalchemy.url.
Logging is left alone on purpose (``fileConfig`` would reconfigure the server's loggers).
"""
from __future__ import annotations

from alembic import context

from brewnet.server.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure_and_run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things: future migrations copy the table ("batch" mode)
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """``alembic upgrade --sql``: print the SQL instead of running it."""
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    from brewnet.server.store.db import Database

    db = Database(config.get_main_option("sqlalchemy.url"))
    try:
        with db.engine.begin() as conn:
            _configure_and_run(conn)
    finally:
        db.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
