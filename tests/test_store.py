"""PolicyStore on real SQLite files and on PostgreSQL (skipped when unreachable, failed under CI).

The first section pins the sqlalchemy_adapter / pycasbin traps the store is designed around
(see /work/shared/reference/pycasbin-traps.md): each test shows the trap, then our way.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import casbin
import pytest
import sqlalchemy as sa
from sqlalchemy_adapter import Adapter
from sqlalchemy_adapter.adapter import CasbinRule

from rolegate.config import REPO_ROOT
from rolegate.errors import Conflict, InvalidRequest, PolicyError, StoreUnavailable
from rolegate.store import ChangeSet, PolicyStore, casbin_rule, make_engine, policies
from rolegate.store.db import change_log

try:
    from pg import fresh_schema_url, postgres_url_or_skip
except ImportError:  # tests/ imported as a package
    from tests.pg import fresh_schema_url, postgres_url_or_skip

MODEL = str(REPO_ROOT / "model.conf")

ALICE_A = ("p", "alice", "acme", "/a", "read", "allow")
BOB_B = ("p", "bob", "acme", "/b", "read", "allow")
ALICE_B = ("p", "alice", "acme", "/b", "read", "allow")
BOB_A = ("p", "bob", "acme", "/a", "read", "allow")
FOUR = (ALICE_A, BOB_B, ALICE_B, BOB_A)


def p(sub: str, org: str, obj: str = "/x", act: str = "read", eft: str = "allow") -> tuple:
    return ("p", sub, org, obj, act, eft)


def g(member: str, role: str, org: str) -> tuple:
    return ("g", member, role, org)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'policy.db'}"
    else:
        with fresh_schema_url(postgres_url_or_skip()) as url:
            yield url


@pytest.fixture
def store(store_url: str):
    store = PolicyStore.from_url(store_url)
    yield store
    store.dispose()


@pytest.fixture
def sqlite_store(tmp_path: Path):
    store = PolicyStore.from_url(f"sqlite:///{tmp_path / 'policy.db'}")
    yield store
    store.dispose()


def rows(store: PolicyStore) -> list[tuple]:
    return sorted(store.load_all()[1])


# --------------------------------------------------------------------------- adapter traps


def test_trap_adapter_remove_policies_deletes_every_combination(tmp_path: Path):
    trapped = PolicyStore.from_url(f"sqlite:///{tmp_path / 'adapter.db'}")
    trapped.apply(ChangeSet(added=FOUR), actor="test")
    enforcer = casbin.Enforcer(MODEL, Adapter(trapped.engine))

    enforcer.remove_policies([list(ALICE_A[1:]), list(BOB_B[1:])])

    # The adapter's per-column IN filter also matched (alice, /b) and (bob, /a)...
    assert rows(trapped) == []
    # ...while Casbin's memory kept them: memory and database disagree.
    assert sorted(enforcer.get_policy()) == sorted([list(ALICE_B[1:]), list(BOB_A[1:])])
    trapped.dispose()

    ours = PolicyStore.from_url(f"sqlite:///{tmp_path / 'ours.db'}")
    ours.apply(ChangeSet(added=FOUR), actor="test")
    assert ours.apply(ChangeSet(removed=(ALICE_A, BOB_B)), actor="test") == 2
    assert rows(ours) == sorted([ALICE_B, BOB_A])
    ours.dispose()


def test_trap_update_filtered_policies_changes_memory_not_database(sqlite_store: PolicyStore):
    sqlite_store.apply(ChangeSet(added=FOUR), actor="test")
    enforcer = casbin.Enforcer(MODEL, Adapter(sqlite_store.engine))
    carol = ("p", "carol", "acme", "/c", "read", "allow")

    assert enforcer.update_filtered_policies([list(carol[1:])], 0, "alice")  # "succeeds"

    assert sorted(map(tuple, enforcer.get_policy())) == sorted([BOB_B[1:], BOB_A[1:], carol[1:]])
    assert rows(sqlite_store) == sorted(FOUR)  # the database never changed
    assert sqlite_store.revision() == 1

    # Ours: the same update as one change set changes rows and revision together.
    revision = sqlite_store.apply(
        ChangeSet(added=(carol,), removed=(ALICE_A, ALICE_B)), actor="test"
    )
    assert revision == 2 == sqlite_store.revision()
    assert rows(sqlite_store) == sorted([BOB_B, BOB_A, carol])
    enforcer.load_policy()
    assert sorted(map(tuple, enforcer.get_policy())) == sorted([BOB_B[1:], BOB_A[1:], carol[1:]])


def test_trap_comma_value_is_split_on_reload_so_apply_refuses_it(sqlite_store: PolicyStore):
    enforcer = casbin.Enforcer(MODEL, Adapter(sqlite_store.engine))
    enforcer.add_policy("dave", "acme", "/x,y", "read", "allow")
    reloaded = casbin.Enforcer(MODEL, Adapter(sqlite_store.engine))
    assert ["dave", "acme", "/x", "y", "read", "allow"] in reloaded.get_policy()
    with pytest.raises(RuntimeError, match="invalid policy size"):
        reloaded.enforce("dave", "acme", "/x,y", "read", "")

    with pytest.raises(PolicyError, match="contains ','"):
        sqlite_store.apply(ChangeSet(added=[p("erin", "acme", "/x,y")]), actor="test")


def test_many_rules_are_one_transaction_a_bad_last_rule_writes_nothing(store: PolicyStore):
    good = [p(f"user{i}", "acme", f"/r/{i}") for i in range(300)]
    with pytest.raises(PolicyError, match="effect"):
        store.apply(ChangeSet(added=[*good, p("eve", "acme", eft="maybe")]), actor="test")
    assert store.load_all() == (0, [])
    assert store.changes() == []


def test_failure_after_rows_were_written_rolls_everything_back(store: PolicyStore, monkeypatch):
    store.apply(ChangeSet(added=[ALICE_A]), actor="test")

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    # The rule rows are deleted/inserted before the change log is hashed: fail there.
    monkeypatch.setattr(policies, "entry_hash", broken)
    batch = ChangeSet(added=[p(f"user{i}", "acme") for i in range(50)], removed=[ALICE_A])
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.apply(batch, actor="test")
    monkeypatch.undo()

    assert store.load_all() == (1, [ALICE_A])
    assert len(store.changes()) == 1
    assert store.verify_chain() is None


def test_conflicting_rule_at_the_end_rolls_back_the_whole_change_set(store: PolicyStore):
    store.apply(ChangeSet(added=[ALICE_A]), actor="test")
    with pytest.raises(Conflict) as caught:
        store.apply(ChangeSet(added=[*(p(f"u{i}", "acme") for i in range(20)), ALICE_A]), actor="t")
    assert caught.value.code == "rule_exists"
    assert "p, alice, acme, /a, read, allow" in caught.value.message
    assert store.load_all() == (1, [ALICE_A])


# --------------------------------------------------------------------------- schema and engine


def test_casbin_rule_matches_the_adapter_table():
    theirs = CasbinRule.__table__
    shared = [c for c in casbin_rule.columns if c.name != "managed_by"]
    assert [c.name for c in shared] == [c.name for c in theirs.columns]
    # Our one extra column has a server default, so the adapter's own INSERTs stay valid.
    assert casbin_rule.c.managed_by.server_default is not None
    assert not casbin_rule.c.managed_by.nullable
    for ours, adapters in zip(shared, theirs.columns, strict=True):
        assert type(ours.type) is type(adapters.type)
        assert getattr(ours.type, "length", None) == getattr(adapters.type, "length", None)
        assert ours.primary_key == adapters.primary_key


def test_sqlite_engine_settings(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'deep' / 'er' / 'x.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert (tmp_path / "deep" / "er" / "x.db").exists()
    finally:
        engine.dispose()


def test_unreachable_database_is_store_unavailable():
    with pytest.raises(StoreUnavailable):
        PolicyStore.from_url("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    store = PolicyStore(make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere"))
    with pytest.raises(StoreUnavailable):
        store.revision()
    with pytest.raises(StoreUnavailable):
        store.apply(ChangeSet(added=[ALICE_A]), actor="test")
    store.dispose()


# --------------------------------------------------------------------------- change sets


def test_change_set_between_is_a_sorted_set_difference():
    old = [p("a", "globex"), g("bob", "editor", "acme"), p("viewer", "*"), p("a", "globex")]
    new = [g("zed", "admin", "acme"), p("a", "globex"), g("admin", "editor", "*")]
    changes = ChangeSet.between(old, new)
    assert changes.added == (g("admin", "editor", "*"), g("zed", "admin", "acme"))
    assert changes.removed == (p("viewer", "*"), g("bob", "editor", "acme"))
    assert changes.domains() == {"*", "acme"}
    assert not changes.is_empty()
    assert ChangeSet.between(old, old).is_empty()
    assert ChangeSet(added=[["g", "a", "b", "c"]]).added == (("g", "a", "b", "c"),)


# --------------------------------------------------------------------------- apply and revisions


def test_revision_increases_by_one_per_change_set(store: PolicyStore):
    assert store.revision() == 0
    assert store.apply(ChangeSet(added=[ALICE_A, g("alice", "admin", "acme")]), actor="a") == 1
    assert store.apply(ChangeSet(added=[BOB_B]), actor="a") == 2
    assert store.apply(ChangeSet(removed=[ALICE_A], added=[ALICE_B]), actor="a") == 3
    assert store.apply(ChangeSet(), actor="a") == 3  # empty: no new revision
    assert store.revision() == 3
    assert rows(store) == sorted([ALICE_B, BOB_B, g("alice", "admin", "acme")])


def test_expected_revision(store: PolicyStore):
    store.apply(ChangeSet(added=[ALICE_A]), actor="a")
    with pytest.raises(Conflict) as caught:
        store.apply(ChangeSet(added=[BOB_B]), actor="a", expected_revision=0)
    assert caught.value.code == "revision_conflict"
    assert caught.value.http_status == 409
    with pytest.raises(Conflict):
        store.apply(ChangeSet(), actor="a", expected_revision=7)
    assert store.apply(ChangeSet(added=[BOB_B]), actor="a", expected_revision=1) == 2
    assert store.apply(ChangeSet(), actor="a", expected_revision=2) == 2


def test_removing_a_missing_rule_is_a_conflict(store: PolicyStore):
    store.apply(ChangeSet(added=[ALICE_A]), actor="a")
    with pytest.raises(Conflict) as caught:
        store.apply(ChangeSet(removed=[ALICE_A, BOB_B], added=[ALICE_B]), actor="a")
    assert caught.value.code == "rule_missing"
    assert "p, bob, acme, /b, read, allow" in caught.value.message
    assert store.load_all() == (1, [ALICE_A])


def test_remove_deletes_exact_rows_only_including_duplicates(store: PolicyStore):
    g_rule = g("alice", "admin", "acme")
    store.apply(ChangeSet(added=[g_rule, g("alice", "admin", "acme2"), ALICE_A]), actor="a")
    with store.engine.begin() as conn:  # a duplicate and a longer row, as other tools write them
        conn.execute(
            sa.insert(casbin_rule), [{"ptype": "g", "v0": "alice", "v1": "admin", "v2": "acme"}]
        )
        conn.execute(
            sa.insert(casbin_rule),
            [{"ptype": "g", "v0": "alice", "v1": "admin", "v2": "acme", "v3": "extra"}],
        )
    store.apply(ChangeSet(removed=[g_rule]), actor="a")
    assert rows(store) == sorted(
        [ALICE_A, g("alice", "admin", "acme2"), ("g", "alice", "admin", "acme", "extra")]
    )


def test_apply_with_many_rules_checks_against_domain_rows(store: PolicyStore):
    # More rules than policies._LOOKUP_LIMIT: existence is checked by loading their domains.
    many = [p(f"user{i}", f"org{i % 7}", f"/r/{i}") for i in range(policies._LOOKUP_LIMIT + 50)]
    assert store.apply(ChangeSet(added=many), actor="a") == 1
    with pytest.raises(Conflict) as caught:
        store.apply(
            ChangeSet(added=[*(p(f"n{i}", "org1") for i in range(300)), many[-1]]), actor="a"
        )
    assert caught.value.code == "rule_exists"
    assert store.apply(ChangeSet(removed=many[:260]), actor="a") == 2
    assert rows(store) == sorted(many[260:])


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        (("p", "a", "acme", "/x", "read"), "5 values"),
        (("g", "a", "b"), "3 values"),
        (("g", "a", "b", "acme", "x"), "3 values"),
        (("x", "a", "b", "c"), "unknown rule type"),
        (("p", "a", "acme", "/x", "read", "permit"), "allow` or `deny"),
        (("p", "", "acme", "/x", "read", "allow"), "empty"),
        (("g", "a\x00", "b", "acme"), "U+0000"),
        (("g", "a\u202e", "b", "acme"), "U+202E"),
        (("g", " a", "b", "acme"), "spaces"),
        (("g", "a", "b", "ac,me"), "contains ','"),
        (("g", "a", 'b"', "acme"), "contains '\"'"),
        (("g", "a", "b(", "acme"), "contains '('"),
        (("g", "a", "b", "acme # x"), "comment"),
        (("g", "a" * 256, "b", "acme"), "at most 255"),
        (("g", "a", 3, "acme"), "strings"),
    ],
)
def test_invalid_rules_are_refused_and_nothing_is_written(sqlite_store, rule, fragment):
    with pytest.raises(PolicyError, match=re.escape(fragment)) as caught:
        sqlite_store.apply(ChangeSet(added=[ALICE_A, rule]), actor="a")
    assert caught.value.http_status == 400
    assert sqlite_store.load_all() == (0, [])


def test_malformed_change_sets_and_actor(sqlite_store: PolicyStore):
    with pytest.raises(PolicyError, match="listed twice"):
        sqlite_store.apply(ChangeSet(added=[ALICE_A, ALICE_A]), actor="a")
    with pytest.raises(PolicyError, match="both added and removed"):
        sqlite_store.apply(ChangeSet(added=[ALICE_A], removed=[ALICE_A]), actor="a")
    with pytest.raises(InvalidRequest):
        sqlite_store.apply(ChangeSet(added=[ALICE_A]), actor="")
    assert sqlite_store.revision() == 0


def test_rows_of_other_tools_remain_removable(sqlite_store: PolicyStore):
    with sqlite_store.engine.begin() as conn:
        conn.execute(
            sa.insert(casbin_rule),
            [
                {
                    "ptype": "p",
                    "v0": "x",
                    "v1": "acme",
                    "v2": "/a",
                    "v3": "b",
                    "v4": "read",
                    "v5": "allow",
                }
            ],
        )
    junk = ("p", "x", "acme", "/a", "b", "read", "allow")
    assert sqlite_store.load_all()[1] == [junk]
    sqlite_store.apply(ChangeSet(removed=[junk]), actor="cleanup")
    assert sqlite_store.load_all() == (1, [])


# --------------------------------------------------------------------------- change log


def test_change_log_entries_and_filters(store: PolicyStore):
    before = datetime.now(UTC) - timedelta(seconds=1)
    store.apply(ChangeSet(added=[ALICE_A, g("x", "admin", "acme2"), p("viewer", "*")]), actor="ann")
    store.apply(ChangeSet(removed=[ALICE_A], added=[BOB_B]), actor="ben")

    entries = store.changes()
    assert [(e.revision, e.operation, e.rule, e.org, e.actor) for e in entries] == [
        (1, "add", p("viewer", "*"), "*", "ann"),
        (1, "add", ALICE_A, "acme", "ann"),
        (1, "add", g("x", "admin", "acme2"), "acme2", "ann"),
        (2, "remove", ALICE_A, "acme", "ben"),
        (2, "add", BOB_B, "acme", "ben"),
    ]
    assert all(e.at.tzinfo is not None and e.at >= before for e in entries)
    assert entries[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in zip(entries, entries[1:], strict=False))

    assert [e.rule for e in store.changes(org="acme")] == [ALICE_A, ALICE_A, BOB_B]
    assert [e.revision for e in store.changes(since_revision=1)] == [2, 2]
    assert len(store.changes(limit=2)) == 2
    assert store.changes(since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert len(store.changes(since=before)) == 5


def test_verify_chain_detects_edits_and_deletions(store: PolicyStore):
    for i in range(4):
        store.apply(ChangeSet(added=[p(f"user{i}", "acme")]), actor="ann")
    assert store.verify_chain() is None

    with store.engine.begin() as conn:
        conn.execute(sa.update(change_log).where(change_log.c.id == 2).values(actor="mallory"))
    broken = store.verify_chain()
    assert broken is not None and broken.id == 2 and broken.actor == "mallory"

    with store.engine.begin() as conn:  # repair the edit, then delete an entry instead
        conn.execute(sa.update(change_log).where(change_log.c.id == 2).values(actor="ann"))
    assert store.verify_chain() is None
    with store.engine.begin() as conn:
        conn.execute(sa.delete(change_log).where(change_log.c.id == 3))
    broken = store.verify_chain()
    assert broken is not None and broken.id == 4

    with store.engine.begin() as conn:
        conn.execute(sa.update(change_log).where(change_log.c.id == 1).values(hash="f" * 64))
    assert store.verify_chain().id == 1


# --------------------------------------------------------------------------- loads


def test_load_domains_matches_exact_org_names(store: PolicyStore):
    rules = [
        p("viewer", "*"),
        g("admin", "editor", "*"),
        p("alice", "acme"),
        g("alice", "admin", "acme"),
        p("bob", "acme2"),
        g("bob", "admin", "acme2"),
        p("acme", "globex"),
        g("acme", "acme", "globex"),  # "acme" in other columns
    ]
    store.apply(ChangeSet(added=rules), actor="a")
    revision, acme = store.load_domains(["acme"])
    assert revision == 1
    assert sorted(acme) == sorted([p("alice", "acme"), g("alice", "admin", "acme")])
    assert sorted(store.load_domains(["*", "acme2"])[1]) == sorted(
        [p("viewer", "*"), g("admin", "editor", "*"), p("bob", "acme2"), g("bob", "admin", "acme2")]
    )
    assert store.load_domains([]) == (1, [])
    assert store.load_domains(["nobody"]) == (1, [])


def test_load_all_reports_progress(store: PolicyStore, monkeypatch):
    rules = [p(f"user{i}", "acme") for i in range(25)] + [
        g(f"u{i}", "r", "acme") for i in range(10)
    ]
    store.apply(ChangeSet(added=rules), actor="a")
    monkeypatch.setattr(policies, "PROGRESS_EVERY", 10)
    seen: list[int] = []
    revision, loaded = store.load_all(progress=seen.append)
    assert revision == 1 and sorted(loaded) == sorted(rules)
    assert seen == [10, 20, 30, 35]
    assert all(type(rule) is tuple for rule in loaded)


def test_rules_written_by_the_adapter_are_read_back(store: PolicyStore):
    enforcer = casbin.Enforcer(MODEL, Adapter(store.engine))
    enforcer.add_policy("editor", "*", "/projects/*", "update", "allow")
    enforcer.add_grouping_policy("alice", "editor", "acme")
    enforcer.add_policies([["viewer", "*", "/docs/*", "read", "allow"]])
    assert rows(store) == sorted(
        [
            p("editor", "*", "/projects/*", "update"),
            g("alice", "editor", "acme"),
            p("viewer", "*", "/docs/*", "read"),
        ]
    )
    # ...and the other way round: what we write, Casbin's adapter loads.
    store.apply(ChangeSet(added=[g("bob", "editor", "acme")]), actor="a")
    enforcer.load_policy()
    assert enforcer.enforce("bob", "acme", "/projects/1", "update", "")
    assert sorted(store.load_domains(["acme"])[1]) == [
        g("alice", "editor", "acme"),
        g("bob", "editor", "acme"),
    ]


# --------------------------------------------------------------------------- replace_all


def test_replace_all_computes_the_change_set(store: PolicyStore):
    store.apply(ChangeSet(added=[ALICE_A, BOB_B, g("x", "admin", "globex")]), actor="a")
    changes, revision = store.replace_all([ALICE_A, ALICE_B, ALICE_B], actor="sync")
    assert changes == ChangeSet(added=(ALICE_B,), removed=(BOB_B, g("x", "admin", "globex")))
    assert revision == 2
    assert rows(store) == sorted([ALICE_A, ALICE_B])

    again, same = store.replace_all([ALICE_B, ALICE_A], actor="sync")
    assert again.is_empty() and same == 2


def test_replace_all_within_domains_leaves_other_domains(store: PolicyStore):
    store.apply(
        ChangeSet(added=[ALICE_A, p("x", "acme2"), g("y", "admin", "globex"), p("v", "*")]),
        actor="a",
    )
    changes, revision = store.replace_all(
        [BOB_B, g("z", "admin", "acme")], actor="sync", domains=["acme"]
    )
    assert changes == ChangeSet(added=(g("z", "admin", "acme"), BOB_B), removed=(ALICE_A,))
    assert revision == 2
    assert rows(store) == sorted(
        [BOB_B, g("z", "admin", "acme"), p("x", "acme2"), g("y", "admin", "globex"), p("v", "*")]
    )
    with pytest.raises(PolicyError, match="outside the domains"):
        store.replace_all([p("q", "globex")], actor="sync", domains=["acme"])
    with pytest.raises(PolicyError, match="effect"):
        store.replace_all([p("q", "acme", eft="nope")], actor="sync", domains=["acme"])
    assert store.revision() == 2


# --------------------------------------------------------------------------- concurrency


def _concurrent_writers(url: str, writers: int = 2, batches: int = 15) -> list[int]:
    stores = [PolicyStore.from_url(url) for _ in range(writers)]
    barrier = threading.Barrier(writers)
    revisions: list[list[int]] = [[] for _ in range(writers)]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            for batch in range(batches):
                added = [p(f"w{index}-b{batch}-{i}", f"org{i % 3}") for i in range(5)]
                revisions[index].append(
                    stores[index].apply(ChangeSet(added=added), actor=f"w{index}")
                )
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for store in stores:
        store.dispose()
    assert not errors, errors
    return [revision for per_writer in revisions for revision in per_writer]


def test_concurrent_writers_get_distinct_consecutive_revisions(store_url: str):
    PolicyStore.from_url(store_url).dispose()  # schema first, as a deployment would
    revisions = _concurrent_writers(store_url)
    assert sorted(revisions) == list(range(1, 31))

    store = PolicyStore.from_url(store_url)
    try:
        revision, loaded = store.load_all()
        assert revision == 30
        expected = {
            p(f"w{w}-b{b}-{i}", f"org{i % 3}")
            for w in range(2)
            for b in range(15)
            for i in range(5)
        }
        assert set(loaded) == expected and len(loaded) == len(expected)
        log = store.changes(limit=10_000)
        assert len(log) == 150
        assert [e.revision for e in log] == sorted(e.revision for e in log)
        assert store.verify_chain() is None
    finally:
        store.dispose()


def test_unreachable_database_is_store_unavailable_for_every_user_of_the_helper():
    """Policy store, API keys and decision log share `transaction`: a lost database is a 503."""
    from rolegate.errors import StoreUnavailable
    from rolegate.store.db import transaction

    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    try:
        for what in ("policy store", "API key store", "decision log"):
            with (
                pytest.raises(StoreUnavailable) as info,
                transaction(engine, write=False, what=what),
            ):
                pass
            assert info.value.http_status == 503
            assert info.value.message.startswith(f"{what} unavailable")
    finally:
        engine.dispose()
