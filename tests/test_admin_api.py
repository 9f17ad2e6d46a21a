"""The organisation administration API over real HTTP, with SQLite and PostgreSQL stores.

The sample (seed) policies plus a platform admin `root`: alice admins acme, bob edits acme and
views globex, carol views acme, ivan audits acme, erin admins globex, frank contracts for globex.
"""

from __future__ import annotations

import random
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import quote

import pytest

from rolegate.admin import Caller, OrgAdmin
from rolegate.config import REPO_ROOT
from rolegate.engine import CheckRequest, reads
from rolegate.errors import Forbidden
from rolegate.store import ChangeSet

PLATFORM_CSV = """# Platform administrators (hold roles in every org through the `*` domain).
# rolegate: global-membership
g, root, platform-admin, *
"""


def policy_dir(tmp_path: Path) -> Path:
    """The sample policies plus a platform admin."""
    target = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", target, ignore=shutil.ignore_patterns("tests"))
    (target / "platform.csv").write_text(PLATFORM_CSV)
    return target


@pytest.fixture
def live(store_url, make_live_server, settings, tmp_path):
    policies = str(policy_dir(tmp_path))
    return make_live_server(settings.replace(database_url=store_url, policy_dir=policies))


@pytest.fixture
def sqlite_live(make_live_server, settings, tmp_path):
    return make_live_server(settings.replace(policy_dir=str(policy_dir(tmp_path))))


def call(live, method, path, body=None, *, who=("alice", "acme")):
    subject, org = who
    return live.client.request(method, path, body, headers=live.auth(subject, org))


def error_code(response) -> str:
    assert response.body is not None, response.text
    return response.body["error"]["code"]


def put_roles(live, org, subject, roles, who):
    return call(
        live, "PUT", f"/v1/orgs/{org}/members/{quote(subject, safe='')}", {"roles": roles}, who=who
    )


def allowed(live, subject, org, resource, action) -> bool:
    response = live.check(subject, org, resource, action)
    assert response.status == 200, response.text
    return response.body["allowed"]


def direct_roles(live, org, subject) -> list[str]:
    return sorted(
        rule[2]
        for rule in live.core.engine.snapshot.rules(org)
        if rule[0] == "g" and rule[1] == subject
    )


def operator_rules(live, *rules, managed_by="files"):
    """Rules written by a local operator (CLI-equivalent), e.g. custom roles admins lack."""
    revision = live.core.store.apply(
        ChangeSet(added=rules), actor="cli:test", managed_by=managed_by
    )
    live.core.refresh()
    return revision


# -- members ----------------------------------------------------------------------------------


def test_admin_sets_roles_and_the_next_decision_sees_it(live):
    assert not allowed(live, "dave", "acme", "/projects", "create")
    before = live.core.engine.revision
    response = put_roles(live, "acme", "dave", ["editor"], ("alice", "acme"))
    assert response.status == 200, response.text
    assert response.body["roles"] == ["editor"]
    assert response.body["revision"] == before + 1
    assert allowed(live, "dave", "acme", "/projects", "create")  # no re-login
    entries = live.core.store.changes(since_revision=before)
    assert {(e.actor, e.operation, ", ".join(e.rule)) for e in entries} == {
        ("alice", "remove", "g, dave, member, acme"),
        ("alice", "add", "g, dave, editor, acme"),
    }


def test_new_member_and_removal(live):
    assert put_roles(live, "acme", "zed", ["viewer"], ("alice", "acme")).status == 200
    assert allowed(live, "zed", "acme", "/projects/1", "read")
    response = call(live, "DELETE", "/v1/orgs/acme/members/zed")
    assert response.status == 200, response.text
    assert not allowed(live, "zed", "acme", "/projects/1", "read")
    again = call(live, "DELETE", "/v1/orgs/acme/members/zed")
    assert (again.status, error_code(again)) == (404, "not_found")


def test_editor_and_viewer_cannot_manage_members(live):
    for who in (("bob", "acme"), ("carol", "acme"), ("ivan", "acme")):
        response = put_roles(live, "acme", "dave", ["viewer"], who)
        assert (response.status, error_code(response)) == (403, "forbidden"), who
    assert direct_roles(live, "acme", "dave") == ["member"]


def test_nobody_touches_another_org(live):
    response = put_roles(live, "globex", "bob", ["admin"], ("alice", "acme"))
    assert (response.status, error_code(response)) == (403, "org_mismatch")
    listing = call(live, "GET", "/v1/orgs/globex/members", who=("alice", "acme"))
    assert (listing.status, error_code(listing)) == (403, "org_mismatch")
    # a token naming no org is decided in the URL's org: alice holds nothing in globex
    response = put_roles(live, "globex", "bob", ["admin"], ("alice", None))
    assert (response.status, error_code(response)) == (403, "forbidden")
    assert direct_roles(live, "globex", "bob") == ["viewer"]


def test_unknown_role_is_404(live):
    response = put_roles(live, "acme", "dave", ["superuser"], ("alice", "acme"))
    assert (response.status, error_code(response)) == (404, "unknown_role")
    # a role of another org does not exist here
    response = put_roles(live, "acme", "dave", ["contractor"], ("alice", "acme"))
    assert (response.status, error_code(response)) == (404, "unknown_role")


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        ("x" * 300, {"roles": ["viewer"]}),
        ("eve\x07", {"roles": ["viewer"]}),
        ("eve,admin", {"roles": ["viewer"]}),
        ("eve", {"roles": ["viewer"], "org": "globex"}),
        ("eve", {"roles": "viewer"}),
        ("eve", {"roles": []}),
        ("eve", {"roles": ["viewer", "viewer"]}),
        ("eve", {"roles": ["v" * 300]}),
        ("eve", {"roles": ["view\u200ber"]}),
        ("eve", ["viewer"]),
        ("apikey:0123456789abcdef", {"roles": ["viewer"]}),
        ("editor", {"roles": ["viewer"]}),  # a role name: subject_is_role
    ],
)
def test_bad_member_input_is_400_and_changes_nothing(sqlite_live, subject, body):
    live = sqlite_live
    before = live.core.store.revision()
    path = f"/v1/orgs/acme/members/{quote(subject, safe='')}"
    response = call(live, "PUT", path, body)
    code = "subject_is_role" if subject == "editor" else "invalid_request"
    assert (response.status, error_code(response)) == (400, code), response.text
    assert live.core.store.revision() == before


def test_malformed_bodies(sqlite_live):
    live = sqlite_live
    headers = {**live.auth("alice", "acme"), "Content-Type": "application/json"}
    response = live.client.request("PUT", "/v1/orgs/acme/members/eve", raw=b"{", headers=headers)
    assert (response.status, error_code(response)) == (400, "invalid_request")
    response = live.client.request(
        "PUT", "/v1/orgs/acme/members/eve", raw=b"roles", headers=live.auth("alice", "acme")
    )
    assert response.status == 415
    response = call(live, "GET", "/v1/orgs/acme/members?limit=0")
    assert (response.status, error_code(response)) == (400, "invalid_request")
    response = call(live, "GET", "/v1/orgs/acme/members?page=2")
    assert (response.status, error_code(response)) == (400, "invalid_request")
    response = live.client.request("PUT", "/v1/orgs/acme/members/eve", {"roles": ["viewer"]})
    assert response.status == 401


def test_last_admin_cannot_leave_or_be_demoted(live):
    response = put_roles(live, "acme", "alice", ["editor"], ("alice", "acme"))
    assert (response.status, error_code(response)) == (409, "last_admin")
    response = call(live, "DELETE", "/v1/orgs/acme/members/alice")
    assert (response.status, error_code(response)) == (409, "last_admin")
    assert direct_roles(live, "acme", "alice") == ["admin"]
    # with a second admin, alice may step down
    assert put_roles(live, "acme", "dave", ["admin"], ("alice", "acme")).status == 200
    response = put_roles(live, "acme", "alice", ["viewer"], ("alice", "acme"))
    assert response.status == 200, response.text
    assert not allowed(live, "alice", "acme", "/members", "manage")
    response = put_roles(live, "acme", "dave", ["viewer"], ("dave", "acme"))
    assert (response.status, error_code(response)) == (409, "last_admin")


def test_last_admin_through_org_rules(sqlite_live):
    live = sqlite_live
    body = {
        "rules": [
            {
                "type": "p",
                "subject": "admin",
                "resource": "/members",
                "action": "manage",
                "effect": "deny",
            }
        ]
    }
    response = call(live, "POST", "/v1/orgs/acme/rules", body)
    assert (response.status, error_code(response)) == (409, "last_admin")


# -- privilege escalation ---------------------------------------------------------------------


def test_escalation_is_refused(live):
    # a team lead manages members and is otherwise a plain member
    operator_rules(
        live,
        ("p", "team-lead", "acme", "/members", "manage", "allow"),
        ("g", "team-lead", "member", "acme"),
        ("g", "tina", "team-lead", "acme"),
    )
    lead = ("tina", "acme")
    for role in ("admin", "editor"):
        response = put_roles(live, "acme", "carol", [role], lead)
        assert (response.status, error_code(response)) == (403, "privilege_escalation"), role
        assert role in response.body["error"]["message"]
    assert direct_roles(live, "acme", "carol") == ["viewer"]
    assert put_roles(live, "acme", "carol", ["member"], lead).status == 200
    assert put_roles(live, "acme", "carol", ["team-lead"], lead).status == 200
    # an admin grants editor and admin
    assert put_roles(live, "acme", "dave", ["editor"], ("alice", "acme")).status == 200
    assert put_roles(live, "acme", "dave", ["admin"], ("alice", "acme")).status == 200


def test_admin_cannot_grant_a_custom_role_holding_more_than_admins(live):
    operator_rules(live, ("p", "billing", "acme", "/billing", "manage", "allow"))
    response = put_roles(live, "acme", "dave", ["billing"], ("alice", "acme"))
    assert (response.status, error_code(response)) == (403, "privilege_escalation")
    # ... nor create such a rule, nor link a role to it
    body = {
        "rules": [
            {
                "type": "p",
                "subject": "x",
                "resource": "/billing",
                "action": "manage",
                "effect": "allow",
            }
        ]
    }
    response = call(live, "POST", "/v1/orgs/acme/rules", body)
    assert (response.status, error_code(response)) == (403, "privilege_escalation")
    response = call(
        live,
        "POST",
        "/v1/orgs/acme/rules",
        {"rules": [{"type": "g", "member": "editor", "role": "billing"}]},
    )
    assert (response.status, error_code(response)) == (403, "privilege_escalation")
    assert not allowed(live, "bob", "acme", "/billing", "manage")


def test_escalation_check_sees_deny_rules_and_narrower_patterns(sqlite_live):
    live = sqlite_live
    # frank (contractor: no finance documents) may manage globex members as a contractor lead
    operator_rules(
        live,
        ("p", "contractor-lead", "globex", "/members", "manage", "allow"),
        ("g", "contractor-lead", "contractor", "globex"),
        ("g", "frank", "contractor-lead", "globex"),
        ("p", "reader", "globex", "/reports/:id", "read", "allow"),
        ("g", "nina", "reader", "globex"),
        ("p", "reader-lead", "globex", "/members", "manage", "allow"),
        ("g", "nina", "reader-lead", "globex"),
        ("p", "all-reports", "globex", "/reports/*", "read", "allow"),
    )
    frank = ("frank", "globex")
    # viewer reads all documents, finance included: more than frank has
    response = put_roles(live, "globex", "gus", ["viewer"], frank)
    assert (response.status, error_code(response)) == (403, "privilege_escalation")
    # contractor carries the same deny: fine
    assert put_roles(live, "globex", "gus", ["contractor"], frank).status == 200
    # /reports/* reaches /reports/a/b, which /reports/:id does not
    response = put_roles(live, "globex", "gus", ["all-reports"], ("nina", "globex"))
    assert (response.status, error_code(response)) == (403, "privilege_escalation")
    assert put_roles(live, "globex", "gus", ["reader"], ("nina", "globex")).status == 200


# -- bulk -------------------------------------------------------------------------------------


def test_bulk_reports_each_item_and_applies_the_valid_ones_at_once(live):
    before = live.core.engine.revision
    items = [
        {"subject": "dave", "roles": ["editor"]},
        {"subject": "zoe", "roles": ["viewer"]},
        {"subject": "yan", "roles": ["viewer"]},
        {"subject": "yan", "roles": ["admin"]},
        {"subject": "xia", "roles": ["superuser"]},
        {"subject": "w\x00", "roles": ["viewer"]},
        {"subject": "vic", "roles": ["viewer"], "extra": 1},
        {"subject": "alice", "roles": ["viewer"]},
        "not an object",
    ]
    response = call(live, "POST", "/v1/orgs/acme/members/bulk", {"items": items})
    assert response.status == 200, response.text
    results = response.body["results"]
    statuses = [r["status"] if r["status"] == "ok" else r["error"]["code"] for r in results]
    assert statuses == [
        "ok",
        "ok",
        "duplicate_item",
        "duplicate_item",
        "unknown_role",
        "invalid_request",
        "invalid_request",
        "last_admin",
        "invalid_request",
    ]
    assert response.body["applied"] == 2
    assert response.body["revision"] == before + 1
    assert {e.revision for e in live.core.store.changes(since_revision=before)} == {before + 1}
    assert direct_roles(live, "acme", "dave") == ["editor"]
    assert direct_roles(live, "acme", "zoe") == ["viewer"]
    assert direct_roles(live, "acme", "yan") == []
    assert direct_roles(live, "acme", "alice") == ["admin"]


def test_bulk_body_errors_and_authorization(sqlite_live):
    live = sqlite_live
    for body in ({"items": []}, {"items": "x"}, {"items": [], "x": 1}, {}):
        response = call(live, "POST", "/v1/orgs/acme/members/bulk", body)
        assert (response.status, error_code(response)) == (400, "invalid_request"), body
    response = call(
        live,
        "POST",
        "/v1/orgs/acme/members/bulk",
        {"items": [{"subject": "zoe", "roles": ["viewer"]}]},
        who=("bob", "acme"),
    )
    assert (response.status, error_code(response)) == (403, "forbidden")


# -- concurrency ------------------------------------------------------------------------------


def test_concurrent_role_changes_last_writer_wins_and_nothing_is_lost(live):
    roles = ["viewer", "member", "editor"]
    results: list = []
    errors: list = []

    def change_dave(index: int) -> None:
        try:
            role = roles[index % len(roles)]
            results.append((put_roles(live, "acme", "dave", [role], ("alice", "acme")), role))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def add_other(index: int) -> None:
        try:
            response = put_roles(live, "acme", f"user{index}", ["viewer"], ("alice", "acme"))
            results.append((response, None))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    before = live.core.store.revision()
    threads = [threading.Thread(target=change_dave, args=(i,)) for i in range(6)]
    threads += [threading.Thread(target=add_other, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(response.status == 200 for response, _ in results), [r.text for r, _ in results]
    dave_writes = sorted((r.body["revision"], role) for r, role in results if role is not None)
    last_role = dave_writes[-1][1]
    live.core.refresh()
    assert direct_roles(live, "acme", "dave") == [last_role]
    for index in range(6):
        assert direct_roles(live, "acme", f"user{index}") == ["viewer"]
    # every write is in the log, each under a revision of its own
    logged = {e.revision for e in live.core.store.changes(since_revision=before)}
    assert logged == set(range(before + 1, live.core.store.revision() + 1))
    user_revisions = {r.body["revision"] for r, role in results if role is None}
    assert len(user_revisions) == 6 and user_revisions <= logged
    assert allowed(live, "dave", "acme", "/projects", "create") == (last_role == "editor")


# -- listing ----------------------------------------------------------------------------------


def test_members_list_is_paginated_with_inherited_roles(live):
    first = call(live, "GET", "/v1/orgs/acme/members?limit=2")
    assert first.status == 200, first.text
    assert [m["subject"] for m in first.body["members"]] == ["alice", "bob"]
    assert first.body["next"] == "bob"
    bob = first.body["members"][1]
    assert bob == {
        "subject": "bob",
        "roles": ["editor"],
        "inherited": ["member", "viewer"],
        "managed_by": "api",
    }
    rest = call(live, "GET", "/v1/orgs/acme/members?limit=10&after=bob")
    assert [m["subject"] for m in rest.body["members"]] == ["carol", "dave", "ivan"]
    assert rest.body["next"] is None
    # auditors read members; viewers do not
    assert call(live, "GET", "/v1/orgs/acme/members", who=("ivan", "acme")).status == 200
    response = call(live, "GET", "/v1/orgs/acme/members", who=("carol", "acme"))
    assert (response.status, error_code(response)) == (403, "forbidden")


# -- org rules --------------------------------------------------------------------------------


def test_org_rules_list_add_remove(live):
    erin = ("erin", "globex")
    listing = call(live, "GET", "/v1/orgs/globex/rules", who=erin)
    assert listing.status == 200, listing.text
    assert listing.body["rules"] == [
        {"type": "g", "member": "contractor", "role": "member"},
        {
            "type": "p",
            "subject": "contractor",
            "resource": "/documents/finance/*",
            "action": "read",
            "effect": "deny",
        },
    ]
    new_role = [
        {
            "type": "p",
            "subject": "reviewer",
            "resource": "/projects/*",
            "action": "update",
            "effect": "allow",
        },
        {"type": "g", "member": "reviewer", "role": "viewer"},
    ]
    response = call(live, "POST", "/v1/orgs/globex/rules", {"rules": new_role}, who=erin)
    assert response.status == 201, response.text
    assert put_roles(live, "globex", "bob", ["reviewer"], erin).status == 200
    assert allowed(live, "bob", "globex", "/projects/9", "update")
    response = call(live, "POST", "/v1/orgs/globex/rules", {"rules": new_role[:1]}, who=erin)
    assert (response.status, error_code(response)) == (409, "rule_exists")
    response = call(live, "DELETE", "/v1/orgs/globex/rules", {"rules": new_role[:1]}, who=erin)
    assert response.status == 200, response.text
    assert not allowed(live, "bob", "globex", "/projects/9", "update")
    response = call(live, "DELETE", "/v1/orgs/globex/rules", {"rules": new_role[:1]}, who=erin)
    assert (response.status, error_code(response)) == (404, "not_found")


@pytest.mark.parametrize(
    ("rule", "status", "code"),
    [
        ({"type": "g", "member": "bob", "role": "admin"}, 400, "invalid_request"),
        ({"type": "g", "member": "contractor", "role": "nope"}, 404, "unknown_role"),
        ({"type": "g", "member": "brand-new", "role": "viewer"}, 400, "invalid_request"),
        ({"type": "p", "subject": "x", "resource": "/a", "action": "read"}, 400, "invalid_request"),
        (
            {"type": "p", "subject": "x", "resource": "/a", "action": "read", "effect": "maybe"},
            400,
            "invalid_request",
        ),
        (
            {
                "type": "p",
                "subject": "x",
                "resource": "/a",
                "action": "read",
                "effect": "allow",
                "org": "*",
            },
            400,
            "invalid_request",
        ),
        (
            {"type": "p", "subject": "x", "resource": "/a #b", "action": "read", "effect": "deny"},
            400,
            "invalid_request",
        ),
        ({"type": "q", "subject": "x"}, 400, "invalid_request"),
    ],
)
def test_bad_rules(sqlite_live, rule, status, code):
    response = call(
        sqlite_live, "POST", "/v1/orgs/globex/rules", {"rules": [rule]}, who=("erin", "globex")
    )
    assert (response.status, error_code(response)) == (status, code), response.text


def test_rules_endpoint_does_not_edit_memberships(sqlite_live):
    membership = {"type": "g", "member": "erin", "role": "admin"}
    response = call(
        sqlite_live,
        "DELETE",
        "/v1/orgs/globex/rules",
        {"rules": [membership]},
        who=("erin", "globex"),
    )
    assert (response.status, error_code(response)) == (400, "invalid_request")


def test_lifting_a_deny_needs_the_permission(sqlite_live):
    live = sqlite_live
    operator_rules(
        live,
        ("p", "rules-keeper", "globex", "/rules", "manage", "allow"),
        ("g", "frank", "rules-keeper", "globex"),
    )
    operator_rules(
        live, ("p", "contractor", "globex", "/documents/hr/*", "read", "deny"), managed_by="api"
    )
    deny = {
        "type": "p",
        "subject": "contractor",
        "resource": "/documents/hr/*",
        "action": "read",
        "effect": "deny",
    }
    response = call(
        live, "DELETE", "/v1/orgs/globex/rules", {"rules": [deny]}, who=("frank", "globex")
    )
    assert (response.status, error_code(response)) == (403, "privilege_escalation")
    response = call(
        live, "DELETE", "/v1/orgs/globex/rules", {"rules": [deny]}, who=("erin", "globex")
    )
    assert response.status == 200, response.text
    assert allowed(live, "frank", "globex", "/documents/hr/q3", "read")
    # The finance deny comes from globex.csv: the admin API does not remove it.
    finance = {**deny, "resource": "/documents/finance/*"}
    response = call(
        live, "DELETE", "/v1/orgs/globex/rules", {"rules": [finance]}, who=("erin", "globex")
    )
    assert (response.status, error_code(response)) == (409, "managed_by_files")
    assert "globex.csv" in response.text


# -- organisations ----------------------------------------------------------------------------


def test_platform_admin_creates_and_offboards_an_org(live):
    root = ("root", None)
    response = call(
        live, "POST", "/v1/orgs", {"id": "initech", "name": "Initech", "admin": "zoe"}, who=root
    )
    assert response.status == 201, response.text
    assert response.body["admin"] == "zoe"
    # the new admin works at once
    assert put_roles(live, "initech", "yan", ["editor"], ("zoe", "initech")).status == 200
    assert allowed(live, "yan", "initech", "/projects", "create")
    key = call(
        live,
        "POST",
        "/v1/orgs/initech/api-keys",
        {"name": "ci", "roles": ["viewer"]},
        who=("zoe", "initech"),
    )
    assert key.status == 201, key.text
    again = call(live, "POST", "/v1/orgs", {"id": "initech", "admin": "zoe"}, who=root)
    assert (again.status, error_code(again)) == (409, "org_exists")

    before = live.core.store.revision()
    response = call(live, "DELETE", "/v1/orgs/initech", who=root)
    assert response.status == 200, response.text
    assert response.body["revision"] == before + 1
    assert response.body["removed_rules"] == 3
    assert response.body["revoked_api_keys"] == 1
    entries = live.core.store.changes(since_revision=before)
    assert {(e.revision, e.actor, e.operation, e.org) for e in entries} == {
        (before + 1, "root", "remove", "initech")
    }
    assert len(entries) == 3
    assert live.core.store.load_domains(["initech"])[1] == []
    assert not allowed(live, "zoe", "initech", "/members", "manage")
    used = live.client.post(
        "/v1/check",
        {"resource": "/projects/1", "action": "read"},
        headers={"Authorization": f"ApiKey {key.body['key']}"},
    )
    assert (used.status, error_code(used)) == (401, "api_key_revoked")
    gone = call(live, "DELETE", "/v1/orgs/initech", who=root)
    assert (gone.status, error_code(gone)) == (404, "unknown_org")


def test_only_platform_admins_manage_orgs(sqlite_live):
    live = sqlite_live
    for who in (("alice", "acme"), ("alice", None)):
        response = call(live, "POST", "/v1/orgs", {"id": "initech", "admin": "alice"}, who=who)
        assert (response.status, error_code(response)) == (403, "forbidden")
        response = call(live, "DELETE", "/v1/orgs/acme", who=who)
        assert (response.status, error_code(response)) == (403, "forbidden")
    # platform admins are not admins of every org's members
    response = put_roles(live, "acme", "dave", ["viewer"], ("root", "acme"))
    assert (response.status, error_code(response)) == (403, "forbidden")


@pytest.mark.parametrize(
    "body",
    [
        {"id": "in*tech", "admin": "zoe"},
        {"id": "initech", "admin": "zoe", "plan": "gold"},
        {"id": "o" * 300, "admin": "zoe"},
        {"id": "initech", "admin": "zo\te"},
        {"id": "initech"},
        {"id": "initech", "admin": "zoe", "name": "\x1b[31m"},
    ],
)
def test_bad_org_bodies(sqlite_live, body):
    response = call(sqlite_live, "POST", "/v1/orgs", body, who=("root", None))
    assert (response.status, error_code(response)) == (400, "invalid_request"), response.text


def test_operator_acts_without_policy_but_keeps_the_invariants(sqlite_live):
    live = sqlite_live
    admin = OrgAdmin(live.core)
    operator = Caller.operator("ops")
    result = admin.set_member_roles(operator, "acme", "dave", ["admin"])
    assert live.core.store.changes(since_revision=result["revision"] - 1)[0].actor == "cli:ops"
    admin.remove_member(operator, "acme", "alice")
    with pytest.raises(Exception) as caught:
        admin.remove_member(operator, "acme", "dave")
    assert getattr(caught.value, "code", None) == "last_admin"


# -- the escalation guard against forward decisions -------------------------------------------

GUARD_PATTERNS = ("/d/*", "/d/f/*", "/d/:id", "/d/f/:id", "/r/:id", "/r/*", "*", "/d/:id/x")
GUARD_RESOURCES = (
    "/",
    "/z",
    "/d/",
    "/d/x",
    "/d/x/y",
    "/d/x/x",
    "/d/f/",
    "/d/f/x",
    "/d/f/x/y",
    "/r/1",
    "/r/1/2",
)
GUARD_ROLES = ("viewer", "member", "r1", "r2", "r3")
GUARD_MEMBERS = ("u0", "u1", "u2", "u3")


def random_org_rules(rng):
    rules = {("g", "u0", "r3", "acme")}  # the actor manages something
    for member in GUARD_MEMBERS:
        for role in rng.sample(GUARD_ROLES, rng.randint(0, 2)):
            rules.add(("g", member, role, "acme"))
    for role in ("r1", "r2", "r3"):
        for _ in range(rng.randint(0, 3)):
            effect = rng.choice(("allow", "allow", "deny"))
            rules.add(("p", role, "acme", rng.choice(GUARD_PATTERNS), "read", effect))
    if rng.random() < 0.3:
        rules.add(("g", "r1", rng.choice(("r2", "viewer")), "acme"))
    return rules


def random_change(rng, rules):
    present = sorted(rules)
    kind = rng.random()
    if kind < 0.35 and present:
        return ChangeSet(removed=[rng.choice(present)])
    if kind < 0.7:
        subject = rng.choice(("r1", "r2", "u1", "u2"))
        effect = rng.choice(("allow", "deny"))
        rule = ("p", subject, "acme", rng.choice(GUARD_PATTERNS), "read", effect)
    else:
        rule = ("g", rng.choice(GUARD_MEMBERS[1:]), rng.choice(GUARD_ROLES), "acme")
    return ChangeSet(added=[rule] if rule not in rules else [])


def test_guard_agrees_with_decisions_on_random_changes(core):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    admin = OrgAdmin(core)
    templates = [rule for rule in core.engine.snapshot.rules("*")]
    engine = core.engine
    refused = accepted = 0
    for case in range(150):
        rules = random_org_rules(rng)
        before = engine.load(1, [*templates, *rules])
        change = random_change(rng, rules)
        after = before.with_changes(2, change.added, change.removed)
        base = CheckRequest("u0", "acme", "", "")
        where = f"seed={seed} case={case} rules={sorted(rules)} change={change}"

        def decides(snapshot, subject, resource, owner=False):
            """What a caller named `subject` gets: nothing when the name is a role (refused)."""
            if subject in reads.role_names(snapshot) | reads.org_roles(snapshot, "acme"):
                return False
            request = CheckRequest(subject, "acme", resource, "read", subject if owner else "")
            return engine.check(request, snapshot).allowed

        try:
            admin._check_escalation(base, before, after, "acme")
        except Forbidden as error:
            refused += 1
            found = re.search(
                r"lets '([^']+)'( owning the resource)? read '([^']*)', which", error.message
            )
            assert found, (where, error.message)
            subject, owner, resource = found.group(1), bool(found.group(2)), found.group(3)
            assert decides(after, subject, resource, owner), where
            assert not decides(before, subject, resource, owner), where
            assert not decides(before, "u0", resource, owner), where
            continue
        accepted += 1
        names = reads.names_in(before, "acme") | reads.names_in(after, "acme")
        subjects = names - reads.role_names(after) - reads.org_roles(after, "acme")
        for subject in subjects:
            for resource in GUARD_RESOURCES:
                if decides(after, subject, resource) and not decides(before, subject, resource):
                    assert decides(before, "u0", resource), (where, subject, resource)
    assert refused > 10 and accepted > 10, (seed, refused, accepted)
