"""Database URLs of the store: which are accepted, and where a SQLite store's file is."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DATABASE_BACKENDS = ("sqlite", "postgresql")
ACCEPTED = "expected sqlite:///<file> or postgresql+psycopg://user@host/db"


def validate_database_url(value: str) -> str:
    """`value` when it is a URL of a backend the store supports; ValueError (with a hint for
    `postgres://` and other drivers) otherwise."""
    scheme = value.partition(":")[0].lower()
    if scheme in ("postgres", "postgresql+psycopg2", "postgres+psycopg"):
        raise ValueError(f"{scheme}:// is not supported; use postgresql+psycopg://")
    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError(f"not a database URL ({ACCEPTED})") from None
    if url.get_backend_name() not in DATABASE_BACKENDS:
        raise ValueError(f"unsupported database {url.get_backend_name()!r} ({ACCEPTED})")
    if url.get_backend_name() == "postgresql" and url.get_driver_name() != "psycopg":
        raise ValueError("use the psycopg driver: postgresql+psycopg://")
    return value


def sqlite_file(database_url: str) -> Path | None:
    """The file of a `sqlite:///<file>` URL; None for other backends, memory and `file:` URIs."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()
