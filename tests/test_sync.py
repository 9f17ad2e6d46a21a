"""Keeping a worker at the store's revision: incremental refresh, poll, LISTEN/NOTIFY, min_revision,
request ids and readiness fields."""

from __future__ import annotations

import json
import logging

import pytest
import sqlalchemy as sa
from conftest import serve_app
from scaleout import dedicated_database, wait_for

from rolegate.api import create_app
from rolegate.api.health import STORE_RELOAD_FAILED
from rolegate.core import Rolegate
from rolegate.errors import StoreUnavailable
from rolegate.logs import JsonFormatter, request_id_from, request_id_var
from rolegate.store import ChangeSet, PolicyStore
from rolegate.store.db import NOTIFY_CHANNEL, casbin_rule, policy_state
from rolegate.sync import PolicySync

GRANT = ("p", "frank", "globex", "/reports/*", "read", "allow")


@pytest.fixture
def writer(settings):
    """Another process's view of the same store (writes do not touch `core`)."""
    store = PolicyStore.from_url(settings.database_url)
    yield store
    store.dispose()


def record_reloads(core: Rolegate) -> list[tuple[int, int, str]]:
    seen: list[tuple[int, int, str]] = []
    core.reload_listeners.append(lambda old, new, kind: seen.append((old, new, kind)))
    return seen


# --------------------------------------------------------------------------- refresh


def test_refresh_rereads_only_the_changed_orgs(core, writer, monkeypatch):
    acme_index = core.engine.snapshot.domains["acme"]
    monkeypatch.setattr(core.store, "load_all", lambda **_: pytest.fail("full load"))
    reloads = record_reloads(core)
    before = core.engine.revision

    revision = writer.apply(ChangeSet(added=[GRANT]), actor="test")

    assert core.refresh() is True
    assert core.engine.revision == revision == before + 1
    assert GRANT in core.engine.snapshot.rules("globex")
    assert core.engine.snapshot.domains["acme"] is acme_index  # untouched org not re-indexed
    assert reloads == [(before, revision, "incremental")]
    assert core.refresh() is False  # nothing new: nothing swapped


def test_refresh_catches_up_several_revisions_at_once_and_removals(core, writer):
    reloads = record_reloads(core)
    start = core.engine.revision
    writer.apply(ChangeSet(added=[GRANT]), actor="test")
    writer.apply(ChangeSet(removed=[("g", "bob", "viewer", "globex")]), actor="test")
    last = writer.apply(ChangeSet(added=[("g", "zoe", "viewer", "initech")]), actor="test")

    assert core.refresh()
    stored = sorted(writer.load_all()[1])
    assert sorted(core.engine.snapshot.rules()) == stored
    assert reloads == [(start, last, "incremental")]
    assert core.is_allowed("zoe", "initech", "/projects/1", "read").allowed
    assert not core.engine.snapshot.is_member("bob", "globex")


def test_a_gap_the_change_log_cannot_explain_means_a_full_load(core, settings):
    reloads = record_reloads(core)
    engine = sa.create_engine(settings.database_url)
    with engine.begin() as conn:  # another tool writes rules and the revision, not the log
        conn.execute(sa.insert(casbin_rule).values(ptype="g", v0="zoe", v1="admin", v2="acme"))
        conn.execute(sa.update(policy_state).values(revision=policy_state.c.revision + 1))
    engine.dispose()

    assert core.refresh()
    assert reloads[-1][2] == "full"
    assert core.is_allowed("zoe", "acme", "/projects/1", "delete").allowed


def test_too_many_changes_mean_a_full_load(core, writer, monkeypatch):
    monkeypatch.setattr("rolegate.core.MAX_INCREMENTAL_ENTRIES", 1)
    reloads = record_reloads(core)
    writer.apply(ChangeSet(added=[GRANT, ("g", "zoe", "viewer", "acme")]), actor="test")
    assert core.refresh()
    assert reloads[-1][2] == "full"
    assert GRANT in core.engine.snapshot.rules("globex")


def test_a_store_behind_the_worker_is_loaded_whole(core, settings):
    """Restored from an older backup: the store's revision went down."""
    engine = sa.create_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(sa.delete(casbin_rule).where(casbin_rule.c.v0 == "alice"))
        conn.execute(sa.update(policy_state).values(revision=0))
    engine.dispose()
    assert core.refresh()
    assert core.engine.revision == 0
    assert not core.is_allowed("alice", "acme", "/projects/1", "delete").allowed


def test_a_known_target_revision_reads_nothing(core, monkeypatch):
    monkeypatch.setattr(core.store, "load_changes", lambda *a, **k: pytest.fail("read"))
    assert core.refresh(target=core.engine.revision) is False
    assert core.refresh(target=0) is False


def test_an_unreachable_store_keeps_the_snapshot_and_marks_it_stale(core, writer, monkeypatch):
    def down(*_args, **_kwargs):
        raise StoreUnavailable("policy store unavailable: connection refused")

    snapshot = core.engine.snapshot
    monkeypatch.setattr(core.store, "load_changes", down)
    writer.apply(ChangeSet(added=[GRANT]), actor="test")
    assert core.refresh() is False
    assert core.engine.snapshot is snapshot
    assert core.stale and "connection refused" in core.last_reload_error
    monkeypatch.undo()
    assert core.refresh()
    assert not core.stale and core.last_reload_error is None and core.lag == 0


def test_the_poll_alone_keeps_a_sqlite_worker_current(settings, writer):
    core = Rolegate.from_settings(settings.replace(poll_interval=0.05))
    core.start(sync_policies=True)
    try:
        core.start_sync()
        assert core.sync.listen is False  # SQLite: no LISTEN/NOTIFY
        revision = writer.apply(ChangeSet(added=[GRANT]), actor="test")
        wait_for(lambda: core.engine.revision == revision)
    finally:
        core.close()
    assert core.sync is None


# --------------------------------------------------------------------------- min_revision


@pytest.fixture
def quiet_live(make_live_server, settings):
    """A live server whose worker does not poll (only min_revision makes it catch up)."""
    return make_live_server(settings.replace(poll_interval=0, min_revision_wait=0.3))


def test_min_revision_gives_read_your_writes(quiet_live, writer):
    live = quiet_live
    assert not live.check("frank", "globex", "/reports/q1", "read").body["allowed"]
    revision = writer.apply(ChangeSet(added=[GRANT]), actor="test")
    stale = live.check("frank", "globex", "/reports/q1", "read")
    assert stale.body["allowed"] is False and stale.body["revision"] == revision - 1
    fresh = live.check("frank", "globex", "/reports/q1", "read", min_revision=revision)
    assert fresh.status == 200, fresh.text
    assert fresh.body["allowed"] is True and fresh.body["revision"] == revision


def test_a_revision_the_store_does_not_have_is_refused_at_once(quiet_live):
    live = quiet_live
    ahead = live.core.engine.revision + 5
    response = live.check("alice", "acme", "/projects/1", "read", min_revision=ahead)
    assert response.status == 400
    assert response.body["error"]["code"] == "revision_ahead"
    assert str(ahead) in response.body["error"]["message"]


@pytest.mark.parametrize("value", ["3", -1, True, 1.5, 2**63])
def test_min_revision_must_be_a_revision_number(quiet_live, value):
    response = quiet_live.check("alice", "acme", "/projects/1", "read", min_revision=value)
    assert response.status == 400
    assert "min_revision" in response.body["error"]["message"]


def test_batch_min_revision_at_top_level_and_per_check(quiet_live, writer):
    live = quiet_live
    revision = writer.apply(ChangeSet(added=[GRANT]), actor="test")
    check = {"resource": "/reports/q1", "action": "read"}
    headers = live.auth("frank", "globex")
    top = live.client.post(
        "/v1/check/batch", {"checks": [check], "min_revision": revision}, headers=headers
    )
    assert top.status == 200 and top.body["revision"] == revision
    assert top.body["results"][0]["allowed"] is True
    ahead = {**check, "min_revision": revision + 3}
    refused = live.client.post("/v1/check/batch", {"checks": [check, ahead]}, headers=headers)
    assert refused.status == 400 and refused.body["error"]["code"] == "revision_ahead"


# --------------------------------------------------------------------------- readiness, ids


def test_readyz_reports_revision_lag_and_staleness(quiet_live, writer, monkeypatch):
    live = quiet_live
    body = live.client.get("/readyz").body
    assert body["ready"] is True and body["stale"] is False
    assert body["revision"] == live.core.engine.revision
    assert body["engine_mode"] in ("fast", "casbin")
    assert isinstance(body["worker"], int)

    writer.apply(ChangeSet(added=[GRANT]), actor="test")
    live.core.note_store_revision(writer.revision())  # as a notification would
    assert live.client.get("/readyz").body["lag"] == 1

    monkeypatch.setattr(
        live.core.store,
        "load_changes",
        lambda *a, **k: (_ for _ in ()).throw(StoreUnavailable("down")),
    )
    live.core.refresh()
    down = live.client.get("/readyz")
    assert down.status == 200  # decisions go on from memory
    assert down.body["stale"] is True and down.body["last_reload_error"] == STORE_RELOAD_FAILED


def test_request_id_is_honoured_echoed_or_generated(live):
    given = live.client.get("/healthz", headers={"X-Request-ID": "gw-42.a:b"})
    assert given.headers["x-request-id"] == "gw-42.a:b"
    generated = live.client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    for bad in ("x" * 129, "id with spaces", "ünï", "-leading-dash"):
        echoed = live.client.get("/healthz", headers={"X-Request-ID": bad}).headers
        assert echoed["x-request-id"] != bad and len(echoed["x-request-id"]) == 32
    assert int(given.headers["x-rolegate-worker"]) > 0
    assert int(given.headers["x-rolegate-revision"]) == live.core.engine.revision


def test_json_log_lines_carry_the_request_id():
    record = logging.LogRecord("rolegate.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    record.status = 201
    token = request_id_var.set(request_id_from("req-1"))
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["message"] == "hello you" and line["request_id"] == "req-1"
    assert line["status"] == 201 and line["level"] == "INFO" and "ts" in line


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def pg_url():
    with dedicated_database("sync") as url:
        yield url


def test_a_notification_brings_every_listening_worker_up_to_date(settings, pg_url):
    settings = settings.replace(database_url=pg_url, poll_interval=0)  # the listener alone
    cores = [Rolegate.from_settings(settings) for _ in range(2)]
    cores[0].start(sync_policies=True)
    cores[1].start()
    writer = PolicyStore.from_url(pg_url)
    try:
        for core in cores:
            core.start_sync()
        wait_for(lambda: all(core.sync.listening for core in cores))
        reloads = [record_reloads(core) for core in cores]
        revision = writer.apply(ChangeSet(added=[GRANT]), actor="test")
        wait_for(lambda: all(core.engine.revision == revision for core in cores))
        assert all(seen == [(revision - 1, revision, "incremental")] for seen in reloads)
        assert all(core.sync.notifications >= 1 for core in cores)

        with writer.engine.begin() as conn:  # junk on the channel is ignored
            conn.execute(sa.text("SELECT pg_notify(:c, 'junk')"), {"c": NOTIFY_CHANNEL})
        second = writer.apply(ChangeSet(removed=[GRANT]), actor="test")
        wait_for(lambda: all(core.engine.revision == second for core in cores))
        assert all(GRANT not in core.engine.snapshot.rules("globex") for core in cores)
    finally:
        writer.dispose()
        for core in cores:
            core.close()


def test_create_app_starts_and_close_stops_the_listener(settings, pg_url):
    settings = settings.replace(database_url=pg_url, poll_interval=0)
    core = Rolegate.from_settings(settings)
    core.start(sync_policies=True)
    app = create_app(core=core)
    server, _ = serve_app(app)
    try:
        wait_for(lambda: core.sync is not None and core.sync.listening)
    finally:
        server.shutdown()
        sync = core.sync
        core.close()
    assert not sync.running and not sync.listening


def test_the_store_change_feed_yields_each_committed_revision(pg_url):
    """The seam `rolegate.store.feed`: a subscription hears the revision of every commit."""
    store = PolicyStore.from_url(pg_url)
    try:
        feed = store.change_feed()
        assert feed is not None
        with feed.subscribe() as subscription:
            revision = store.apply(ChangeSet(added=[GRANT]), actor="test")
            heard: list[int | None] = []
            for _ in range(5):
                heard.extend(subscription.wait(1.0))
                if revision in heard:
                    break
        assert revision in heard
    finally:
        store.dispose()


def test_a_sqlite_store_has_no_feed_and_sync_only_polls(core):
    assert core.store.change_feed() is None
    assert PolicySync.for_core(core).listen is False
