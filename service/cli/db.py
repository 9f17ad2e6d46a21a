"""`rolegate db upgrade|current|check`: the policy store's schema migrations (Alembic)."""

from __future__ import annotations

import click
import sqlalchemy as sa

from ..config import Settings
from ..store.db import make_engine
from ..store.schema import (
    SchemaError,
    head_revision,
    schema_differences,
    schema_state,
    upgrade,
)
from .common import missing_store_problem
from .output import emit, format_option


def _engine() -> sa.Engine:
    return make_engine(Settings.from_env().database_url)


@click.group()
def db() -> None:
    """Database schema of ROLEGATE_DATABASE_URL: migrate and check."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target migration.")
def upgrade_command(revision: str) -> None:
    """Apply the pending migrations (safe to run from several hosts at once)."""
    engine = _engine()
    try:
        before, after = upgrade(engine, revision)
    finally:
        engine.dispose()
    if before.current == after.current and not before.empty:
        click.echo(f"schema already at {after.current}")
    else:
        click.echo(f"schema upgraded from {before.current or 'nothing'} to {after.current}")


@db.command("current")
@format_option()
def current_command(output: str) -> None:
    """Show the database's schema version and the one this Rolegate needs."""
    missing = missing_store_problem(Settings.from_env())
    current: str | None
    status: str | None
    if missing is not None:  # report it without creating the file
        current, head, status = None, head_revision(), missing
    else:
        engine = _engine()
        try:
            state = schema_state(engine)
        finally:
            engine.dispose()
        current, head = state.current, state.head
        status = "up to date" if state.up_to_date else state.problem()
    if output != "table":
        emit({"database": current, "release": head, "status": status}, output)
        return
    click.echo(f"database: {current or 'none'}")
    click.echo(f"this release: {head}")
    click.echo(f"status: {status}")


@db.command("check")
def check_command() -> None:
    """Exit 0 when the schema is this release's and matches the declared tables; else 2."""
    missing = missing_store_problem(Settings.from_env())
    if missing is not None:
        raise SchemaError(f"{missing}; or `rolegate db upgrade` to create an empty store")
    engine = _engine()
    try:
        state = schema_state(engine)
        problem = state.problem()
        if problem is not None:
            raise SchemaError(problem)
        differences = schema_differences(engine)
    finally:
        engine.dispose()
    if differences:
        raise SchemaError(
            "the database differs from the declared tables: " + "; ".join(differences)
        )
    click.echo(f"schema ok at {state.current}")


COMMANDS = (db,)
