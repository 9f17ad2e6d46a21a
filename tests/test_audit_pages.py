"""Audit pages cut by the audit layer (`rolegate.audit.pages`), over a real SQLite store."""

from __future__ import annotations

import pytest

from rolegate.audit import CursorCodec
from rolegate.audit.pages import change_page, who_can_page
from rolegate.config import REPO_ROOT
from rolegate.engine import Engine
from rolegate.errors import InvalidRequest
from rolegate.store import ChangeSet, PolicyStore


@pytest.fixture
def store(tmp_path):
    store = PolicyStore.from_url(f"sqlite:///{tmp_path / 'pages.db'}")
    yield store
    store.dispose()


def grant(subject: str) -> tuple[str, ...]:
    return ("p", subject, "acme", "/docs/*", "read", "allow")


def test_change_pages_end_on_revision_boundaries_and_chain_without_gaps(store):
    store.apply(ChangeSet(added=[grant("a")]), actor="t")
    store.apply(ChangeSet(added=[grant("b"), grant("c"), grant("d")]), actor="t")  # 3 entries
    store.apply(ChangeSet(added=[grant("e")]), actor="t")

    first = change_page(store, "acme", limit=2)
    # The second revision does not fit after the first: the page stops before it.
    assert [entry.rule[1] for entry in first.items] == ["a"]
    second = change_page(store, "acme", limit=2, since_revision=first.next_cursor)
    # A revision larger than the page comes whole.
    assert sorted(entry.rule[1] for entry in second.items) == ["b", "c", "d"]
    last = change_page(store, "acme", limit=2, since_revision=second.next_cursor)
    assert [entry.rule[1] for entry in last.items] == ["e"]
    assert last.next_cursor is None
    assert change_page(store, "globex", limit=2).items == []


def test_who_can_pages_are_bound_to_their_query(store):
    store.apply(ChangeSet(added=[grant(name) for name in "abc"]), actor="t")
    engine = Engine.from_model_file(REPO_ROOT / "model.conf")
    engine.load(*store.load_all())
    snapshot = engine.snapshot
    codec = CursorCodec(b"k" * 32)

    def page(cursor, resource="/docs/1"):
        return who_can_page(
            engine, snapshot, "acme", resource, "read", limit=2, cursor=cursor, codec=codec
        )

    first = page(None)
    assert [entry.subject for entry in first.items] == ["a", "b"]
    second = page(first.next_cursor)
    assert [entry.subject for entry in second.items] == ["c"] and second.next_cursor is None
    with pytest.raises(InvalidRequest):  # a cursor of another query is refused
        page(first.next_cursor, resource="/docs/2")
