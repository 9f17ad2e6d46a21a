"""Schema versions of the policy store: Alembic migrations, the start-up check, auto-creation.

    state = schema_state(engine)        # where the database stands
    upgrade(engine)                     # `rolegate db upgrade`
    ensure_schema(engine)               # at start: create an empty database, refuse the rest

Policy: an EMPTY database (none of Rolegate's tables) is migrated to the current version at start
(so the embedded SQLite default and a fresh PostgreSQL database need no setup step); a database
with Rolegate tables must already be at this release's version: older ones (or tables created
without migrations) are refused with "run `rolegate db upgrade`", newer ones with "upgrade
Rolegate". Migrations run under a lock (PostgreSQL advisory lock, SQLite `BEGIN IMMEDIATE`), so
many workers and instances starting together create the schema once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from ..errors import ConfigError, StoreUnavailable
from .db import WRITE_TRANSACTION, is_postgresql, metadata

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"
MIGRATION_LOCK_KEY = 0x526F6C65  # "Role": pg_advisory_xact_lock key of schema changes


class _QuietContextLines(logging.Filter):
    """Alembic logs two lines per inspected connection; we inspect at every start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Context impl", "Will assume"))


logging.getLogger("alembic.runtime.migration").addFilter(_QuietContextLines())


class SchemaError(ConfigError):
    """The database schema is not the one this Rolegate release works with."""

    code = "schema_mismatch"


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands relative to this release's migrations."""

    current: str | None  # version recorded in the database (None: not migrated)
    head: str  # version this release needs
    empty: bool  # none of Rolegate's tables exist
    known: bool  # `current` is one of this release's versions

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head and not self.empty

    def problem(self) -> str | None:
        """Why Rolegate must not run against this database (None when it may)."""
        if self.up_to_date:
            return None
        if self.empty:
            return "the database has no Rolegate tables yet: run `rolegate db upgrade`"
        if self.current is None:
            return (
                "the database has Rolegate tables but no migration version (created by an older "
                "Rolegate or another tool): run `rolegate db upgrade` to adopt them"
            )
        if not self.known:
            return (
                f"the database schema is at version {self.current}, newer than this Rolegate "
                f"(which knows up to {self.head}): upgrade Rolegate, or check "
                "ROLEGATE_DATABASE_URL points at the right database"
            )
        return (
            f"the database schema is at version {self.current}; this Rolegate needs {self.head}: "
            "run `rolegate db upgrade`"
        )


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic config over the migrations shipped in the package (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None, "no migrations shipped"
    return head


def declared_metadata() -> sa.MetaData:
    """Every table Rolegate declares (all on `rolegate.store.db.metadata`)."""
    return metadata


def _state(connection: sa.Connection) -> SchemaState:
    tables = set(sa.inspect(connection).get_table_names())
    ours = {"casbin_rule", "policy_state", "change_log"}
    current = MigrationContext.configure(connection).get_current_revision()
    known = current is None or _is_known(current)
    return SchemaState(current, head_revision(), empty=not (tables & ours), known=known)


def _is_known(revision: str) -> bool:
    try:
        return script_directory().get_revision(revision) is not None
    except Exception:  # alembic raises several types for unknown or malformed ids
        return False


@contextmanager
def _connection(engine: sa.Engine, *, locked: bool) -> Iterator[sa.Connection]:
    """A connection in a transaction; `locked`: holding the schema migration lock."""
    try:
        with engine.connect() as connection:
            if locked and not is_postgresql(engine):
                connection.execution_options(**{WRITE_TRANSACTION: True})
            with connection.begin():
                if locked and is_postgresql(engine):
                    connection.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                    )
                yield connection
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise StoreUnavailable(f"policy store unreachable: {reason}") from exc


def schema_state(engine: sa.Engine) -> SchemaState:
    with _connection(engine, locked=False) as connection:
        return _state(connection)


def upgrade(engine: sa.Engine, revision: str = "head") -> tuple[SchemaState, SchemaState]:
    """Migrate to `revision` under the migration lock; returns the states before and after.

    Tables created before migrations existed are adopted when they are exactly version 0001's
    (`casbin_rule` alone, as `sqlalchemy_adapter` creates it, is also adopted).
    """
    with _connection(engine, locked=True) as connection:
        before = _state(connection)
        if not before.known:
            raise SchemaError(before.problem() or "unknown schema version")
        if before.current is None and not before.empty:
            _adopt_unversioned(connection)
        command.upgrade(alembic_config(connection), revision)
        after = _state(connection)
    return before, after


def _adopt_unversioned(connection: sa.Connection) -> None:
    """Stamp 0001 on a database whose policy tables predate migrations (else refuse)."""
    tables = set(sa.inspect(connection).get_table_names())
    if tables >= {"casbin_rule", "policy_state", "change_log"}:
        command.stamp(alembic_config(connection), "0001")
    elif tables & {"policy_state", "change_log"}:
        raise SchemaError(
            f"the database holds some Rolegate tables ({', '.join(sorted(tables))}) but no "
            "migration version: restore it from a backup or migrate it by hand"
        )
    # casbin_rule alone (sqlalchemy_adapter): migration 0001 adopts it.


def ensure_schema(engine: sa.Engine) -> SchemaState:
    """Start-up check: create an empty database, accept the current version, refuse the rest."""
    state = schema_state(engine)
    if state.up_to_date:
        return state
    if state.empty:
        with _connection(engine, locked=True) as connection:
            state = _state(connection)  # another process may have created it meanwhile
            if state.empty:
                if state.current is not None:  # tables dropped but the version row kept
                    connection.execute(sa.text("DELETE FROM alembic_version"))
                command.upgrade(alembic_config(connection), "head")
                state = _state(connection)
    problem = state.problem()
    if problem is not None:
        raise SchemaError(f"{_describe(engine)}: {problem}")
    return state


def init_schema(engine: sa.Engine) -> None:
    """Make sure the schema is this release's: an empty database is migrated to the current
    version; a database with older, unversioned or newer tables raises `SchemaError`."""
    ensure_schema(engine)


def schema_differences(engine: sa.Engine) -> list[str]:
    """Differences between the database and the tables declared on `metadata` (empty: none)."""
    from alembic.autogenerate import compare_metadata

    with _connection(engine, locked=False) as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diffs = compare_metadata(context, declared_metadata())
    return [_format_diff(diff) for diff in diffs]


def _format_diff(diff: Any) -> str:
    if isinstance(diff, list):  # column modifications come grouped
        return "; ".join(_format_diff(item) for item in diff)
    kind, *rest = diff
    names = [getattr(item, "name", None) or str(item) for item in rest if item is not None]
    return f"{kind}: {', '.join(map(str, names[:3]))}"


def _describe(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
