"""Engine construction and the policy store schema (SQLAlchemy Core).

Every table Rolegate keeps is declared here, in one place, on `metadata`; the database gets them
through the Alembic migrations in `service/store/migrations/` (tests check the two agree). A new
table or column belongs here and needs a migration.

- `casbin_rule`: the table of `sqlalchemy_adapter` (id, ptype, v0..v5, all `String(255)`),
  so Casbin's own adapter can read and write the same rows, plus `managed_by` (who manages the
  rule: `files` or `api`, with a server default so the adapter's inserts stay valid) and
  indexes for exact-row lookups and for "load the rules of these domains" (the domain is v1
  for `p` and v2 for `g`).
- `policy_state`: one row (id = 1) holding the store's revision and the change log's head.
- `change_log`: one row per added or removed rule, chained by SHA-256 hashes.
- `api_keys`, `subject_attributes` and `decision_log`: read and written by the repositories
  `rolegate.store.apikeys`, `.attributes` and `.decisions`, on behalf of `rolegate.apikeys`,
  `rolegate.subject_attributes` and `rolegate.audit.decision_log` (which keep the domain logic).

SQLite engines get WAL, a 5 s busy timeout and foreign keys on every connection, and we emit
`BEGIN` ourselves so that a writer can ask for `BEGIN IMMEDIATE` (execution option
`WRITE_TRANSACTION`): it takes the write lock before reading the revision, so two writers queue
on the busy timeout instead of failing on a stale snapshot.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from ..errors import StoreUnavailable

# Connection execution option: start the transaction as a writer (SQLite `BEGIN IMMEDIATE`).
WRITE_TRANSACTION = "rolegate_write"

SQLITE_BUSY_TIMEOUT_MS = 5000
PG_CONNECT_TIMEOUT_S = 3
# A PostgreSQL transaction that has not finished after this long has its socket cut (503): a
# black-holed database answers nothing, and only the client can give up (server-side timeouts
# never arrive). Whole-store loads and imports pass `timeout=None`.
STORE_TIMEOUT_S = 5.0
PING_TIMEOUT_S = 2.0  # the pool's liveness probe of a pooled connection
# PostgreSQL NOTIFY channel; the payload is the new revision, sent when a change set commits.
NOTIFY_CHANNEL = "rolegate_policy"
VALUE_COLUMNS = ("v0", "v1", "v2", "v3", "v4", "v5")
VALUE_WIDTH = 255  # sqlalchemy_adapter's String(255)
MANAGED_BY_FILES = "files"
MANAGED_BY_API = "api"
OWNERS = (MANAGED_BY_FILES, MANAGED_BY_API)
STATE_ROW_ID = 1
GENESIS_HASH = "0" * 64

metadata = sa.MetaData()

casbin_rule = sa.Table(
    "casbin_rule",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("ptype", sa.String(VALUE_WIDTH)),
    *(sa.Column(name, sa.String(VALUE_WIDTH)) for name in VALUE_COLUMNS),
    # Who manages the rule: "files" (policy files: import, sync, watch) or "api" (admin API).
    # Rows written by Casbin's own adapter get the default (migration 0005).
    sa.Column("managed_by", sa.String(8), nullable=False, server_default=sa.text("'files'")),
    # Exact-row lookups and deletes (ptype + the leading values narrow to a handful of rows).
    sa.Index("ix_casbin_rule_exact", "ptype", "v0", "v1", "v2", "v3"),
    # "Rules of these domains": p rules carry the domain in v1, g rules in v2.
    sa.Index("ix_casbin_rule_p_domain", "v1", "ptype"),
    sa.Index("ix_casbin_rule_g_domain", "v2", "ptype"),
)

policy_state = sa.Table(
    "policy_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("revision", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    # The change log's head: the revision and hash of its newest entry (NULL: no entry yet),
    # written with each entry, so deleting the newest entries shows (`verify_chain`).
    sa.Column("head_revision", sa.BigInteger, nullable=True),
    sa.Column("head_hash", sa.String(64), nullable=True),
    sa.CheckConstraint(f"id = {STATE_ROW_ID}", name="ck_policy_state_single_row"),
)

change_log = sa.Table(
    "change_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("revision", sa.BigInteger, nullable=False),
    # UTC, ISO 8601 with microseconds ("2025-01-31T12:00:00.000000+00:00"): exact round trip on
    # every backend (the hash covers it) and sorts lexicographically.
    sa.Column("at", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(VALUE_WIDTH), nullable=False),
    sa.Column("operation", sa.String(8), nullable=False),  # "add" | "remove"
    sa.Column("ptype", sa.String(VALUE_WIDTH), nullable=False),
    # Casbin line form: "p, editor, acme, /x, read, allow"
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("org", sa.String(VALUE_WIDTH), nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.CheckConstraint("operation IN ('add', 'remove')", name="ck_change_log_operation"),
    sa.Index("ix_change_log_revision", "revision"),
    sa.Index("ix_change_log_org", "org", "id"),
    sa.Index("ix_change_log_at", "at"),
)


api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("org", sa.String(VALUE_WIDTH), nullable=False),
    sa.Column("name", sa.String(VALUE_WIDTH), nullable=False),
    sa.Column("roles", sa.Text, nullable=False),  # JSON list of role names
    sa.Column("key_hash", sa.String(64), nullable=False),
    # Instants as in change_log: UTC ISO 8601 text with microseconds (sorts, round-trips).
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("created_by", sa.String(VALUE_WIDTH), nullable=False),
    sa.Column("expires_at", sa.String(32), nullable=True),
    sa.Column("revoked_at", sa.String(32), nullable=True),
    sa.Index("ix_api_keys_org", "org"),
)

subject_attributes = sa.Table(
    "subject_attributes",
    metadata,
    sa.Column("org", sa.String(VALUE_WIDTH), primary_key=True),
    sa.Column("subject", sa.String(VALUE_WIDTH), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

decision_log = sa.Table(
    "decision_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("at", sa.String(32), nullable=False),  # UTC ISO 8601, sorts as text
    sa.Column("decision_id", sa.String(64), nullable=False),
    sa.Column("org", sa.String(VALUE_WIDTH), nullable=False),
    sa.Column("subject", sa.String(VALUE_WIDTH), nullable=False),
    sa.Column("resource", sa.Text, nullable=False),
    sa.Column("action", sa.String(VALUE_WIDTH), nullable=False),
    sa.Column("allowed", sa.Boolean, nullable=False),
    sa.Column("record", sa.Text, nullable=False),  # the JSON line, as written to other sinks
    sa.Index("ix_decision_log_org_at", "org", "at"),
    sa.Index("ix_decision_log_org_subject_at", "org", "subject", "at"),
    sa.Index("ix_decision_log_at", "at"),
)


def make_engine(url: str) -> sa.Engine:
    """Create an engine for `url` (SQLite file or PostgreSQL), configured for the policy store.

    SQLite: the file's parent directory is created; every connection gets WAL journaling,
    `busy_timeout` 5000 ms and foreign keys. PostgreSQL: `pool_pre_ping` so dead connections are
    replaced instead of failing the first request after a database restart.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed)
        _configure_sqlite(engine)
        return engine
    engine = sa.create_engine(
        parsed,
        pool_pre_ping=True,
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "rolegate"},
    )
    _bound_pings(engine)
    return engine


class SocketCutoff:
    """Shuts a PostgreSQL connection's socket down after `seconds` unless cancelled first: the
    driver's blocked read then fails at once (OperationalError) and the pool discards it."""

    def __init__(self, dbapi_connection: Any, seconds: float):
        self._fd = dbapi_connection.pgconn.socket
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def _cut(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            try:
                with socket.socket(fileno=os.dup(self._fd)) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self) -> None:
        with self._lock:  # after this, the connection may go back to the pool untouched
            self._done = True
        self._timer.cancel()


@contextmanager
def cut_after(dbapi_connection: Any, seconds: float | None) -> Iterator[None]:
    if seconds is None or not hasattr(dbapi_connection, "pgconn"):
        yield
        return
    cutoff = SocketCutoff(dbapi_connection, seconds)
    try:
        yield
    finally:
        cutoff.cancel()


def _bound_pings(engine: sa.Engine) -> None:
    """The pool's pre-ping of a pooled connection gives up after PING_TIMEOUT_S."""
    dialect = engine.dialect
    ping = dialect.do_ping

    def do_ping(dbapi_connection: Any) -> bool:
        with cut_after(dbapi_connection, PING_TIMEOUT_S):
            return ping(dbapi_connection)

    dialect.do_ping = do_ping  # type: ignore[method-assign]


def _configure_sqlite(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module: we emit BEGIN in "begin" below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        if connection.get_execution_options().get(WRITE_TRANSACTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")


def is_postgresql(engine: sa.Engine) -> bool:
    return engine.dialect.name == "postgresql"


# Connection-level failures (refused, reset, timed out, killed backend): the store is unavailable.
CONNECTION_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError)


def failure_reason(exc: BaseException) -> str:
    """The first line of the driver's message (no SQL, no parameters)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


@contextmanager
def transaction(
    engine: sa.Engine,
    *,
    write: bool,
    what: str = "policy store",
    timeout: float | None = STORE_TIMEOUT_S,
) -> Iterator[sa.Connection]:
    """One transaction on the store's database; a lost database raises StoreUnavailable (503).

    Writers take SQLite's write lock up front (BEGIN IMMEDIATE); PostgreSQL readers get
    REPEATABLE READ, so a multi-statement read sees one state. On PostgreSQL the transaction is
    cut off after `timeout` seconds (connecting: PG_CONNECT_TIMEOUT_S, the pool's ping:
    PING_TIMEOUT_S), so an unresponsive database costs a request seconds, not minutes.
    """
    try:
        with engine.connect() as conn:
            if write:
                conn.execution_options(**{WRITE_TRANSACTION: True})
            elif is_postgresql(engine):
                conn.execution_options(isolation_level="REPEATABLE READ")
            with cut_after(conn.connection.dbapi_connection, timeout), conn.begin():
                yield conn
    except CONNECTION_ERRORS as exc:
        raise StoreUnavailable(f"{what} unavailable: {failure_reason(exc)}") from exc
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable(f"{what} unavailable: {failure_reason(exc)}") from exc
        raise
