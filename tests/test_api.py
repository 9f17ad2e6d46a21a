"""The decision API over real HTTP on 127.0.0.1, with the sample (seed) policies."""

from __future__ import annotations

import time

import jwt
import pytest

from rolegate.core import MAX_BATCH


def allowed(response) -> bool:
    assert response.status == 200, response.text
    return response.body["allowed"]


# -- the seed scenario ------------------------------------------------------------------------


def test_editor_creates_but_cannot_delete_a_project(live):
    assert allowed(live.check("bob", "acme", "/projects", "create"))
    assert allowed(live.check("bob", "acme", "/projects/42", "update"))
    assert not allowed(live.check("bob", "acme", "/projects/42", "delete"))


def test_admin_deletes_a_project(live):
    assert allowed(live.check("alice", "acme", "/projects/42", "delete"))


def test_viewer_reads_only(live):
    assert allowed(live.check("carol", "acme", "/projects/42", "read"))
    assert allowed(live.check("carol", "acme", "/documents/7", "read"))
    for resource, action in [
        ("/projects", "create"),
        ("/projects/42", "update"),
        ("/projects/42", "delete"),
        ("/documents", "create"),
        ("/members", "read"),
    ]:
        assert not allowed(live.check("carol", "acme", resource, action)), (resource, action)


def test_document_updated_by_owner_and_admin_but_not_another_editor(live):
    assert allowed(live.check("bob", "acme", "/documents/7", "update", owner="bob"))
    assert not allowed(live.check("bob", "acme", "/documents/7", "update", owner="dave"))
    assert not allowed(live.check("bob", "acme", "/documents/7", "update"))
    assert allowed(live.check("alice", "acme", "/documents/7", "update", owner="dave"))


def test_two_org_user_gets_each_orgs_role_and_nothing_across(live):
    assert allowed(live.check("bob", "acme", "/projects", "create"))
    assert not allowed(live.check("bob", "globex", "/projects", "create"))
    assert allowed(live.check("bob", "globex", "/projects/1", "read"))
    # a token without an org may name either org and gets that org's role
    assert allowed(live.check("bob", None, "/projects", "create", org="acme"))
    assert not allowed(live.check("bob", None, "/projects", "create", org="globex"))
    # alice is only in acme
    assert not allowed(live.check("alice", "globex", "/projects/1", "read"))


def test_token_org_is_authoritative(live):
    response = live.check("bob", "acme", "/projects/1", "read", org="globex")
    assert response.status == 403
    assert response.body["error"]["code"] == "org_mismatch"
    assert allowed(live.check("bob", "acme", "/projects/1", "read", org="acme"))


def test_org_required_when_token_has_none(live):
    response = live.check("bob", None, "/projects/1", "read")
    assert response.status == 400
    assert "org" in response.body["error"]["message"]


def test_org_specific_deny_rule_overrides_inherited_allow(live):
    assert allowed(live.check("frank", "globex", "/documents/7", "read"))
    response = live.check("frank", "globex", "/documents/finance/q3", "read", explain=True)
    assert response.body["allowed"] is False
    assert (
        response.body["reason"]["rule"] == "p, contractor, globex, /documents/finance/*, read, deny"
    )
    assert response.body["reason"]["path"] == "frank -> contractor"


def test_response_shape_and_explain_of_allow(live):
    response = live.check("bob", "acme", "/projects/42", "read", explain=True)
    body = response.body
    assert body["allowed"] is True
    assert (body["subject"], body["org"], body["resource"], body["action"]) == (
        "bob",
        "acme",
        "/projects/42",
        "read",
    )
    assert body["revision"] == live.core.engine.revision >= 1
    assert len(body["decision_id"]) == 32
    assert body["reason"]["rule"] == "p, viewer, *, /projects/*, read, allow"
    assert body["reason"]["path"] == "bob -> editor -> member -> viewer"


def test_owner_path_in_explain(live):
    body = live.check("dave", "acme", "/documents/7", "update", owner="dave", explain=True).body
    assert body["allowed"] is True
    assert body["reason"]["path"] == "dave -> owner"


def test_deny_explains_no_rule_matched(live):
    body = live.check("carol", "acme", "/projects/1", "delete", explain=True).body
    assert body["allowed"] is False
    assert body["reason"]["summary"] == "no rule matched"
    assert body["reason"]["code"] == "no_grant"  # and the nearest ways (tests/test_explain.py)


def test_unknown_subject_and_unknown_org_are_denied(live):
    assert not allowed(live.check("mallory", "acme", "/projects/1", "read"))
    assert not allowed(live.check("alice", "initech", "/projects/1", "read"))


# -- batch ------------------------------------------------------------------------------------


def test_batch_answers_in_order_against_one_revision(live):
    checks = [
        {"resource": "/projects/1", "action": "delete"},
        {"resource": "/projects/1", "action": "read"},
        {"resource": "/documents/2", "action": "update", "owner": "bob"},
        {"resource": "/documents/2", "action": "update", "owner": "alice", "explain": True},
    ]
    response = live.client.post(
        "/v1/check/batch", {"checks": checks}, headers=live.auth("bob", "acme")
    )
    assert response.status == 200, response.text
    assert [item["allowed"] for item in response.body["results"]] == [False, True, True, False]
    assert [item["resource"] for item in response.body["results"]] == [
        c["resource"] for c in checks
    ]
    assert response.body["revision"] == live.core.engine.revision
    assert "reason" in response.body["results"][3] and "reason" not in response.body["results"][0]


def test_batch_limits(live):
    auth = live.auth("bob", "acme")
    item = {"resource": "/projects/1", "action": "read"}
    ok = live.client.post("/v1/check/batch", {"checks": [item] * MAX_BATCH}, headers=auth)
    assert ok.status == 200 and len(ok.body["results"]) == MAX_BATCH
    too_many = live.client.post(
        "/v1/check/batch", {"checks": [item] * (MAX_BATCH + 1)}, headers=auth
    )
    assert too_many.status == 413
    assert too_many.body["error"]["code"] == "payload_too_large"
    empty = live.client.post("/v1/check/batch", {"checks": []}, headers=auth)
    assert empty.status == 400
    bad_item = live.client.post(
        "/v1/check/batch", {"checks": [item, {"resource": "", "action": "read"}]}, headers=auth
    )
    assert bad_item.status == 400
    assert "checks[1].resource" in bad_item.body["error"]["message"]


# -- bad input: one test per error code ---------------------------------------------------------


def assert_error(response, status: int, code: str):
    assert response.status == status, response.text
    assert response.body == {"error": {"code": code, "message": response.body["error"]["message"]}}
    assert response.body["error"]["message"]
    assert "Traceback" not in response.text


def test_missing_token(live):
    response = live.client.post("/v1/check", {"resource": "/p", "action": "read"})
    assert_error(response, 401, "missing_token")
    assert response.headers["www-authenticate"].startswith("Bearer")
    basic = live.client.post(
        "/v1/check", {"resource": "/p", "action": "read"}, headers={"Authorization": "Basic abc"}
    )
    assert_error(basic, 401, "missing_token")


def test_invalid_token(live):
    response = live.client.post(
        "/v1/check", {"resource": "/p", "action": "read"}, headers={"Authorization": "Bearer x.y.z"}
    )
    assert_error(response, 401, "invalid_token")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_token_expired(live):
    token = jwt.encode(
        {"sub": "bob", "org": "acme", "exp": int(time.time()) - 3600}, live.settings.jwt_secret
    )
    response = live.client.post(
        "/v1/check",
        {"resource": "/p", "action": "read"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert_error(response, 401, "token_expired")


def test_issuer_and_audience_checked(make_live_server, settings):
    server = make_live_server(
        settings.replace(jwt_issuer="https://id.example", jwt_audience=("rolegate",))
    )
    exp = int(time.time()) + 600
    good = {"sub": "bob", "org": "acme", "exp": exp, "iss": "https://id.example", "aud": "rolegate"}

    def call(claims):
        token = jwt.encode(claims, settings.jwt_secret)
        return server.client.post(
            "/v1/check",
            {"resource": "/projects/1", "action": "read"},
            headers={"Authorization": f"Bearer {token}"},
        )

    assert allowed(call(good))
    assert_error(call({**good, "iss": "https://evil.example"}), 401, "invalid_issuer")
    assert_error(call({**good, "aud": "someone-else"}), 401, "invalid_audience")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"action": "read"}, "resource: required"),
        ({"resource": "/p", "action": 3}, "action: expected a string"),
        ({"resource": "", "action": "read"}, "resource: must not be empty"),
        ({"resource": "/p\n", "action": "read"}, "resource: contains control characters"),
        ({"resource": "/p" + "x" * 2048, "action": "read"}, "resource: longer than 2048"),
        ({"resource": "/p", "action": "read", "explain": "yes"}, "explain"),
        ({"resource": "/p", "action": "read", "colour": "red"}, "colour: unknown field"),
        ({"resource": "/p", "action": "read", "owner": ""}, "owner: must not be empty"),
        (["not", "an", "object"], "expected a JSON object"),
    ],
)
def test_invalid_request_fields(live, body, fragment):
    response = live.client.post("/v1/check", body, headers=live.auth("bob", "acme"))
    assert_error(response, 400, "invalid_request")
    assert fragment in response.body["error"]["message"]


def test_malformed_json(live):
    response = live.client.post(
        "/v1/check",
        raw=b'{"resource": ',
        headers={**live.auth("bob", "acme"), "Content-Type": "application/json"},
    )
    assert_error(response, 400, "invalid_request")


def test_deeply_nested_json(live):
    response = live.client.post(
        "/v1/check",
        raw=b"[" * 100000 + b"]" * 100000,
        headers={**live.auth("bob", "acme"), "Content-Type": "application/json"},
    )
    assert_error(response, 400, "invalid_request")


def test_authorization_header_over_8kb(live):
    response = live.client.post(
        "/v1/check",
        {"resource": "/p", "action": "read"},
        headers={"Authorization": "Bearer " + "a" * 9000},
    )
    assert_error(response, 400, "invalid_request")


def test_not_json(live):
    response = live.client.post(
        "/v1/check",
        raw=b"resource=/p",
        headers={**live.auth("bob", "acme"), "Content-Type": "text/plain"},
    )
    assert_error(response, 415, "unsupported_media_type")


def test_body_too_large(live):
    response = live.client.post(
        "/v1/check",
        raw=b'{"resource": "' + b"a" * (5 * 1024 * 1024) + b'"}',
        headers={**live.auth("bob", "acme"), "Content-Type": "application/json"},
    )
    assert_error(response, 413, "payload_too_large")


def test_unknown_route_and_method(live):
    assert_error(live.client.get("/v1/nope"), 404, "not_found")
    assert_error(live.client.get("/v1/check"), 405, "method_not_allowed")


# -- settings that change who gets what -----------------------------------------------------------


def test_default_role_for_non_members(make_live_server, settings):
    strict = make_live_server(settings)
    assert not allowed(strict.check("mallory", "acme", "/projects/1", "read"))
    lenient = make_live_server(settings.replace(default_role="viewer"), sync_policies=False)
    assert allowed(lenient.check("mallory", "acme", "/projects/1", "read"))
    assert not allowed(lenient.check("mallory", "acme", "/projects", "create"))
    # members keep exactly their own roles
    assert not allowed(lenient.check("frank", "globex", "/documents/finance/x", "read"))


def test_token_roles_only_count_when_trusted(make_live_server, settings):
    untrusted = make_live_server(settings)
    headers = untrusted.auth("zoe", "acme", roles=["admin"])
    body = {"resource": "/projects/1", "action": "delete"}
    assert not allowed(untrusted.client.post("/v1/check", body, headers=headers))
    trusted = make_live_server(settings.replace(trust_token_roles=True), sync_policies=False)
    headers = trusted.auth("zoe", "acme", roles=["admin"])
    assert allowed(trusted.client.post("/v1/check", body, headers=headers))
    # trusted roles apply in the token's org only
    headers = trusted.auth("zoe", None, roles=["admin"])
    assert not allowed(trusted.client.post("/v1/check", {**body, "org": "acme"}, headers=headers))


def test_role_change_applies_on_next_check(live):
    from rolegate.store import ChangeSet

    assert not allowed(live.check("carol", "acme", "/projects", "create"))
    live.core.store.apply(
        ChangeSet(
            added=(("g", "carol", "editor", "acme"),), removed=(("g", "carol", "viewer", "acme"),)
        ),
        actor="test",
    )
    assert live.core.refresh()
    assert allowed(live.check("carol", "acme", "/projects", "create"))


# -- health and documents ---------------------------------------------------------------


def test_health_and_readiness(live):
    assert live.client.get("/healthz").body == {"status": "ok"}
    ready = live.client.get("/readyz")
    assert ready.status == 200
    assert ready.body["ready"] is True
    assert ready.body["revision"] == live.core.engine.revision
    assert ready.body["rules"] == live.core.engine.snapshot.rule_count > 20
    assert ready.body["engine_mode"] == "fast"


# -- JWKS over HTTP: the key server is real, and its failure never allows -------------------------


def test_jwks_unknown_key_and_key_server_down(make_live_server, settings):
    import json as json_module

    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwks_server import JWKSServer

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = json_module.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    keys = JWKSServer()
    keys.keys = [{**public_jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]
    server = make_live_server(
        settings.replace(jwt_secret=None, jwks_url=keys.url, jwks_timeout=1.0, jwks_cooldown=0)
    )
    claims = {"sub": "bob", "org": "acme", "exp": int(time.time()) + 600}
    body = {"resource": "/projects/1", "action": "read"}

    def call(kid: str):
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
        return server.client.post("/v1/check", body, headers={"Authorization": f"Bearer {token}"})

    assert allowed(call("k1"))
    assert_error(call("k2"), 401, "unknown_key")
    keys.stop()
    assert_error(call("k3"), 503, "key_server_unavailable")


def test_batch_item_that_is_not_an_object_is_named(live):
    response = live.client.post(
        "/v1/check/batch",
        {"checks": [{"resource": "/p", "action": "read"}, 7]},
        headers=live.auth("bob", "acme"),
    )
    assert_error(response, 400, "invalid_request")
    assert response.body["error"]["message"] == "checks[1]: expected a JSON object"
