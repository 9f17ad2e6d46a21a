"""rolegate.flask: a user's Flask app asking a real Rolegate server with the caller's token."""

from __future__ import annotations

import pytest
from conftest import HttpClient, serve_app
from flask import Flask, g
from shared_server import closed_port_url, shared_live_server, silent_server

from rolegate.flask import Rolegate


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with shared_live_server(tmp_path_factory.mktemp("flask-ext")) as server:
        yield server


def build_app(url: str, **config) -> tuple[Flask, list]:
    """The seed's shape: guarded handlers with parameters and a protected /admin group."""
    app = Flask("user_app")
    app.config.update(ROLEGATE_URL=url, **config)
    rolegate = Rolegate()
    rolegate.init_app(app)
    rolegate.protect("/admin/*", action="manage", resource="/members")
    ran: list = []

    @app.get("/projects/<project_id>")
    @rolegate.require("read", "/projects/{project_id}")
    def show_project(project_id):
        ran.append(("show", project_id))
        return {"project": project_id, "decision": g.rolegate_decision.decision_id}

    @app.put("/orgs/<org>/projects/<int:project_id>")
    @rolegate.require("update", "/projects/{project_id}")
    def update_project(org, project_id):
        ran.append(("update", org, project_id))
        return {"updated": project_id}

    @app.delete("/documents/<path:doc>")
    @rolegate.require("delete", "/documents/{doc}")
    def delete_document(doc):
        ran.append(("delete", doc))
        return {"deleted": doc}

    @app.get("/admin/users")
    def admin_users():
        ran.append(("admin",))
        return {"users": []}

    @app.get("/public")
    def public():
        ran.append(("public",))
        return {"ok": True}

    return app, ran


def bearer(live, subject, org="acme") -> dict[str, str]:
    return live.auth(subject, org)


def error_code(response) -> str:
    return response.get_json()["error"]["code"]


def test_require_fills_the_template_from_view_arguments(live):
    app, ran = build_app(live.url)
    client = app.test_client()
    shown = client.get("/projects/7", headers=bearer(live, "carol"))
    assert shown.status_code == 200
    assert len(shown.get_json()["decision"]) == 32
    denied = client.put("/orgs/acme/projects/7", headers=bearer(live, "carol"))
    assert (denied.status_code, error_code(denied)) == (403, "forbidden")
    updated = client.put("/orgs/acme/projects/7", headers=bearer(live, "bob"))
    assert updated.status_code == 200
    assert ran == [("show", "7"), ("update", "acme", 7)]


def test_template_values_are_the_literal_arguments(live):
    app, ran = build_app(live.url)
    client = app.test_client()
    # admin may delete /documents/*; the path argument is sent as is, never resolved upward
    assert client.delete("/documents/a/b", headers=bearer(live, "alice")).status_code == 200
    assert client.delete("/documents/a/b", headers=bearer(live, "carol")).status_code == 403
    assert ran == [("delete", "a/b")]


def test_missing_and_bad_tokens_are_401_and_the_view_does_not_run(live):
    app, ran = build_app(live.url)
    client = app.test_client()
    missing = client.get("/projects/7")
    assert (missing.status_code, error_code(missing)) == (401, "missing_token")
    assert missing.headers["WWW-Authenticate"] == 'Bearer error="missing_token"'
    forged = client.get("/projects/7", headers={"Authorization": "Bearer not.a.token"})
    assert (forged.status_code, error_code(forged)) == (401, "invalid_token")
    assert ran == []


def test_a_check_rolegate_calls_malformed_is_400(live):
    app, ran = build_app(live.url)
    response = app.test_client().get("/projects/a%00b", headers=bearer(live, "carol"))
    assert (response.status_code, error_code(response)) == (400, "invalid_request")
    assert "control characters" in response.get_json()["error"]["message"]
    assert ran == []


def test_protect_guards_a_route_group(live):
    app, ran = build_app(live.url)
    client = app.test_client()
    assert client.get("/admin/users", headers=bearer(live, "alice")).status_code == 200
    refused = client.get("/admin/users", headers=bearer(live, "carol"))
    assert (refused.status_code, error_code(refused)) == (403, "forbidden")
    assert client.get("/admin/users").status_code == 401
    # unknown paths under the group are refused before routing says 404
    assert client.get("/admin/nothing-here", headers=bearer(live, "carol")).status_code == 403
    assert client.get("/public").status_code == 200
    assert ran == [("admin",), ("public",)]


@pytest.mark.parametrize(
    "path", ["//admin/users", "/public/../admin/users", "/admin/./users", "/admin;x/users"]
)
def test_protect_sees_through_path_tricks(live, path):
    app, ran = build_app(live.url)
    server, thread = serve_app(app)  # over a socket: the request line keeps the raw path
    try:
        client = HttpClient(*server.server_address[:2])
        response = client.get(path, headers=bearer(live, "carol"))
        assert response.status == 403, response.text
        assert ran == []
        assert client.get(path, headers=bearer(live, "alice")).status != 403
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_protect_with_method_actions(live):
    app = Flask("methods")
    app.config["ROLEGATE_URL"] = live.url
    rolegate = Rolegate(app)
    rolegate.protect("/projects/*")

    @app.route("/projects/<project_id>", methods=["GET", "DELETE"])
    def project(project_id):
        return {"project": project_id}

    client = app.test_client()
    assert client.get("/projects/1", headers=bearer(live, "carol")).status_code == 200
    assert client.delete("/projects/1", headers=bearer(live, "carol")).status_code == 403
    assert client.delete("/projects/1", headers=bearer(live, "alice")).status_code == 200


def test_rolegate_down_or_hung_is_503_unless_deny_on_error(live):
    for url in (closed_port_url(),):
        app, ran = build_app(url)
        response = app.test_client().get("/projects/1", headers=bearer(live, "carol"))
        assert (response.status_code, error_code(response)) == (503, "rolegate_unavailable")
        lenient, _ = build_app(url, ROLEGATE_DENY_ON_ERROR=True)
        denied = lenient.test_client().get("/projects/1", headers=bearer(live, "carol"))
        assert (denied.status_code, error_code(denied)) == (403, "forbidden")
        assert ran == []
    with silent_server() as url:
        app, ran = build_app(url, ROLEGATE_TIMEOUT=0.3)
        response = app.test_client().get("/admin/users", headers=bearer(live, "alice"))
        assert response.status_code == 503
        assert ran == []


def test_configuration_mistakes_fail_at_start():
    with pytest.raises(RuntimeError, match="ROLEGATE_URL"):
        Rolegate(Flask("unconfigured"))
    rolegate = Rolegate()
    with pytest.raises(TypeError, match="project_id"):

        @rolegate.require("read", "/projects/{project_id}")
        def view(other):
            return "never"

    for template in ("/projects/{}", "/projects/{p.attr}", "/projects/{p!r}", "/projects/{p:>5}"):
        with pytest.raises(ValueError):
            rolegate.require("read", template)
    for pattern in ("admin/*", "/a*/b", "/a/**"):
        with pytest.raises(ValueError):
            rolegate.protect(pattern)
