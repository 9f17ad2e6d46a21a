"""/v1/forward-auth over real HTTP: what a gateway sends, what it gets back, and the bypasses."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwks_server import JWKSServer
from shared_server import shared_live_server

from rolegate.config import Settings
from rolegate.errors import ConfigError
from rolegate.forwarding import request_path, resolve_path


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One server for the tests that only read the sample policy (each test may add a key)."""
    with shared_live_server(tmp_path_factory.mktemp("forward-auth")) as server:
        yield server


def ask(server, method: str, uri: str, *, subject="carol", org="acme", pair="forwarded", **extra):
    """The gateway's auth request for `method uri` by `subject` (None: no credential)."""
    headers = dict(extra.pop("headers", {}))
    if subject is not None:
        headers.update(server.auth(subject, org))
    names = {"forwarded": ("X-Forwarded-Method", "X-Forwarded-Uri")}
    names["original"] = ("X-Original-Method", "X-Original-URI")
    method_header, uri_header = names[pair]
    headers[method_header], headers[uri_header] = method, uri
    return server.client.get(extra.pop("path", "/v1/forward-auth"), headers=headers)


def code(response) -> str:
    return response.body["error"]["code"]


def test_allow_carries_the_caller_for_the_upstream(live):
    response = ask(live, "GET", "/projects/1?page=2")
    assert response.status == 200, response.text
    assert response.headers["x-rolegate-subject"] == "carol"
    assert response.headers["x-rolegate-org"] == "acme"
    assert len(response.headers["x-rolegate-decision-id"]) == 32
    assert response.body["resource"] == "/projects/1"  # the query string is not the resource
    assert response.body["action"] == "read"


@pytest.mark.parametrize("pair", ["forwarded", "original"])
def test_method_is_the_action(live, pair):
    assert ask(live, "GET", "/projects/1", pair=pair).status == 200
    assert ask(live, "HEAD", "/projects/1", pair=pair).status == 200
    denied = ask(live, "DELETE", "/projects/1", pair=pair)
    assert denied.status == 403
    assert code(denied) == "denied"
    assert denied.headers["x-rolegate-decision-id"]
    assert ask(live, "PUT", "/projects/1", pair=pair, subject="bob").status == 200  # editor
    assert ask(live, "PATCH", "/projects/1", pair=pair, subject="bob").status == 200
    assert ask(live, "POST", "/projects", pair=pair, subject="bob").status == 200
    assert ask(live, "POST", "/projects", pair=pair).status == 403
    assert ask(live, "DELETE", "/projects/1", pair=pair, subject="alice").status == 200


def test_any_method_of_the_auth_request_is_accepted(live):
    # nginx's auth_request subrequest keeps the client's method; only the header pair counts.
    headers = {**live.auth("carol", "acme"), "X-Original-Method": "GET"}
    headers["X-Original-URI"] = "/projects/1"
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        response = live.client.request(method, "/v1/forward-auth", headers=headers)
        assert response.status == 200, (method, response.text)
        assert response.headers["x-rolegate-subject"] == "carol", method  # decided, not a stock 200
    head = live.client.request("HEAD", "/v1/forward-auth", headers=headers)
    assert head.status == 200
    assert head.headers["x-rolegate-subject"] == "carol"


def test_missing_and_bad_credentials_are_401_with_www_authenticate(live):
    missing = ask(live, "GET", "/projects/1", subject=None)
    assert (missing.status, code(missing)) == (401, "missing_token")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    forged = ask(
        live, "GET", "/projects/1", subject=None, headers={"Authorization": "Bearer a.b.c"}
    )
    assert forged.status == 401
    assert "www-authenticate" in forged.headers
    bad_key = ask(live, "GET", "/projects/1", subject=None, headers={"Authorization": "ApiKey x"})
    assert bad_key.status == 401


def test_api_key_is_a_credential_too(live):
    created = live.client.post(
        "/v1/orgs/acme/api-keys",
        {"name": "gateway-test", "roles": ["viewer"]},
        headers=live.auth("alice", "acme"),
    )
    assert created.status == 201, created.text
    headers = {"Authorization": f"ApiKey {created.body['key']}"}
    allowed = ask(live, "GET", "/projects/1", subject=None, headers=headers)
    assert allowed.status == 200, allowed.text
    assert allowed.headers["x-rolegate-org"] == "acme"
    assert ask(live, "DELETE", "/projects/1", subject=None, headers=headers).status == 403


def test_header_pairs_missing_half_or_disagreeing_are_400(live):
    auth = live.auth("carol", "acme")
    none = live.client.get("/v1/forward-auth", headers=auth)
    assert (none.status, code(none)) == (400, "invalid_request")
    half = live.client.get("/v1/forward-auth", headers={**auth, "X-Forwarded-Method": "GET"})
    assert half.status == 400
    both = {
        **auth,
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Uri": "/projects/1",
        "X-Original-Method": "DELETE",
        "X-Original-URI": "/projects/1",
    }
    disagree = live.client.get("/v1/forward-auth", headers=both)
    assert disagree.status == 400
    assert "disagree" in disagree.body["error"]["message"]
    agree = {**both, "X-Original-Method": "get"}
    assert live.client.get("/v1/forward-auth", headers=agree).status == 200


# frank is a Globex contractor: /documents/* readable, /documents/finance/* denied by a deny rule.
PATH_TRICKS = [
    "/documents/finance/q3",
    "/documents//finance/q3",
    "//documents/finance/q3",
    "/documents/public/../finance/q3",
    "/documents/public/%2e%2e/finance/q3",
    "/documents/public/%2E%2E/finance/q3",
    "/documents/./finance/q3",
    "/documents/%2e/finance/q3",
    "/documents%2Ffinance%2Fq3",
    "/documents/finance/q3?/documents/other",
    "/documents/finance/q3#/documents/other",
    "/documents/finance/./q3",
]


def test_path_tricks_are_decided_on_the_normalised_path(live):
    assert ask(live, "GET", "/documents/public", subject="frank", org="globex").status == 200
    for uri in PATH_TRICKS:
        response = ask(live, "GET", uri, subject="frank", org="globex")
        assert (response.status, code(response)) == (403, "denied"), (uri, response.text)


def test_percent_decoding_happens_once(live):
    response = ask(live, "GET", "/documents/x/%252e%252e/finance/q3", subject="frank", org="globex")
    assert response.status == 200  # a document literally named "%2e%2e", not a parent step
    assert response.body["resource"] == "/documents/x/%2e%2e/finance/q3"


def test_path_parameters_are_dropped(live):
    for uri in (
        "/documents/finance;v=2/q3",
        "/documents;x/finance/q3;y",
        "/documents/a/..;/finance/q3",
    ):
        response = ask(live, "GET", uri, subject="frank", org="globex")
        assert (response.status, code(response)) == (403, "denied"), uri
    allowed = ask(live, "GET", "/documents/public;v=2/q3", subject="frank", org="globex")
    assert allowed.status == 200
    assert allowed.body["resource"] == "/documents/public/q3"


def test_unusable_uris_are_400(live):
    for uri in ["projects/1", "http://evil/projects/1", "/projects/%ff", "/a%00b", "/a%0Ab"]:
        response = ask(live, "GET", uri)
        assert (response.status, code(response)) == (400, "invalid_request"), uri


def test_resolution_never_climbs_above_the_root():
    assert request_path("/../../projects/1") == "/projects/1"
    assert resolve_path("/a/b/..") == "/a/"
    assert resolve_path("/a//") == "/a/"
    assert resolve_path("/") == "/"
    assert resolve_path("/a;x/;y/b;") == "/a/b"


def test_unmapped_method_is_denied_until_a_setting_maps_it(make_live_server, settings):
    default = make_live_server(settings)
    refused = ask(default, "OPTIONS", "/projects/1")
    assert (refused.status, code(refused)) == (403, "unmapped_method")
    mapped = make_live_server(
        settings.replace(
            database_url=settings.database_url.replace(".db", "-mapped.db"),
            forward_auth_actions=(("OPTIONS", "read"), ("GET", "delete")),
        )
    )
    assert ask(mapped, "OPTIONS", "/projects/1").status == 200
    assert ask(mapped, "GET", "/projects/1").status == 403  # GET now asks for delete
    assert ask(mapped, "GET", "/projects/1", subject="alice").status == 200


def test_actions_setting_is_parsed_and_checked():
    parsed = Settings.from_env({"ROLEGATE_FORWARD_AUTH_ACTIONS": "options=read, POST=submit"})
    assert parsed.forward_auth_actions == (("OPTIONS", "read"), ("POST", "submit"))
    for bad in ("GET", "=read", "GET=", "G-T=read"):
        with pytest.raises(ConfigError):
            Settings.from_env({"ROLEGATE_FORWARD_AUTH_ACTIONS": bad})
    with pytest.raises(ConfigError):
        Settings.from_env({"ROLEGATE_FORWARD_AUTH_STRIP_PREFIX": "api"})


def test_prefix_strip_and_mount(make_live_server, settings):
    server = make_live_server(
        settings.replace(forward_auth_strip_prefix="/api", forward_auth_mount="/projects")
    )
    allowed = ask(server, "GET", "/api/7")
    assert allowed.status == 200
    assert allowed.body["resource"] == "/projects/7"
    # the strip applies after normalisation: no escaping the prefix with dots
    outside = ask(server, "GET", "/api/../admin")
    assert (outside.status, code(outside)) == (403, "outside_prefix")
    assert ask(server, "GET", "/apix/7").status == 403


def test_non_ascii_subject_is_percent_encoded_in_headers(live):
    response = ask(live, "GET", "/projects/1", subject="zoë%", org="acme")
    assert response.status == 403  # no membership in acme
    assert response.headers["x-rolegate-subject"] == "zo%C3%AB%25"


def test_org_query_parameter_only_for_tokens_without_org(live):
    tokenless_org = ask(live, "GET", "/projects/1", org=None, path="/v1/forward-auth?org=acme")
    assert tokenless_org.status == 200
    assert tokenless_org.headers["x-rolegate-org"] == "acme"
    mismatch = ask(live, "GET", "/projects/1", path="/v1/forward-auth?org=globex")
    assert (mismatch.status, code(mismatch)) == (403, "org_mismatch")


def test_key_server_down_is_503_never_an_allow(make_live_server, settings):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    keys = JWKSServer()
    keys.keys = [{**public_jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]
    server = make_live_server(
        settings.replace(jwt_secret=None, jwks_url=keys.url, jwks_timeout=1.0, jwks_cooldown=0)
    )
    claims = {"sub": "carol", "org": "acme", "exp": int(time.time()) + 600}

    def call(kid: str):
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
        headers = {"Authorization": f"Bearer {token}"}
        return ask(server, "GET", "/projects/1", subject=None, headers=headers)

    assert call("k1").status == 200
    keys.stop()
    down = call("k2")
    assert (down.status, code(down)) == (503, "key_server_unavailable")


# -- Envoy HTTP ext_authz: the original method and path under the route's prefix -------------------


def envoy(server, method: str, original: str, subject="carol", org="acme", **headers):
    headers = {**server.auth(subject, org), **headers}
    return server.client.request(method, "/v1/forward-auth/envoy" + original, headers=headers)


def test_envoy_mode_decides_its_own_method_and_path(live):
    allowed = envoy(live, "GET", "/projects/1?x=1")
    assert allowed.status == 200
    assert allowed.headers["x-rolegate-subject"] == "carol"
    assert envoy(live, "DELETE", "/projects/1").status == 403
    assert envoy(live, "POST", "/projects", subject="bob").status == 200


def test_envoy_mode_ignores_forwarded_headers_and_normalises(live):
    spoofed = envoy(
        live, "DELETE", "/projects/1", **{"X-Forwarded-Method": "GET", "X-Original-Method": "GET"}
    )
    assert spoofed.status == 403
    for original in ("//documents/finance/q3", "/documents/x/%2e%2e/finance/q3"):
        response = envoy(live, "GET", original, subject="frank", org="globex")
        assert response.status == 403, (original, response.text)
    assert envoy(live, "GET", "/documents/x", subject="frank", org="globex").status == 200


def test_envoy_mode_takes_no_org_from_the_client_query(live):
    response = envoy(live, "GET", "/projects/1?org=acme", org=None)
    assert response.status == 400  # the token names no org, and the query is the client's


def test_decisions_are_logged_like_v1_check(make_live_server, settings, tmp_path):
    path = tmp_path / "decisions.jsonl"
    server = make_live_server(settings.replace(decision_log=str(path)))
    allowed = ask(server, "GET", "/projects/%31?x=1")
    denied = envoy(server, "DELETE", "/projects/1")
    assert server.core.decision_log.flush()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [
        (line["decision_id"], line["resource"], line["action"], line["allowed"]) for line in lines
    ] == [
        (allowed.headers["x-rolegate-decision-id"], "/projects/1", "read", True),
        (denied.headers["x-rolegate-decision-id"], "/projects/1", "delete", False),
    ]


def test_overlong_resource_is_400(live):
    response = ask(live, "GET", "/projects/" + "a" * 3000)
    assert (response.status, code(response)) == (400, "invalid_request")
    assert "longer than" in response.body["error"]["message"]
