"""Outages against a real PostgreSQL: the database goes away (a TCP proxy in front of it is
stopped) or its connections are killed (`pg_terminate_backend`). Decisions go on from memory,
writes answer 503, listeners reconnect and catch up, no change is lost or applied twice."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from scaleout import TcpProxy, dedicated_database, terminate_backends, wait_for

from rolegate.core import Rolegate
from rolegate.store import ChangeSet, PolicyStore
from rolegate.sync import PolicySync

GRANTS = [("g", f"user{i}", "viewer", "globex") for i in range(3)]


@pytest.fixture
def pg_url():
    with dedicated_database("failures") as url:
        yield url


@pytest.fixture
def proxy(pg_url):
    target = sa.make_url(pg_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def writer(pg_url):
    store = PolicyStore.from_url(pg_url)
    yield store
    store.dispose()


def record_reloads(core) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    core.reload_listeners.append(lambda old, new, _kind: seen.append((old, new)))
    return seen


def assert_applied_once_in_order(reloads: list[tuple[int, int]], start: int, end: int) -> None:
    """Each swap starts where the previous ended: no revision skipped, none applied twice."""
    assert reloads, "nothing was applied"
    position = start
    for old, new in reloads:
        assert old == position and new > old, reloads
        position = new
    assert position == end


def put_roles(live, subject: str, roles: list[str]):
    return live.client.request(
        "PUT",
        f"/v1/orgs/acme/members/{subject}",
        {"roles": roles},
        headers=live.auth("alice", "acme"),
    )


def test_database_down_decisions_continue_writes_fail_listener_catches_up(
    make_live_server, settings, proxy, pg_url, writer
):
    # The listener alone (no poll): it must notice the outage and catch up by itself.
    live = make_live_server(settings.replace(database_url=proxy.url_for(pg_url), poll_interval=0))
    core = live.core
    wait_for(lambda: core.sync.listening)
    reloads = record_reloads(core)
    start = core.engine.revision

    proxy.stop()
    decision = live.check("alice", "acme", "/projects/1", "delete")
    assert decision.status == 200 and decision.body["allowed"] is True

    refused = put_roles(live, "zoe", ["viewer"])
    assert refused.status == 503, refused.text
    assert refused.body["error"]["code"] == "store_unavailable"

    wait_for(lambda: not core.sync.listening)
    ready = live.client.get("/readyz")
    assert ready.status == 200 and ready.body["ready"] is True and ready.body["stale"] is True

    ahead = live.check("alice", "acme", "/projects/1", "read", min_revision=start + 1)
    assert ahead.status == 503 and ahead.body["error"]["code"] == "revision_unavailable"

    for grant in GRANTS:  # written through another instance while this one is cut off
        end = writer.apply(ChangeSet(added=[grant]), actor="other-instance")
    assert core.engine.revision == start

    proxy.start()
    wait_for(lambda: core.engine.revision == end, timeout=20)
    assert sorted(core.engine.snapshot.rules()) == sorted(writer.load_all()[1])
    assert_applied_once_in_order(reloads, start, end)
    wait_for(lambda: core.sync.listening)
    recovered = live.client.get("/readyz").body
    assert recovered["stale"] is False and recovered["lag"] == 0
    assert core.sync.reconnects >= 1

    accepted = put_roles(live, "zoe", ["viewer"])
    assert accepted.status == 200, accepted.text
    assert accepted.body["revision"] == end + 1


def test_killed_connections_are_replaced_and_the_listener_reconnects(
    make_live_server, settings, pg_url, writer
):
    live = make_live_server(settings.replace(database_url=pg_url, poll_interval=0))
    core = live.core
    wait_for(lambda: core.sync.listening)
    reloads = record_reloads(core)
    start = core.engine.revision
    put_roles(live, "warmup", ["viewer"])  # the pool holds a connection now

    killed = terminate_backends(pg_url, "rolegate")  # pooled connections and the listener
    assert killed >= 2
    wait_for(lambda: core.sync.reconnects >= 1, timeout=20)

    revision = writer.apply(ChangeSet(added=[GRANTS[0]]), actor="other-instance")
    wait_for(lambda: core.engine.revision == revision, timeout=10)

    decision = live.check("user0", "globex", "/projects/1", "read")
    assert decision.status == 200 and decision.body["allowed"] is True
    accepted = put_roles(live, "zoe", ["viewer"])  # the pool replaces its dead connection
    assert accepted.status == 200, accepted.text
    assert_applied_once_in_order(reloads, start, accepted.body["revision"])


def test_the_poll_alone_catches_up_and_survives_an_outage(settings, proxy, pg_url, writer):
    """No notifications at all (as when they are lost): the revision poll is the safety net."""
    core = Rolegate.from_settings(settings.replace(database_url=proxy.url_for(pg_url)))
    core.start(sync_policies=True)
    core.sync = PolicySync(core, poll_interval=0.1, listen=False)
    core.sync.start()
    try:
        reloads = record_reloads(core)
        start = core.engine.revision
        first = writer.apply(ChangeSet(added=[GRANTS[0]]), actor="other-instance")
        wait_for(lambda: core.engine.revision == first)
        proxy.stop()
        wait_for(lambda: core.stale)
        end = writer.apply(ChangeSet(added=[GRANTS[1]]), actor="other-instance")
        proxy.start()
        wait_for(lambda: core.engine.revision == end and not core.stale)
        assert_applied_once_in_order(reloads, start, end)
    finally:
        core.close()


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_black_holed_database_never_holds_a_decision_and_writes_fail_fast(
    make_live_server, settings, proxy, pg_url
):
    """The database stops answering (packets dropped, connections open): token and API-key
    decisions are answered from memory, writes get 503 within seconds, probes stay prompt."""
    live = make_live_server(settings.replace(database_url=proxy.url_for(pg_url), poll_interval=0.5))
    created = live.client.post(
        "/v1/orgs/acme/api-keys",
        {"name": "bot", "roles": ["viewer"]},
        headers=live.auth("alice", "acme"),
    )
    assert created.status == 201, created.text
    key_headers = {"X-API-Key": created.body["key"]}
    body = {"resource": "/projects/1", "action": "read"}
    assert live.client.post("/v1/check", body, headers=key_headers).status == 200

    proxy.hold()
    try:
        writes = []
        writer = threading.Thread(
            target=lambda: writes.append(timed(lambda: put_roles(live, "zoe", ["viewer"])))
        )
        writer.start()
        time.sleep(0.3)  # the write (and the poll) now wait on the database
        for _ in range(8):
            token, token_s = timed(lambda: live.check("alice", "acme", "/projects/1", "delete"))
            assert token.status == 200 and token.body["allowed"] is True and token_s < 1.0
            by_key, key_s = timed(lambda: live.client.post("/v1/check", body, headers=key_headers))
            assert by_key.status == 200 and by_key.body["allowed"] is True and key_s < 1.0
        ready, ready_s = timed(lambda: live.client.get("/readyz"))
        assert ready.status == 200 and ready_s < 1.0
        writer.join(15)
        assert writes, "the write got no answer"
        (refused, refused_s) = writes[0]
        assert refused.status == 503 and refused.body["error"]["code"] == "store_unavailable"
        assert refused_s < 10.0
    finally:
        proxy.release()
    wait_for(lambda: put_roles(live, "zoe", ["viewer"]).status == 200, timeout=20)
