"""rolegate.client against a real Rolegate server, a hung server and a closed port."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwks_server import JWKSServer
from scaleout import ServeProcess
from shared_server import closed_port_url, shared_live_server, silent_server

from rolegate.client import (
    BadRequest,
    Forbidden,
    RolegateClient,
    RolegateClientError,
    RolegateUnavailable,
    Unauthorized,
)
from rolegate.config import Settings
from rolegate.identity import mint_token


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with shared_live_server(tmp_path_factory.mktemp("client")) as server:
        yield server


def client_for(live, subject="carol", org="acme", **options) -> RolegateClient:
    return RolegateClient(live.url, token=live.token(subject, org), **options)


def test_allow_and_deny_are_results(live):
    with client_for(live) as client:
        allowed = client.check("/projects/1", "read")
        denied = client.check("/projects/1", "delete")
    assert allowed.allowed is True
    assert denied.allowed is False
    assert len(allowed.decision_id) == 32
    assert allowed.decision_id != denied.decision_id
    assert allowed.reason is None and allowed.error is None


def test_explain_owner_and_org(live):
    with client_for(live, "bob") as client:
        explained = client.check("/documents/7", "update", owner="bob", explain=True)
        assert explained.allowed
        assert explained.reason["rule"] == "p, owner, *, /documents/:id, update, allow"
        assert not client.check("/documents/7", "update", owner="carol").allowed
    with client_for(live, "bob", org=None) as tokenless:
        assert tokenless.check("/projects/1", "update", org="acme").allowed
        assert not tokenless.check("/projects/1", "update", org="globex").allowed


def test_api_key_credential(live):
    created = live.client.post(
        "/v1/orgs/acme/api-keys",
        {"name": "client-test", "roles": ["viewer"]},
        headers=live.auth("alice", "acme"),
    )
    assert created.status == 201, created.text
    with RolegateClient(live.url, api_key=created.body["key"]) as client:
        assert client.check("/projects/1", "read").allowed
        assert not client.check("/projects/1", "update").allowed
    with pytest.raises(ValueError):
        RolegateClient(live.url, token="t", api_key="k")


def test_typed_errors_carry_the_code(live):
    with RolegateClient(live.url) as anonymous, pytest.raises(Unauthorized) as missing:
        anonymous.check("/projects/1", "read")
    assert (missing.value.status, missing.value.code) == (401, "missing_token")
    with RolegateClient(live.url, token="not.a.jwt") as forged, pytest.raises(Unauthorized):
        forged.check("/projects/1", "read")
    with client_for(live) as client:
        with pytest.raises(Forbidden) as mismatch:
            client.check("/projects/1", "read", org="globex")
        assert mismatch.value.code == "org_mismatch"
        with pytest.raises(BadRequest) as empty:
            client.check("", "read")
        assert empty.value.code == "invalid_request"
        assert "resource" in empty.value.message
    # deny_on_error is for outages only: a bad credential still raises
    with RolegateClient(live.url, deny_on_error=True) as lenient, pytest.raises(Unauthorized):
        lenient.check("/projects/1", "read")


def test_batch_keeps_request_order(live):
    checks = [
        {"resource": "/projects/1", "action": "read"},
        {"resource": "/projects/1", "action": "delete"},
        {"resource": "/projects/2", "action": "update"},
        {"resource": "/documents/3", "action": "read", "explain": True},
        {"resource": "/members", "action": "manage"},
        {"resource": "/projects", "action": "create"},
    ]
    with client_for(live, "bob") as client:
        results = client.check_batch(checks)
        one_by_one = [client.check(**check).allowed for check in checks]
    assert [result.allowed for result in results] == [True, False, True, True, False, True]
    assert [result.allowed for result in results] == one_by_one
    assert results[3].reason is not None and results[0].reason is None
    assert len({result.decision_id for result in results}) == len(checks)
    assert len({result.revision for result in results}) == 1


@dataclass
class Gunicorn:
    url: str
    secret: str

    def token(self, subject: str, org: str | None) -> str:
        return mint_token(Settings(jwt_secret=self.secret), subject=subject, org=org)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`rolegate serve` (granian, keep-alive): the development server closes every connection."""
    tmp = tmp_path_factory.mktemp("client-serve")
    server = ServeProcess(tmp, f"sqlite:///{tmp / 'store.db'}", workers=1)
    server.start("--sync-policies")
    try:
        yield Gunicorn(f"http://127.0.0.1:{server.port}", server.env["ROLEGATE_JWT_SECRET"])
    finally:
        server.kill()


def test_connections_are_reused(served):
    live = served
    with client_for(live) as client:
        client.check("/projects/1", "read")
        first = client._pool._idle.queue[-1]
        port = first.sock.getsockname()[1]
        client.check("/projects/2", "read")
        assert client._pool._idle.queue == [first]
        assert first.sock.getsockname()[1] == port
        sibling = client.with_authorization(f"Bearer {live.token('alice', 'acme')}")
        assert sibling.check("/projects/1", "delete").allowed  # alice, same connection
        assert client._pool._idle.queue == [first]
        assert not client.check("/projects/1", "delete").allowed  # still carol


def test_timeout_raises_and_deny_on_error_denies():
    with silent_server() as url:
        client = RolegateClient(url, token="t", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(RolegateUnavailable) as info:
            client.check("/projects/1", "read")
        assert time.monotonic() - started < 2
        assert "no answer within 0.3 s" in str(info.value)
        lenient = RolegateClient(url, token="t", timeout=0.3, deny_on_error=True)
        result = lenient.check("/projects/1", "read")
        assert result.allowed is False and result.decision_id is None
        assert isinstance(result.error, RolegateUnavailable)
        batch = lenient.check_batch([{"resource": "/a", "action": "read"}] * 3)
        assert [item.allowed for item in batch] == [False, False, False]


def test_server_down_raises_and_deny_on_error_denies():
    url = closed_port_url()
    with pytest.raises(RolegateUnavailable) as info:
        RolegateClient(url, token="t").check("/projects/1", "read")
    assert "ConnectionRefusedError" in str(info.value)
    assert not RolegateClient(url, token="t", deny_on_error=True).check("/p", "read").allowed


def test_server_5xx_raises_with_its_code(make_live_server, settings):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    keys = JWKSServer()
    keys.keys = [{**public_jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]
    server = make_live_server(
        settings.replace(jwt_secret=None, jwks_url=keys.url, jwks_timeout=1.0, jwks_cooldown=0)
    )
    claims = {"sub": "carol", "org": "acme", "exp": int(time.time()) + 600}
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k2"})
    keys.stop()
    client = RolegateClient(server.url, token=token)
    with pytest.raises(RolegateUnavailable) as info:
        client.check("/projects/1", "read")
    assert (info.value.status, info.value.code) == (503, "key_server_unavailable")
    lenient = client.with_authorization(f"Bearer {token}")
    lenient.deny_on_error = True
    assert lenient.check("/projects/1", "read").allowed is False


def test_other_statuses_are_client_errors(live):
    client = RolegateClient(live.url + "/nowhere", token=live.token("carol", "acme"))
    with pytest.raises(RolegateClientError) as info:
        client.check("/projects/1", "read")
    assert (info.value.status, info.value.code) == (404, "not_found")
    assert not isinstance(info.value, RolegateUnavailable | Unauthorized | Forbidden | BadRequest)
    with pytest.raises(ValueError):
        RolegateClient("ftp://example.com")


def test_a_connection_the_server_closed_is_replaced_not_an_error(served):
    with client_for(served) as client:
        assert client.check("/projects/1", "read").allowed
        first = client._pool._idle.queue[-1]
        time.sleep(5.5)  # long enough for a server to close an idle kept-alive connection
        assert client.check("/projects/1", "read").allowed
        assert client._pool._idle.queue != [first]


def test_plan_when_the_server_serves_it(live):
    """POST /v1/plan comes with the data-filtering work; until it is merged this test skips."""
    if "/v1/plan" not in live.client.get("/openapi.json").body["paths"]:
        pytest.skip("this Rolegate has no POST /v1/plan yet")
    with client_for(live, "bob", org=None) as client:
        everywhere = client.plan("read", "/documents/:id")
        assert everywhere["orgs"] == ["acme", "globex"]
        assert everywhere["subject"] == "bob" and everywhere["resource"] == "/documents/:id"
        assert "condition" in everywhere
        assert client.plan("read", "/documents/:id", org="globex")["orgs"] == ["globex"]
    with client_for(live, "bob", "acme") as client, pytest.raises(Forbidden) as mismatch:
        client.plan("read", "/documents/:id", org="globex")
    assert mismatch.value.code == "org_mismatch"
