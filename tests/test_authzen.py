"""AuthZEN 1.0 on the sample policies, over real HTTP: evaluation semantics, search pagination,
discovery per org, who may ask (PEP permission, cross-org, on behalf of on /v1/check), the
subject attribute PIP and hostile input."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import HttpClient, LiveServer, sample_settings, serve_app

from rolegate.admin import Caller, OrgAdmin
from rolegate.api import create_app
from rolegate.authzen import AuthzenMapping, Entity, merged_items
from rolegate.core import Rolegate
from rolegate.errors import ConfigError, PolicyError
from rolegate.store.schema import schema_differences
from rolegate.subject_attributes import parse_attributes_file

EVALUATION = "/access/v1/evaluation"
EVALUATIONS = "/access/v1/evaluations"
ACME = "/orgs/acme"
PROJECT_42 = {"type": "projects", "id": "42"}


def user(subject: str) -> dict:
    return {"type": "user", "id": subject}


def action(name: str) -> dict:
    return {"name": name}


def ask(subject: str, name: str, resource: dict, **extra) -> dict:
    return {"subject": user(subject), "action": action(name), "resource": resource, **extra}


ATTRIBUTES = "# emails of acme\norg,subject,email\nacme,bob,bob@acme.test\n"


def start_pdp(directory: Path) -> LiveServer:
    """The sample policies with bob's email, and two API keys of acme: `pep` and `viewer`."""
    attributes = directory / "subjects.csv"
    attributes.write_text(ATTRIBUTES)
    settings = sample_settings(directory, subject_attributes=str(attributes))
    core = Rolegate.from_settings(settings)
    core.start(sync_policies=True)
    server, _ = serve_app(create_app(core=core, follow_store=False))
    host, port = server.server_address[:2]
    live = LiveServer(f"http://{host}:{port}", HttpClient(host, port), core, settings)
    admin, operator = OrgAdmin(core), Caller.operator("test")
    live.pep = {
        "Authorization": "ApiKey " + admin.create_api_key(operator, "acme", "gw", ["pep"])["key"]
    }
    live.viewer_key = {
        "Authorization": "ApiKey " + admin.create_api_key(operator, "acme", "ro", ["viewer"])["key"]
    }
    live.server = server
    return live


@contextmanager
def running_pdp(directory: Path) -> Iterator[LiveServer]:
    live = start_pdp(directory)
    try:
        yield live
    finally:
        live.server.shutdown()
        live.core.close()


@pytest.fixture(scope="module")
def pdp(tmp_path_factory) -> Iterator[LiveServer]:
    """One PDP for the tests that change nothing."""
    with running_pdp(tmp_path_factory.mktemp("pdp")) as live:
        yield live


@pytest.fixture
def own_pdp(tmp_path) -> Iterator[LiveServer]:
    """A PDP of the test's own, for tests that change policy or attributes."""
    with running_pdp(tmp_path) as live:
        yield live


def post(pdp, path: str, body, headers):
    return pdp.client.post(path, body, headers=headers)


# --------------------------------------------------------------------------- evaluation


def test_a_fresh_store_has_the_subject_attributes_table_as_declared(pdp):
    assert schema_differences(pdp.core.store.engine) == []


def test_evaluation_per_org_and_for_the_credentials_org(pdp):
    for path in (ACME + EVALUATION, EVALUATION):
        allowed = post(pdp, path, ask("bob", "update", PROJECT_42), pdp.pep)
        denied = post(pdp, path, ask("bob", "delete", PROJECT_42), pdp.pep)
        assert (allowed.status, allowed.body) == (200, {"decision": True})
        assert (denied.status, denied.body) == (200, {"decision": False})


def test_reasons_only_when_asked(pdp):
    plain = post(pdp, EVALUATION, ask("bob", "update", PROJECT_42), pdp.pep)
    assert plain.body == {"decision": True}
    explained = post(
        pdp, EVALUATION, ask("bob", "update", PROJECT_42, options={"explain": True}), pdp.pep
    )
    reason = explained.body["context"]["reason"]
    assert reason["rule"] == "p, editor, *, /projects/*, update, allow"
    assert reason["path"] == "bob -> editor"
    assert explained.body["context"]["resource"] == "/projects/42"


SEMANTIC_CASES = [
    (None, ["read", "delete", "update"], [True, False, True]),
    ("execute_all", ["read", "delete", "update"], [True, False, True]),
    ("deny_on_first_deny", ["read", "delete", "update"], [True, False]),
    ("deny_on_first_deny", ["read", "update"], [True, True]),
    ("permit_on_first_permit", ["delete", "read", "update"], [False, True]),
    ("permit_on_first_permit", ["delete", "create"], [False, False]),
]


@pytest.mark.parametrize(("semantic", "actions", "expected"), SEMANTIC_CASES)
def test_every_evaluation_semantic_keeps_request_order(pdp, semantic, actions, expected):
    body = {
        "subject": user("bob"),
        "resource": PROJECT_42,
        "evaluations": [{"action": action(name)} for name in actions],
    }
    if semantic is not None:
        body["options"] = {"evaluations_semantic": semantic}
    response = post(pdp, EVALUATIONS, body, pdp.pep)
    assert response.status == 200
    assert response.body == {"evaluations": [{"decision": value} for value in expected]}


def test_unknown_semantic_and_too_many_items(pdp):
    body = {
        "subject": user("bob"),
        "resource": PROJECT_42,
        "evaluations": [{"action": action("read")}],
    }
    bad = post(pdp, EVALUATIONS, {**body, "options": {"evaluations_semantic": "any"}}, pdp.pep)
    assert bad.status == 400
    many = post(pdp, EVALUATIONS, {**body, "evaluations": [{}] * 1001}, pdp.pep)
    assert many.status == 413


def test_defaults_are_replaced_whole_never_merged_inside_an_entity():
    body = {
        "subject": user("bob"),
        "resource": {"type": "projects", "id": "1", "properties": {"x": 1}},
        "evaluations": [{"resource": {"type": "documents"}}, {}],
    }
    first, second = merged_items(body)
    assert first["resource"] == {"type": "documents"}  # no id inherited from the default
    assert second["resource"]["id"] == "1" and second["subject"] == user("bob")


def test_unknown_subject_types_and_role_names_are_denied_not_decided(pdp):
    other_type = {**ask("bob", "update", PROJECT_42), "subject": {"type": "group", "id": "bob"}}
    assert post(pdp, EVALUATION, other_type, pdp.pep).body == {"decision": False}
    # "admin" is a role: as a subject Casbin would hand it the admin rules (g(x, x) is true).
    assert post(pdp, EVALUATION, ask("admin", "delete", PROJECT_42), pdp.pep).body == {
        "decision": False
    }
    assert post(pdp, EVALUATION, ask("editor", "update", PROJECT_42), pdp.pep).body == {
        "decision": False
    }


# --------------------------------------------------------------------------- who may ask


def test_without_credentials_401(pdp):
    for path in (EVALUATION, ACME + EVALUATION, ACME + "/access/v1/search/subject"):
        assert pdp.client.post(path, ask("bob", "read", PROJECT_42)).status == 401
    bad_key = {"Authorization": "ApiKey rgk_0000000000000000_" + "x" * 30}
    assert post(pdp, EVALUATION, ask("bob", "read", PROJECT_42), bad_key).status == 401


def test_a_pep_of_one_org_cannot_ask_about_another(pdp):
    for path, body in [
        ("/orgs/globex" + EVALUATION, ask("bob", "read", PROJECT_42)),
        ("/orgs/globex" + EVALUATIONS, {"evaluations": [ask("bob", "read", PROJECT_42)]}),
        (
            "/orgs/globex/access/v1/search/subject",
            {"subject": {"type": "user"}, "action": action("read"), "resource": PROJECT_42},
        ),
        (
            "/orgs/globex/access/v1/search/resource",
            {"subject": user("bob"), "action": action("read"), "resource": {"type": "projects"}},
        ),
        ("/orgs/globex/access/v1/search/action", {"subject": user("bob"), "resource": PROJECT_42}),
    ]:
        response = post(pdp, path, body, pdp.pep)
        assert response.status == 403, path
        assert response.body["error"]["code"] == "org_mismatch"


def test_a_key_without_the_permission_may_only_ask_about_itself(pdp):
    response = post(pdp, EVALUATION, ask("bob", "read", PROJECT_42), pdp.viewer_key)
    assert response.status == 403 and response.body["error"]["code"] == "forbidden"
    search = {"subject": {"type": "user"}, "action": action("read"), "resource": PROJECT_42}
    assert post(pdp, "/access/v1/search/subject", search, pdp.viewer_key).status == 403


def test_a_user_token_may_ask_about_itself_only_unless_permitted(pdp):
    carol = pdp.auth("carol", "acme")
    own = post(pdp, EVALUATION, ask("carol", "read", PROJECT_42), carol)
    assert own.body == {"decision": True}
    other = post(pdp, EVALUATION, ask("bob", "read", PROJECT_42), carol)
    assert other.status == 403
    batch = {"evaluations": [ask("carol", "read", PROJECT_42), ask("bob", "read", PROJECT_42)]}
    assert post(pdp, EVALUATIONS, batch, carol).status == 403
    # A token naming no org asks in the org of the URL; unprefixed it has no org to ask in.
    unbound = pdp.auth("carol")
    assert post(pdp, ACME + EVALUATION, ask("carol", "read", PROJECT_42), unbound).body == {
        "decision": True
    }
    assert post(pdp, EVALUATION, ask("carol", "read", PROJECT_42), unbound).status == 400
    # alice is an admin: admins hold `evaluate` on `/authzen`.
    alice = pdp.auth("alice", "acme")
    assert post(pdp, EVALUATION, ask("bob", "update", PROJECT_42), alice).body == {"decision": True}


def test_check_on_behalf_of_a_subject_needs_the_permission(pdp):
    body = {"resource": "/projects/42", "action": "update", "subject": "bob"}
    as_pep = pdp.client.post("/v1/check", body, headers=pdp.pep)
    assert as_pep.status == 200
    assert (as_pep.body["allowed"], as_pep.body["subject"]) == (True, "bob")
    refused = pdp.client.post("/v1/check", body, headers=pdp.auth("carol", "acme"))
    assert refused.status == 403 and refused.body["error"]["code"] == "forbidden"
    keyed = pdp.client.post("/v1/check", body, headers=pdp.viewer_key)
    assert keyed.status == 403
    # Naming oneself, or no subject at all, is the caller's own check as before.
    own = pdp.client.post(
        "/v1/check", {**body, "subject": "carol"}, headers=pdp.auth("carol", "acme")
    )
    assert (own.status, own.body["allowed"], own.body["subject"]) == (200, False, "carol")
    pep_itself = pdp.client.post(
        "/v1/check", {"resource": "/projects/42", "action": "update"}, headers=pdp.pep
    )
    assert pep_itself.body["allowed"] is False and pep_itself.body["subject"].startswith("apikey:")
    batch = {"checks": [body, {**body, "action": "delete"}]}
    results = pdp.client.post("/v1/check/batch", batch, headers=pdp.pep).body["results"]
    assert [(r["subject"], r["allowed"]) for r in results] == [("bob", True), ("bob", False)]
    assert (
        pdp.client.post("/v1/check/batch", batch, headers=pdp.auth("carol", "acme")).status == 403
    )


def test_check_on_behalf_refuses_role_names_and_other_orgs(pdp):
    role = {"resource": "/projects/42", "action": "delete", "subject": "admin"}
    response = pdp.client.post("/v1/check", role, headers=pdp.pep)
    assert response.status == 400 and response.body["error"]["code"] == "subject_is_role"
    cross = {"resource": "/projects/42", "action": "read", "subject": "bob", "org": "globex"}
    assert pdp.client.post("/v1/check", cross, headers=pdp.pep).status == 403


def test_token_roles_stay_with_the_caller(make_live_server, settings):
    live = make_live_server(settings.replace(trust_token_roles=True))
    alice = live.auth("alice", "acme", roles=["admin"])
    body = {"resource": "/projects/42", "action": "delete", "subject": "carol"}
    assert live.client.post("/v1/check", body, headers=alice).body["allowed"] is False
    own = {"resource": "/projects/42", "action": "delete"}
    dave = live.auth("dave", "acme", roles=["admin"])  # a member; the trusted token role counts
    assert live.client.post("/v1/check", own, headers=dave).body["allowed"] is True


# --------------------------------------------------------------------------- ownership and the PIP


def document(owner: str) -> dict:
    return {"type": "documents", "id": "7", "properties": {"ownerID": owner}}


def test_owner_property_names_the_subject_by_id_or_by_attribute(pdp):
    for owner, expected in [
        ("bob@acme.test", True),
        ("bob", True),
        ("carol@acme.test", False),
        ("", False),
    ]:
        response = post(pdp, EVALUATION, ask("bob", "update", document(owner)), pdp.pep)
        assert response.body == {"decision": expected}, owner
    # Another subject's email never makes carol the owner.
    assert post(
        pdp, EVALUATION, ask("carol", "update", document("bob@acme.test")), pdp.pep
    ).body == {"decision": False}


def test_attributes_admin_api(own_pdp):
    pdp = own_pdp
    path = "/v1/orgs/acme/subjects/carol/attributes"
    body = {"attributes": {"email": "carol@acme.test"}}
    alice, carol = pdp.auth("alice", "acme"), pdp.auth("carol", "acme")
    assert pdp.client.request("PUT", path, body, headers=carol).status == 403
    assert (
        pdp.client.request(
            "PUT", "/v1/orgs/globex/subjects/x/attributes", body, headers=alice
        ).status
        == 403
    )
    stored = pdp.client.request("PUT", path, body, headers=alice)
    assert stored.status == 200 and stored.body["attributes"] == {"email": "carol@acme.test"}
    ivan = pdp.auth("ivan", "acme")  # auditor: reads members
    assert pdp.client.get(path, headers=ivan).body["attributes"] == {"email": "carol@acme.test"}
    assert pdp.client.get(path, headers=pdp.auth("erin", "globex")).status == 403
    # carol (a viewer) owns the document now, and viewers still may not update documents.
    decided = post(pdp, EVALUATION, ask("carol", "update", document("carol@acme.test")), pdp.pep)
    assert decided.body == {"decision": True}  # the owner rule of the sample: owners update
    for bad in ({"attributes": {"1x": "v"}}, {"attributes": {"email": ""}}, {"attributes": []}, {}):
        assert pdp.client.request("PUT", path, bad, headers=alice).status == 400, bad
    assert pdp.client.request("PUT", path, {"attributes": {}}, headers=alice).status == 200
    assert pdp.client.get(path, headers=alice).body["attributes"] == {}
    # A subject with `/` in its id (an IdP's `auth0|team/7`) is addressed percent-encoded.
    slashed = "/v1/orgs/acme/subjects/auth0%7Cteam%2F7/attributes"
    stored = pdp.client.request("PUT", slashed, body, headers=alice)
    assert stored.status == 200 and stored.body["subject"] == "auth0|team/7", stored.text
    assert pdp.core.subject_attributes.get("acme", "auth0|team/7") == body["attributes"]


def test_offboarding_an_org_forgets_its_subject_attributes(own_pdp):
    store = own_pdp.core.subject_attributes
    store.set("globex", "erin", {"email": "erin@globex.test"})
    # acme holds only API-managed rules (its members are seeds); globex has file-managed rules.
    OrgAdmin(own_pdp.core).delete_org(Caller.operator("test"), "acme")
    assert store.get("acme", "bob") == {}
    assert store.get("globex", "erin") == {"email": "erin@globex.test"}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("org,subject\nacme,bob\n", "f.csv:1"),
        ("org,subject,email\nacme,bob,a,b\n", "f.csv:2"),
        ("org,subject,email\nacme,bob,a\n\nacme,bob,b\n", "f.csv:4"),
        ("org,subject,email\n*,bob,a\n", "f.csv:2"),
        ("org,subject,email,email\n", "f.csv:1"),
        ("# nothing\n", "f.csv:1"),
    ],
)
def test_attribute_files_fail_at_file_and_line(text, where):
    with pytest.raises(PolicyError) as caught:
        parse_attributes_file(text, "f.csv")
    assert caught.value.location == where


def test_attribute_files_read_sparse_columns():
    records = parse_attributes_file("org,subject,email,team\nacme,bob,,red\nacme,eve\n", "f.csv")
    assert [(r.subject, dict(r.attributes)) for r in records] == [
        ("bob", {"team": "red"}),
        ("eve", {}),
    ]


# --------------------------------------------------------------------------- mapping


def test_values_cannot_add_path_segments():
    mapping = AuthzenMapping()
    assert (
        mapping.resource_path(Entity("projects", "1/../../members"))
        == "/projects/1%2F..%2F..%2Fmembers"
    )
    assert (
        mapping.resource_path(Entity("user", "beth@the-smiths.com")) == "/user/beth@the-smiths.com"
    )
    with_status = AuthzenMapping(resource_template="/{type}/{id}/{properties.status}")
    assert with_status.resource_path(Entity("r", "1", {"status": "a/b"})) == "/r/1/a%2Fb"
    assert with_status.resource_path(Entity("r", "1", {"status": {"x": 1}})) == "/r/1/"


@pytest.mark.parametrize(
    "template", ["/{type}", "/{type}/{id}/{id}", "/{type}/{id}/{owner}", "{type}/{id}"]
)
def test_resource_templates_are_checked(template):
    with pytest.raises(ConfigError):
        AuthzenMapping(resource_template=template)


def test_a_bad_template_stops_start_up(core):
    bad = Rolegate(
        core.settings.replace(authzen_resource_template="/{id}"), core.engine, core.store
    )
    with pytest.raises(ConfigError, match="AUTHZEN_RESOURCE_TEMPLATE"):
        create_app(core=bad, follow_store=False)


def test_an_id_with_a_slash_stays_one_segment(pdp):
    # `/documents/:id` (the owner rule) matches one segment: the encoded id is one.
    request = ask(
        "bob", "update", {"type": "documents", "id": "7/x", "properties": {"ownerID": "bob"}}
    )
    assert post(pdp, EVALUATION, request, pdp.pep).body == {"decision": True}
    explained = post(pdp, EVALUATION, {**request, "options": {"explain": True}}, pdp.pep)
    assert explained.body["context"]["resource"] == "/documents/7%2Fx"


# --------------------------------------------------------------------------- search


def pages(pdp, path: str, body: dict, limit: int) -> list[list[dict]]:
    """Every page of a search, following next_token to the end."""
    collected, token = [], None
    for _ in range(50):
        page = {"limit": limit, **({"token": token} if token else {})}
        response = post(pdp, path, {**body, "page": page}, pdp.pep)
        assert response.status == 200, response.text
        collected.append(response.body["results"])
        assert response.body["page"]["count"] == len(response.body["results"])
        token = response.body["page"]["next_token"]
        if token == "":
            return collected
    raise AssertionError("pagination did not end")


def test_subject_search_pages_to_the_end(pdp):
    body = {"subject": {"type": "user"}, "action": action("read"), "resource": PROJECT_42}
    everything = post(pdp, ACME + "/access/v1/search/subject", body, pdp.pep).body
    assert [item["id"] for item in everything["results"]] == ["alice", "bob", "carol", "dave"]
    assert everything["page"] == {"next_token": "", "count": 4, "total": 4}
    paged = pages(pdp, "/access/v1/search/subject", body, 1)
    assert [page[0]["id"] for page in paged] == ["alice", "bob", "carol", "dave"]
    assert all(len(page) == 1 for page in paged)


@pytest.fixture
def reports(own_pdp):
    """Literal report resources: r1..r5 readable by editors, r3 denied to them."""
    rules = [
        {
            "type": "p",
            "subject": "editor",
            "resource": f"/reports/r{i}",
            "action": "read",
            "effect": "allow",
        }
        for i in range(1, 6)
    ]
    rules.append(
        {
            "type": "p",
            "subject": "editor",
            "resource": "/reports/r3",
            "action": "read",
            "effect": "deny",
        }
    )
    OrgAdmin(own_pdp.core).change_rules(Caller.operator("test"), "acme", rules)
    return own_pdp


def test_resource_search_pages_to_the_end_and_the_engine_decides(reports):
    body = {"subject": user("bob"), "action": action("read"), "resource": {"type": "reports"}}
    paged = pages(reports, "/access/v1/search/resource", body, 2)
    assert [[item["id"] for item in page] for page in paged] == [["r1", "r2"], ["r4", "r5"]]
    assert all(item["type"] == "reports" for page in paged for item in page)
    carol = {**body, "subject": user("carol")}  # a viewer: not an editor
    assert post(reports, "/access/v1/search/resource", carol, reports.pep).body["results"] == []


def test_action_search_pages_to_the_end(pdp):
    body = {"subject": user("bob"), "resource": PROJECT_42}
    paged = pages(pdp, "/access/v1/search/action", body, 1)
    assert [page[0]["name"] for page in paged] == ["read", "update"]
    alice = pages(pdp, "/access/v1/search/action", {**body, "subject": user("alice")}, 10)
    assert [item["name"] for item in alice[0]] == ["delete", "read", "update"]


def test_a_page_token_belongs_to_its_query(pdp):
    body = {"subject": {"type": "user"}, "action": action("read"), "resource": PROJECT_42}
    first = post(pdp, "/access/v1/search/subject", {**body, "page": {"limit": 1}}, pdp.pep)
    token = first.body["page"]["next_token"]
    other = {**body, "action": action("update")}
    reused = post(pdp, "/access/v1/search/subject", {**other, "page": {"token": token}}, pdp.pep)
    assert reused.status == 400 and reused.body["error"]["code"] == "invalid_cursor"
    forged = post(
        pdp, "/access/v1/search/subject", {**body, "page": {"token": token + "x"}}, pdp.pep
    )
    assert forged.status == 400
    assert (
        post(pdp, "/access/v1/search/subject", {**body, "page": {"limit": 0}}, pdp.pep).status
        == 400
    )


# --------------------------------------------------------------------------- discovery


def test_discovery_per_org_and_for_the_credentials_org(pdp):
    base = pdp.url
    root = pdp.client.get("/.well-known/authzen-configuration").body
    assert root["policy_decision_point"] == base
    assert root["access_evaluation_endpoint"] == base + EVALUATION
    acme = pdp.client.get("/.well-known/authzen-configuration/orgs/acme").body
    assert acme["policy_decision_point"] == base + ACME
    assert acme["search_action_endpoint"] == base + ACME + "/access/v1/search/action"
    assert pdp.client.get("/.well-known/authzen-configuration/orgs/%2A").status == 400


def test_discovery_uses_the_public_url_when_configured(make_live_server, settings):
    live = make_live_server(settings.replace(authzen_public_url="https://pdp.example.com/"))
    metadata = live.client.get("/.well-known/authzen-configuration/orgs/globex").body
    assert metadata["policy_decision_point"] == "https://pdp.example.com/orgs/globex"
    assert metadata["access_evaluations_endpoint"] == (
        "https://pdp.example.com/orgs/globex/access/v1/evaluations"
    )


def test_x_request_id_is_echoed_on_errors_too(pdp):
    response = pdp.client.post(
        EVALUATION, {"action": action("read")}, headers={**pdp.pep, "X-Request-ID": "req-77"}
    )
    assert response.status == 400 and response.headers["x-request-id"] == "req-77"


def test_action_search_reads_the_owner_property(pdp):
    owned = {"subject": user("bob"), "resource": document("bob@acme.test")}
    actions = post(pdp, "/access/v1/search/action", owned, pdp.pep).body["results"]
    assert {"name": "update"} in actions
    other = {"subject": user("bob"), "resource": document("carol@acme.test")}
    assert {"name": "update"} not in post(pdp, "/access/v1/search/action", other, pdp.pep).body[
        "results"
    ]


def test_an_item_too_long_fails_alone(pdp):
    body = {
        "subject": user("bob"),
        "action": action("read"),
        "evaluations": [
            {"resource": {"type": "projects", "id": "x" * 1025}},
            {"resource": PROJECT_42},
        ],
    }
    first, second = post(pdp, EVALUATIONS, body, pdp.pep).body["evaluations"]
    assert first["decision"] is False and "longer than" in first["context"]["error"]["message"]
    assert second == {"decision": True}
    too_long_subject = ask("b" * 257, "read", PROJECT_42)
    assert post(pdp, EVALUATION, too_long_subject, pdp.pep).status == 400


def test_without_the_attribute_store_ownership_by_email_fails_closed(own_pdp):
    with own_pdp.core.store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE subject_attributes")
    by_email = post(
        own_pdp, EVALUATION, ask("bob", "update", document("bob@acme.test")), own_pdp.pep
    )
    assert (by_email.status, by_email.body) == (200, {"decision": False})
    by_id = post(own_pdp, EVALUATION, ask("bob", "update", document("bob")), own_pdp.pep)
    assert by_id.body == {"decision": True}


def test_a_user_searches_its_own_resources_and_actions_only(pdp):
    carol = pdp.auth("carol", "acme")
    own = {"subject": user("carol"), "resource": PROJECT_42}
    assert post(pdp, ACME + "/access/v1/search/action", own, carol).body["results"] == [
        {"name": "read"}
    ]
    other = {"subject": user("bob"), "resource": PROJECT_42}
    assert post(pdp, ACME + "/access/v1/search/action", other, carol).status == 403
    resources = {"subject": user("bob"), "action": action("read"), "resource": {"type": "x"}}
    assert post(pdp, ACME + "/access/v1/search/resource", resources, carol).status == 403


def test_a_name_that_becomes_a_role_is_refused_from_the_next_revision(own_pdp):
    body = {"resource": "/projects/42", "action": "read", "subject": "auditors"}
    before = own_pdp.client.post("/v1/check", body, headers=own_pdp.pep)
    assert (before.status, before.body["allowed"]) == (200, False)
    OrgAdmin(own_pdp.core).change_rules(
        Caller.operator("test"),
        "acme",
        [
            {
                "type": "p",
                "subject": "auditors",
                "resource": "/projects/*",
                "action": "read",
                "effect": "allow",
            },
        ],
    )
    # Once someone holds it, `auditors` is a role of acme.
    OrgAdmin(own_pdp.core).set_member_roles(
        Caller.operator("test"), "acme", "dave", ["member", "auditors"]
    )
    after = own_pdp.client.post("/v1/check", body, headers=own_pdp.pep)
    assert after.status == 400 and after.body["error"]["code"] == "subject_is_role"
