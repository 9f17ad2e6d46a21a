"""Schema migrations: an empty database is created at start, everything else must match this
release (`rolegate db upgrade`), on SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from scaleout import dedicated_database

from rolegate.cli import main
from rolegate.store import ChangeSet, PolicyStore
from rolegate.store.db import make_engine, metadata
from rolegate.store.schema import (
    SchemaError,
    declared_metadata,
    head_revision,
    schema_differences,
    schema_state,
    upgrade,
)

RULE = ("g", "alice", "admin", "acme")


@pytest.fixture(scope="module")
def pg_server_db():
    with dedicated_database("migrations") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path, pg_server_db):
    """An empty database: a new SQLite file, or the module's PostgreSQL database wiped."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    engine = sa.create_engine(pg_server_db, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    return pg_server_db


def run_cli(url: str, *args: str):
    return CliRunner().invoke(main, ["db", *args], env={"ROLEGATE_DATABASE_URL": url})


def set_version(url: str, version: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": version})
    engine.dispose()


def test_an_empty_database_is_created_at_start_and_matches_the_declared_tables(empty_url):
    store = PolicyStore.from_url(empty_url)
    try:
        state = schema_state(store.engine)
        assert state.up_to_date and state.current == head_revision()
        assert schema_differences(store.engine) == []
        assert store.apply(ChangeSet(added=[RULE]), actor="test") == 1
    finally:
        store.dispose()
    again = PolicyStore.from_url(empty_url)  # a second start changes nothing
    assert again.revision() == 1
    again.dispose()


def test_every_declared_table_has_a_migration():
    """A module that declares a table on the store's metadata needs a migration for it."""
    declared = set(declared_metadata().tables)
    assert {"casbin_rule", "policy_state", "change_log"} <= declared
    assert set(metadata.tables) <= declared


def test_db_upgrade_current_and_check_commands(empty_url):
    before = run_cli(empty_url, "current")
    assert before.exit_code == 0 and "database: none" in before.output
    check = run_cli(empty_url, "check")
    assert check.exit_code == 2 and "rolegate db upgrade" in check.output

    result = run_cli(empty_url, "upgrade")
    assert result.exit_code == 0, result.output
    assert f"to {head_revision()}" in result.output
    assert run_cli(empty_url, "upgrade").output.strip() == f"schema already at {head_revision()}"
    assert run_cli(empty_url, "check").exit_code == 0
    assert "up to date" in run_cli(empty_url, "current").output


def test_a_newer_schema_is_refused_with_a_clear_message(empty_url):
    PolicyStore.from_url(empty_url).dispose()
    set_version(empty_url, "9999_from_the_future")
    with pytest.raises(SchemaError, match="newer than this Rolegate"):
        PolicyStore.from_url(empty_url)
    result = run_cli(empty_url, "upgrade")
    assert result.exit_code == 2 and "newer than this Rolegate" in result.output


def test_an_older_schema_is_refused_until_upgraded(empty_url):
    engine = make_engine(empty_url)
    upgrade(engine, "0001")
    engine.dispose()
    with pytest.raises(SchemaError, match="run `rolegate db upgrade`"):
        PolicyStore.from_url(empty_url)
    assert run_cli(empty_url, "upgrade").exit_code == 0
    PolicyStore.from_url(empty_url).dispose()


def test_tables_created_without_migrations_are_refused_then_adopted(empty_url):
    engine = make_engine(empty_url)
    declared_metadata().create_all(engine)  # an older Rolegate's create_all
    engine.dispose()
    with pytest.raises(SchemaError, match="no migration version"):
        PolicyStore.from_url(empty_url)
    result = run_cli(empty_url, "upgrade")
    assert result.exit_code == 0, result.output
    store = PolicyStore.from_url(empty_url)
    assert schema_differences(store.engine) == []
    store.dispose()


def test_a_casbin_adapter_table_is_adopted_with_its_rules(empty_url):
    engine = make_engine(empty_url)
    with engine.begin() as conn:  # what sqlalchemy_adapter creates: no indexes, no other table
        conn.execute(
            sa.text(
                "CREATE TABLE casbin_rule (id INTEGER PRIMARY KEY, ptype VARCHAR(255), "
                + ", ".join(f"v{i} VARCHAR(255)" for i in range(6))
                + ")"
            )
        )
        conn.execute(
            sa.text("INSERT INTO casbin_rule (id, ptype, v0, v1, v2) VALUES (1, 'g', :a, :b, :c)"),
            dict(zip("abc", RULE[1:], strict=True)),
        )
    engine.dispose()
    assert run_cli(empty_url, "upgrade").exit_code == 0
    store = PolicyStore.from_url(empty_url)
    assert store.load_all()[1] == [RULE]
    store.dispose()


def test_workers_starting_together_create_the_schema_once(pg_server_db):
    with dedicated_database("concurrent") as url:
        errors: list[BaseException] = []
        stores: list[PolicyStore] = []

        def start():
            try:
                stores.append(PolicyStore.from_url(url))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert {store.revision() for store in stores} == {0}
        for store in stores:
            store.dispose()
