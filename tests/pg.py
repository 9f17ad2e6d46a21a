"""PostgreSQL for tests: find the server once, then give each test its own schema.

    url = postgres_url_or_skip()          # the server's URL, or skip (fail when CI is set)
    with fresh_schema_url(url) as url:    # same database, a new empty schema on search_path
        ...

The URL comes from ROLEGATE_TEST_POSTGRES_URL (default: the local `test` database). Each test
gets a schema of its own (dropped afterwards), so tests never see each other's tables, nor the
tables of anyone else using the same database at the same time.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

URL_ENV = "ROLEGATE_TEST_POSTGRES_URL"
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

_reachability: dict[str, str | None] = {}  # url -> why it is unreachable (None: reachable)


def in_ci() -> bool:
    """CI is set (to anything but an empty/false value): missing services are failures."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _probe(url: str) -> str | None:
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3}, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return None
    except Exception as exc:  # any failure means "not usable for tests"
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"{type(exc).__name__}: {first_line}"
    finally:
        engine.dispose()


def postgres_url_or_skip() -> str:
    """The PostgreSQL URL for tests; skips the test when unreachable (fails when CI is set)."""
    url = os.environ.get(URL_ENV, DEFAULT_URL)
    if url not in _reachability:
        _reachability[url] = _probe(url)
    problem = _reachability[url]
    if problem is not None:
        shown = sa.make_url(url).render_as_string(hide_password=True)
        message = f"PostgreSQL is unreachable at {shown} ({problem}); start it or set {URL_ENV}"
        if in_ci():
            pytest.fail(f"{message}. CI is set, so PostgreSQL tests must run.", pytrace=False)
        pytest.skip(message)
    return url


@contextmanager
def fresh_schema_url(url: str) -> Iterator[str]:
    """`url` with a new, empty schema first on the search_path; the schema is dropped after."""
    schema = f"rolegate_test_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        scoped = sa.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema (skips when unreachable)."""
    with fresh_schema_url(postgres_url_or_skip()) as url:
        yield url
