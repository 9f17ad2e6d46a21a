"""Alembic environment of the policy store.

Rolegate runs migrations itself (`rolegate db upgrade`, or the automatic creation of an empty
database) and hands Alembic an open connection in `config.attributes["connection"]`, already
inside a transaction that holds the migration lock. Plain `alembic -x url=...` use also works.
"""

from __future__ import annotations

from alembic import context

from rolegate.store.db import make_engine, metadata

config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported: run `rolegate db upgrade`")
run_migrations_online()
