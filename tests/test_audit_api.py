"""Audit endpoints over real HTTP: authorisation by the engine, complete pages, bad input."""

from __future__ import annotations

import csv
import io
import shutil
from urllib.parse import quote, urlencode

import pytest

from rolegate.config import REPO_ROOT
from rolegate.store import ChangeSet

GLOBAL_ADMIN = "# rolegate: global-membership\ng, root, platform-admin, *\n"


def get(live, path, as_="ivan", token_org="acme", **params):
    """GET `path?params` with a token for `as_` in `token_org` (ivan is acme's auditor)."""
    query = f"?{urlencode(params)}" if params else ""
    return live.client.get(path + query, headers=live.auth(as_, token_org))


def error_code(response) -> str:
    return response.body["error"]["code"]


def apply(live, added=(), removed=()):
    live.core.store.apply(ChangeSet(added=tuple(added), removed=tuple(removed)), actor="test")
    live.core.refresh()


@pytest.fixture
def platform_live(make_live_server, settings, tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", policies)
    with (policies / "roles.csv").open("a") as handle:
        handle.write("\n" + GLOBAL_ADMIN)
    return make_live_server(settings.replace(policy_dir=str(policies)))


# -- who may audit ---------------------------------------------------------------------------


def test_auditors_and_admins_may_audit_their_org(live):
    for subject in ("ivan", "alice"):
        response = get(live, "/v1/orgs/acme/subjects/bob/permissions", subject)
        assert response.status == 200, response.text


def test_members_without_audit_are_forbidden(live):
    for subject in ("bob", "carol", "dave"):
        response = get(live, "/v1/orgs/acme/matrix", subject)
        assert response.status == 403 and error_code(response) == "forbidden"


def test_missing_token_is_401(live):
    response = live.client.get("/v1/orgs/acme/matrix")
    assert response.status == 401


def test_another_orgs_admin_gets_org_mismatch(live):
    response = get(live, "/v1/orgs/acme/matrix", "erin", "globex")
    assert response.status == 403 and error_code(response) == "org_mismatch"


def test_an_org_less_token_is_decided_by_the_engine(live):
    assert get(live, "/v1/orgs/acme/matrix", "ivan", None).status == 200
    assert get(live, "/v1/orgs/globex/matrix", "ivan", None).status == 403
    # authorisation comes first: nobody learns which orgs exist
    response = get(live, "/v1/orgs/initech/matrix", "ivan", None)
    assert response.status == 403


def test_platform_admin_audits_across_orgs(platform_live):
    response = get(platform_live, "/v1/orgs/globex/matrix", "root", "acme")
    assert response.status == 200
    rows = {row["subject"]: row["cells"] for row in response.body["rows"]}
    # root holds platform-admin in every org through the `*` link, so it is a subject here too
    assert set(rows) == {"bob", "erin", "frank", "root", "(owner)"}
    audit = response.body["columns"].index({"resource": "/audit", "action": "audit"})
    assert rows["root"][audit] == "allow" and rows["frank"][audit] == "none"
    response = get(platform_live, "/v1/orgs/initech/matrix", "root", "acme")
    assert response.status == 404 and error_code(response) == "unknown_org"


def test_a_platform_admin_link_inside_one_org_is_not_global(make_live_server, settings, tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", policies)
    with (policies / "acme.csv").open("a") as handle:
        handle.write("\ng, mallory, platform-admin, acme\n")
    live = make_live_server(settings.replace(policy_dir=str(policies)))
    assert get(live, "/v1/orgs/acme/matrix", "mallory", "acme").status == 200
    response = get(live, "/v1/orgs/globex/matrix", "mallory", "acme")
    assert response.status == 403 and error_code(response) == "org_mismatch"


# -- permissions ------------------------------------------------------------------------------


def test_permissions_of_a_subject(live):
    body = get(live, "/v1/orgs/globex/subjects/frank/permissions", "erin", "globex").body
    assert body["subject"] == "frank" and body["kind"] == "user"
    assert {"role": "contractor", "path": "frank -> contractor"} in body["roles"]
    deny = [item for item in body["permissions"] if item["effect"] == "deny"]
    assert [item["rule"] for item in deny] == [
        "p, contractor, globex, /documents/finance/*, read, deny"
    ]


def test_unknown_subject_is_404(live):
    response = get(live, "/v1/orgs/acme/subjects/erin/permissions")
    assert response.status == 404 and error_code(response) == "unknown_subject"


def test_subject_names_are_escaped_in_the_path(live):
    apply(live, [("g", "<script>", "viewer", "acme")])
    response = get(live, f"/v1/orgs/acme/subjects/{quote('<script>', safe='')}/permissions")
    assert response.status == 200 and response.body["subject"] == "<script>"


# -- who can ----------------------------------------------------------------------------------


def test_who_can_pages_are_complete_and_signed(live):
    apply(live, [("g", f"user{i:03d}", "editor", "acme") for i in range(57)])
    seen, cursor, pages = [], None, 0
    while True:
        params = {"resource": "/projects/42", "action": "update", "limit": 10}
        if cursor:
            params["cursor"] = cursor
        response = get(live, "/v1/orgs/acme/who-can", **params)
        assert response.status == 200, response.text
        seen += [entry["subject"] for entry in response.body["subjects"]]
        cursor = response.body["next_cursor"]
        pages += 1
        if cursor is None:
            break
    assert pages == 6
    assert seen == sorted(["alice", "bob", *(f"user{i:03d}" for i in range(57))])


def test_who_can_reports_the_owner(live):
    body = get(live, "/v1/orgs/acme/who-can", resource="/documents/7", action="update").body
    assert [(entry["subject"], entry["via"]) for entry in body["subjects"]] == [
        ("(owner)", "owner"),
        ("alice", "role"),
    ]


def test_tampered_cursor_is_400(live):
    apply(live, [("g", f"user{i:03d}", "viewer", "acme") for i in range(5)])
    params = {"resource": "/projects/1", "action": "read", "limit": 2}
    cursor = get(live, "/v1/orgs/acme/who-can", **params).body["next_cursor"]
    flipped = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
    for bad in (flipped, "garbage", cursor + "x"):
        response = get(live, "/v1/orgs/acme/who-can", **params, cursor=bad)
        assert response.status == 400 and error_code(response) == "invalid_cursor", bad
    other_query = {**params, "action": "update"}
    response = get(live, "/v1/orgs/acme/who-can", **other_query, cursor=cursor)
    assert response.status == 400 and "another query" in response.body["error"]["message"]


def test_huge_pages_are_clamped_and_bad_limits_refused(live):
    params = {"resource": "/projects/1", "action": "read"}
    assert get(live, "/v1/orgs/acme/who-can", **params, limit=10**9).body["limit"] == 500
    for bad in ("0", "-3", "ten", "1e3"):
        response = get(live, "/v1/orgs/acme/who-can", **params, limit=bad)
        assert response.status == 400, bad
    response = get(live, "/v1/orgs/acme/who-can", action="read")
    assert response.status == 400 and "resource" in response.body["error"]["message"]


# -- matrix -----------------------------------------------------------------------------------


def test_matrix_as_json_and_spreadsheet_safe_csv(live):
    apply(live, [("g", "=1+2", "viewer", "acme")])
    body = get(live, "/v1/orgs/acme/matrix").body
    assert {"resource": "/projects/*", "action": "delete"} in body["columns"]
    response = get(live, "/v1/orgs/acme/matrix", format="csv")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0][0] == "subject"
    subjects = [row[0] for row in rows[1:]]
    assert "'=1+2" in subjects and "=1+2" not in subjects
    column = rows[0].index("delete /projects/*")
    cells = {row[0]: row[column] for row in rows[1:]}
    assert cells["alice"] == "allow" and cells["bob"] == "none"
    assert get(live, "/v1/orgs/acme/matrix", format="xml").status == 400


# -- changes ----------------------------------------------------------------------------------


def test_changes_of_an_org_with_filters(live):
    start = live.core.engine.revision
    apply(live, [("g", "zoe", "editor", "acme")])
    apply(live, [("g", "yann", "viewer", "globex")])
    apply(live, removed=[("g", "zoe", "editor", "acme")])
    body = get(live, "/v1/orgs/acme/changes", since_revision=start).body
    assert [(c["operation"], c["rule"]) for c in body["changes"]] == [
        ("add", "g, zoe, editor, acme"),
        ("remove", "g, zoe, editor, acme"),
    ]
    assert all(c["actor"] == "test" for c in body["changes"])
    assert get(live, "/v1/orgs/acme/changes", until="2000-01-01").body["changes"] == []
    assert get(live, "/v1/orgs/acme/changes", since="not a date").status == 400


def test_change_pages_end_on_revision_boundaries(live):
    start = live.core.engine.revision
    for i in range(3):
        apply(live, [("g", f"n{i}a", "viewer", "acme"), ("g", f"n{i}b", "viewer", "acme")])
    seen, since = [], start
    while since is not None:
        body = get(live, "/v1/orgs/acme/changes", since_revision=since, limit=3).body
        seen += [c["rule"] for c in body["changes"]]
        since = body["next_since_revision"]
    assert len(seen) == 6 and len(set(seen)) == 6


# -- decisions --------------------------------------------------------------------------------


def test_decisions_search(make_live_server, settings):
    live = make_live_server(settings.replace(decision_log_db=True))
    live.check("bob", "acme", "/projects/1", "delete")
    live.check("bob", "acme", "/projects/1", "read")
    live.check("carol", "acme", "/projects/1", "read")
    live.check("bob", "globex", "/projects/1", "read")
    body = get(live, "/v1/orgs/acme/decisions", subject="bob").body
    assert body["source"] == "database"
    assert [(d["action"], d["allowed"]) for d in body["decisions"]] == [
        ("read", True),
        ("delete", False),
    ]
    denied = get(live, "/v1/orgs/acme/decisions", allowed="false").body["decisions"]
    assert [(d["subject"], d["action"]) for d in denied] == [("bob", "delete")]
    assert {d["org"] for d in get(live, "/v1/orgs/acme/decisions").body["decisions"]} == {"acme"}
    assert get(live, "/v1/orgs/acme/decisions", allowed="maybe").status == 400


def test_decisions_without_a_searchable_log_is_404(live):
    response = get(live, "/v1/orgs/acme/decisions")
    assert response.status == 404 and error_code(response) == "decision_log_disabled"
