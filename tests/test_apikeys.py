"""Scoped API keys over real HTTP: create once, authenticate as `apikey:<id>`, revoke, expire."""

from __future__ import annotations

import logging
import os
import stat
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from scaleout import wait_for

from rolegate.apikeys import SECRET_FILE, ApiKeyStore, api_keys, server_key
from rolegate.errors import AuthenticationError, ConfigError
from rolegate.store import ChangeSet


@pytest.fixture
def live(store_url, make_live_server, settings):
    return make_live_server(settings.replace(database_url=store_url))


@pytest.fixture
def sqlite_live(make_live_server, settings):
    return make_live_server(settings)


def create_key(live, roles, *, who=("alice", "acme"), org="acme", **extra):
    body = {"name": "deploy bot", "roles": roles, **extra}
    return live.client.post(f"/v1/orgs/{org}/api-keys", body, headers=live.auth(*who))


def check_with(live, headers, resource="/projects/1", action="read", **extra):
    return live.client.post(
        "/v1/check", {"resource": resource, "action": action, **extra}, headers=headers
    )


def key_header(key: str) -> dict[str, str]:
    return {"Authorization": f"ApiKey {key}"}


def error_code(response) -> str:
    return response.body["error"]["code"]


def test_key_is_shown_once_and_acts_with_exactly_its_roles(live):
    created = create_key(live, ["editor"])
    assert created.status == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    key, key_id = created.body["key"], created.body["id"]
    assert key.startswith(f"rgk_{key_id}_")
    assert created.body["roles"] == ["editor"] and created.body["state"] == "active"

    for headers in (key_header(key), {"X-API-Key": key}):
        response = check_with(live, headers, "/projects", "create")
        assert response.status == 200, response.text
        assert response.body["allowed"] is True
        assert response.body["subject"] == f"apikey:{key_id}"
        assert response.body["org"] == "acme"
        assert check_with(live, headers, "/projects/1", "delete").body["allowed"] is False
    # the key's org is authoritative
    response = check_with(live, key_header(key), org="globex")
    assert (response.status, error_code(response)) == (403, "org_mismatch")

    listing = live.client.get("/v1/orgs/acme/api-keys", headers=live.auth("alice", "acme"))
    assert listing.status == 200
    assert [k["id"] for k in listing.body["api_keys"]] == [key_id]
    assert key.split("_", 2)[2] not in listing.text
    assert "key" not in listing.body["api_keys"][0]
    # the roles are ordinary rules, visible to audit and who-can
    assert ("g", f"apikey:{key_id}", "editor", "acme") in live.core.engine.snapshot.rules("acme")


def test_only_a_hash_is_stored(live):
    created = create_key(live, ["viewer"])
    secret = created.body["key"].split("_", 2)[2]
    with live.core.store.engine.connect() as conn:
        row = conn.execute(sa.select(api_keys)).one()
    assert secret not in " ".join(str(value) for value in row)
    assert len(row.key_hash) == 64


def test_revoking_a_key_in_use_refuses_the_next_request(live):
    created = create_key(live, ["viewer"])
    key, key_id = created.body["key"], created.body["id"]
    assert check_with(live, key_header(key)).body["allowed"] is True
    revoked = live.client.request(
        "DELETE", f"/v1/orgs/acme/api-keys/{key_id}", headers=live.auth("alice", "acme")
    )
    assert revoked.status == 200, revoked.text
    assert revoked.body["state"] == "revoked"
    response = check_with(live, key_header(key))
    assert (response.status, error_code(response)) == (401, "api_key_revoked")
    assert f"apikey:{key_id}" not in {rule[1] for rule in live.core.engine.snapshot.rules("acme")}
    listing = live.client.get("/v1/orgs/acme/api-keys", headers=live.auth("alice", "acme"))
    assert listing.body["api_keys"][0]["state"] == "revoked"


def test_revocation_reaches_another_worker_with_its_revision(make_live_server, settings):
    first = make_live_server(settings)
    second = make_live_server(settings.replace(poll_interval=0.1), sync_policies=False)
    key = create_key(first, ["viewer"]).body
    assert check_with(second, key_header(key["key"])).status == 200  # answered from memory now
    revoked = first.client.request(
        "DELETE", f"/v1/orgs/acme/api-keys/{key['id']}", headers=first.auth("alice", "acme")
    )
    response = check_with(first, key_header(key["key"]))  # the writer's worker: at once
    assert (response.status, error_code(response)) == (401, "api_key_revoked")
    wait_for(lambda: second.core.engine.revision >= revoked.body["revision"])
    response = check_with(second, key_header(key["key"]))
    assert (response.status, error_code(response)) == (401, "api_key_revoked")


def test_expired_key_is_refused(live):
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = create_key(live, ["viewer"], expires_at=soon)
    assert created.status == 201, created.text
    key = created.body["key"]
    assert check_with(live, key_header(key)).status == 200
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat(timespec="microseconds")
    with live.core.store.engine.begin() as conn:  # time passes
        conn.execute(sa.update(api_keys).values(expires_at=past))
    live.core.api_keys.reload_index()  # as every revision change and the poll do
    response = check_with(live, key_header(key))
    assert (response.status, error_code(response)) == (401, "api_key_expired")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "ApiKey rgk_0123456789abcdef_" + "A" * 43},
        {"Authorization": "ApiKey nonsense"},
        {"Authorization": "ApiKey "},
        {"X-API-Key": "rgk_zz_secret"},
        {"X-API-Key": ""},
    ],
)
def test_unknown_or_malformed_keys_are_401(sqlite_live, headers):
    response = check_with(sqlite_live, headers)
    assert (response.status, error_code(response)) == (401, "invalid_api_key")


def test_wrong_secret_and_two_credentials(sqlite_live):
    live = sqlite_live
    key = create_key(live, ["viewer"]).body["key"]
    prefix, key_id, secret = key.split("_", 2)
    forged = f"{prefix}_{key_id}_{'B' * len(secret)}"
    response = check_with(live, key_header(forged))
    assert (response.status, error_code(response)) == (401, "invalid_api_key")
    both = {**live.auth("bob", "acme"), "X-API-Key": key}
    response = check_with(live, both)
    assert (response.status, error_code(response)) == (400, "invalid_request")


def test_secrets_never_reach_the_logs(sqlite_live, caplog):
    live = sqlite_live
    caplog.set_level(logging.DEBUG)
    created = create_key(live, ["viewer"]).body
    secret = created["key"].split("_", 2)[2]
    check_with(live, key_header(created["key"]))
    check_with(live, key_header(created["key"][:-2] + "xx"))
    live.client.request(
        "DELETE", f"/v1/orgs/acme/api-keys/{created['id']}", headers=live.auth("alice", "acme")
    )
    check_with(live, key_header(created["key"]))
    assert secret not in caplog.text
    assert created["id"] in caplog.text


def test_key_creation_respects_escalation_and_authorization(live):
    response = create_key(live, ["viewer"], who=("bob", "acme"))
    assert (response.status, error_code(response)) == (403, "forbidden")
    response = create_key(live, ["viewer"], who=("alice", "acme"), org="globex")
    assert (response.status, error_code(response)) == (403, "org_mismatch")
    response = create_key(live, ["nope"])
    assert (response.status, error_code(response)) == (404, "unknown_role")
    live.core.store.apply(
        ChangeSet(added=[("p", "billing", "acme", "/billing", "manage", "allow")]),
        actor="cli:test",
    )
    live.core.refresh()
    response = create_key(live, ["billing"])
    assert (response.status, error_code(response)) == (403, "privilege_escalation")
    assert live.core.api_keys.list("acme") == []


@pytest.mark.parametrize(
    "extra",
    [
        {"expires_at": "2020-01-01T00:00:00Z"},
        {"expires_at": "2999-01-01T00:00:00"},
        {"expires_at": "tomorrow"},
        {"scope": "all"},
        {"name": "x" * 300},
        {"name": "bot\n"},
        {"roles": []},
    ],
)
def test_bad_key_requests(sqlite_live, extra):
    response = create_key(sqlite_live, extra.pop("roles", ["viewer"]), **extra)
    assert (response.status, error_code(response)) == (400, "invalid_request"), response.text


def test_admin_key_manages_members_as_itself(sqlite_live):
    live = sqlite_live
    key = create_key(live, ["admin"]).body
    response = live.client.request(
        "PUT", "/v1/orgs/acme/members/dave", {"roles": ["editor"]}, headers=key_header(key["key"])
    )
    assert response.status == 200, response.text
    actors = {
        entry.actor
        for entry in live.core.store.changes(since_revision=response.body["revision"] - 1)
    }
    assert actors == {f"apikey:{key['id']}"}
    # keys are not members: they neither show in the member list nor count as admins
    members = live.client.get("/v1/orgs/acme/members", headers=live.auth("alice", "acme")).body
    assert all(not m["subject"].startswith("apikey:") for m in members["members"])
    demote = live.client.request(
        "PUT", "/v1/orgs/acme/members/alice", {"roles": ["viewer"]}, headers=key_header(key["key"])
    )
    assert (demote.status, error_code(demote)) == (409, "last_admin")
    # and the members endpoints do not edit keys
    response = live.client.request(
        "DELETE", f"/v1/orgs/acme/members/apikey:{key['id']}", headers=live.auth("alice", "acme")
    )
    assert (response.status, error_code(response)) == (400, "invalid_request")


def test_revoke_unknown_or_foreign_key_is_404(sqlite_live):
    live = sqlite_live
    key = create_key(live, ["viewer"], who=("erin", "globex"), org="globex").body
    response = live.client.request(
        "DELETE", f"/v1/orgs/acme/api-keys/{key['id']}", headers=live.auth("alice", "acme")
    )
    assert (response.status, error_code(response)) == (404, "not_found")
    assert check_with(live, key_header(key["key"])).status == 200


def test_server_key_is_generated_once_with_mode_600(settings, tmp_path):
    first = server_key(settings)
    assert server_key(settings) == first
    path = tmp_path / "data" / SECRET_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    configured = settings.replace(api_key_secret="k" * 40)
    assert server_key(configured) == b"k" * 40
    with pytest.raises(ConfigError):
        server_key(settings.replace(api_key_secret="short"))


def test_keys_from_another_server_key_do_not_verify(core, settings):
    store = core.api_keys
    _, key = store.insert(
        store.new_id(), org="acme", name="n", roles=["viewer"], created_by="t", expires_at=None
    )
    assert store.authenticate(key).subject.startswith("apikey:")
    other = ApiKeyStore(core.store.api_key_rows(), b"o" * 40)
    with pytest.raises(AuthenticationError):
        other.authenticate(key)


def test_key_row_and_role_links_commit_together(sqlite_live, monkeypatch):
    """A key row that cannot be written leaves no role links and no new revision behind."""
    from rolegate.apikeys import ApiKeyStore

    store = sqlite_live.core.store
    before = store.revision()

    def broken_insert(conn, row):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ApiKeyStore, "insert_row", staticmethod(broken_insert))
    response = create_key(sqlite_live, ["editor"])
    assert response.status == 500
    assert store.revision() == before
    _, rules = store.load_all()
    assert not [rule for rule in rules if rule[1].startswith("apikey:")]
    assert sqlite_live.core.api_keys.list("acme") == []


def test_revocation_and_link_removal_are_one_revision(sqlite_live):
    created = create_key(sqlite_live, ["viewer"])
    key_id = created.body["id"]
    revoked = sqlite_live.client.request(
        "DELETE", f"/v1/orgs/acme/api-keys/{key_id}", headers=sqlite_live.auth("alice", "acme")
    )
    assert revoked.status == 200, revoked.text
    assert revoked.body["revision"] == created.body["revision"] + 1
    assert revoked.body["state"] == "revoked"
    _, rules = sqlite_live.core.store.load_all()
    assert not [rule for rule in rules if rule[1] == f"apikey:{key_id}"]
