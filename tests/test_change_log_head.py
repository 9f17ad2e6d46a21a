"""The change log's stored head: deleting the newest entries is detected, by the store and by
`rolegate changes --verify`, on SQLite and PostgreSQL (issue 17)."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from rolegate.cli import main
from rolegate.store import ChangeSet, PolicyStore
from rolegate.store.db import change_log, policy_state


def rule(subject: str) -> tuple:
    return ("p", subject, "acme", "/x", "read", "allow")


@pytest.fixture
def store(store_url: str):
    store = PolicyStore.from_url(store_url)
    for i in range(4):
        store.apply(ChangeSet(added=[rule(f"user{i}")]), actor="ann")
    yield store
    store.dispose()


def delete_newest(store: PolicyStore, count: int) -> None:
    with store.engine.begin() as conn:
        newest = conn.execute(sa.select(sa.func.max(change_log.c.id))).scalar()
        conn.execute(sa.delete(change_log).where(change_log.c.id > newest - count))


def verify(store_url: str, *extra: str):
    return CliRunner().invoke(
        main, ["changes", "--verify", *extra], env={"ROLEGATE_DATABASE_URL": store_url}
    )


def test_an_intact_log_matches_its_head(store: PolicyStore, store_url: str):
    verdict = store.verify_log()
    assert verdict.intact and verdict.truncated is None
    result = verify(store_url)
    assert result.exit_code == 0 and "change log intact" in result.output


def test_deleting_the_newest_entries_is_detected(store: PolicyStore, store_url: str):
    delete_newest(store, 2)
    assert store.verify_chain() is None  # the remaining chain links up: only the head tells
    verdict = store.verify_log()
    assert not verdict.intact
    assert verdict.truncated.stored[0] == 4 and verdict.truncated.found[0] == 2

    text = verify(store_url)
    assert text.exit_code == 1
    assert "change log truncated" in text.output and "revision 2" in text.output
    document = json.loads(verify(store_url, "--format", "json").output)
    assert document["intact"] is False and document["broken"] is None
    assert document["truncated"]["stored_head"]["revision"] == 4
    assert document["truncated"]["newest_entry"]["revision"] == 2


def test_deleting_every_entry_is_detected(store: PolicyStore, store_url: str):
    delete_newest(store, 4)
    verdict = store.verify_log()
    assert verdict.truncated is not None and verdict.truncated.found is None
    assert verify(store_url).exit_code == 1


def test_a_truncation_stays_visible_after_later_writes(store: PolicyStore, store_url: str):
    delete_newest(store, 1)
    store.apply(ChangeSet(added=[rule("late")]), actor="ann")
    broken = store.verify_chain()  # the new entry links to the deleted one's hash
    assert broken is not None and broken.rule == rule("late")
    assert verify(store_url).exit_code == 1


def test_rewinding_the_head_with_the_log_is_not_a_break(store: PolicyStore):
    """A restored backup carries log and head together: intact (and the head moves on)."""
    with store.engine.begin() as conn:
        conn.execute(sa.delete(change_log).where(change_log.c.revision > 2))
        tip = conn.execute(sa.select(change_log.c.hash).order_by(change_log.c.id.desc())).first()
        conn.execute(sa.update(policy_state).values(revision=2, head_revision=2, head_hash=tip[0]))
    assert store.verify_log().intact
    store.apply(ChangeSet(added=[rule("after-restore")]), actor="ann")
    assert store.verify_log().intact


def test_a_store_without_entries_is_intact(store_url: str):
    empty = PolicyStore.from_url(store_url)
    try:
        assert empty.verify_log().intact
    finally:
        empty.dispose()


def test_the_migration_records_the_head_of_an_existing_log(store: PolicyStore, store_url: str):
    from alembic import command

    from rolegate.store.schema import alembic_config, upgrade

    with store.engine.begin() as conn:  # back to the schema before 0006, entries kept
        command.downgrade(alembic_config(conn), "0005")
    upgrade(store.engine)
    assert store.verify_log().intact
    delete_newest(store, 1)
    assert store.verify_log().truncated is not None
