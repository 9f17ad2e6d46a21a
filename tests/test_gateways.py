"""Real nginx (auth_request) and real Caddy (forward_auth) in front of a recording upstream, asking
a real Rolegate, with docs/gateways.md's snippets verbatim (addresses and ports substituted)."""

from __future__ import annotations

import pytest
from conftest import HttpClient
from gateways import recording_upstream, run_gateway
from shared_server import shared_live_server


@pytest.fixture(scope="module")
def rolegate(tmp_path_factory):
    with shared_live_server(tmp_path_factory.mktemp("gateways-rolegate")) as server:
        yield server


@pytest.fixture(scope="module")
def upstream():
    with recording_upstream() as recorder:
        yield recorder


@pytest.fixture(scope="module", params=["nginx", "caddy"])
def gateway(request, rolegate, upstream, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    rolegate_address = rolegate.url.removeprefix("http://")
    with run_gateway(request.param, directory, rolegate_address, upstream.address) as running:
        yield running


@pytest.fixture
def send(gateway, upstream, rolegate):
    """Send through the gateway as `subject` (None: no credential); upstream's log starts empty."""
    host, port = gateway.address.split(":")
    client = HttpClient(host, int(port))
    upstream.requests.clear()

    def send(method: str, path: str, subject: str | None = "carol", org="acme", **headers):
        if subject is not None:
            headers.update(rolegate.auth(subject, org))
        return client.request(method, path, headers=headers)

    return send


def test_no_token_is_401_and_the_upstream_is_not_reached(send, upstream):
    response = send("GET", "/projects/1", subject=None)
    assert response.status == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert upstream.requests == []


def test_bad_token_is_401(send, upstream):
    assert send("GET", "/projects/1", subject=None, Authorization="Bearer a.b.c").status == 401
    assert send("GET", "/projects/1", subject=None, Authorization="ApiKey nope").status == 401
    assert upstream.requests == []


def test_viewer_get_reaches_the_upstream_with_the_subject(send, upstream):
    response = send("GET", "/projects/1?page=2")
    assert response.status == 200, response.text
    assert response.text == "upstream"
    [seen] = upstream.requests
    assert (seen.method, seen.path) == ("GET", "/projects/1?page=2")
    assert seen.header("X-Rolegate-Subject") == ["carol"]
    assert seen.header("X-Rolegate-Org") == ["acme"]
    [decision_id] = seen.header("X-Rolegate-Decision-Id")
    assert len(decision_id) == 32


def test_viewer_delete_is_403_and_the_upstream_is_not_reached(send, upstream):
    assert send("DELETE", "/projects/1").status == 403
    assert send("POST", "/projects").status == 403
    assert upstream.requests == []
    assert send("DELETE", "/projects/1", subject="alice").status == 200  # admin
    assert [seen.method for seen in upstream.requests] == ["DELETE"]


def test_spoofed_forwarded_headers_are_ignored(send, upstream):
    spoofed = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Uri": "/projects/1",
        "X-Original-Method": "GET",
        "X-Original-URI": "/projects/1",
    }
    # exactly 403: had a client copy survived, Rolegate would see two pairs disagree (400/500)
    assert send("DELETE", "/projects/1", **spoofed).status == 403
    frank = {"X-Original-URI": "/documents/public", "X-Forwarded-Uri": "/documents/public"}
    frank.update({"X-Original-Method": "GET", "X-Forwarded-Method": "GET"})
    assert (
        send("GET", "/documents/finance/q3", subject="frank", org="globex", **frank).status == 403
    )
    assert upstream.requests == []


def test_spoofed_rolegate_headers_never_reach_the_upstream(send, upstream):
    response = send(
        "GET",
        "/projects/1",
        **{
            "X-Rolegate-Subject": "alice",
            "X-Rolegate-Org": "globex",
            "X-Rolegate-Decision-Id": "x",
        },
    )
    assert response.status == 200
    [seen] = upstream.requests
    assert seen.header("X-Rolegate-Subject") == ["carol"]
    assert seen.header("X-Rolegate-Org") == ["acme"]
    assert seen.header("X-Rolegate-Decision-Id") != ["x"]


# frank (Globex contractor) reads /documents/*, but a deny rule covers /documents/finance/*.
PATH_TRICKS = [
    "/documents/finance/q3",
    "/documents//finance/q3",
    "//documents/finance/q3",
    "/documents/public/%2e%2e/finance/q3",
    "/documents/public/%2E%2E/finance/q3",
    "/documents/./finance/q3",
    "/documents/%2e/finance/q3",
    "/documents%2ffinance/q3",
    "/documents;x/finance/q3",
    "/documents/finance;v=2/q3",
    "/documents/public/..;/finance/q3",
    "/documents/finance/q3?next=/documents/public",
]


def test_path_tricks_are_decided_on_the_normalised_path(send, upstream, gateway):
    assert send("GET", "/documents/public", subject="frank", org="globex").status == 200
    upstream.requests.clear()
    for path in PATH_TRICKS:
        response = send("GET", path, subject="frank", org="globex")
        assert response.status == 403, (gateway.name, path, response.status, response.text)
    assert upstream.requests == []
