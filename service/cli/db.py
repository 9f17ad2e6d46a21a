"""`rolegate db upgrade|current|check`: the policy store's schema migrations (Alembic)."""

from __future__ import annotations

import click

from ..config import Settings
from ..store.db import make_engine
from ..store.schema import SchemaError, schema_differences, schema_state, upgrade


def _engine():
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
def current_command() -> None:
    """Show the database's schema version and the one this Rolegate needs."""
    engine = _engine()
    try:
        state = schema_state(engine)
    finally:
        engine.dispose()
    click.echo(f"database: {state.current or 'none'}")
    click.echo(f"this release: {state.head}")
    click.echo(f"status: {'up to date' if state.up_to_date else state.problem()}")


@db.command("check")
def check_command() -> None:
    """Exit 0 when the schema is this release's and matches the declared tables; else 2."""
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
