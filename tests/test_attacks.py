"""The attacks of issue 10, replayed over real HTTP against a live server (SQLite store).

Policy: the samples, a platform admin `root`, and in globex a team `lead` (manages members and
rules, reads documents as a member) whose members `lead2` and `hank` also carry `nofinance`
(no finance documents), a `reporter` role holding only `/reports/:id`, and `hrrole`.

Every refused write is checked to leave the store revision where it was (nothing half-applied).
"""

from __future__ import annotations

import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from rolegate.admin import Caller, OrgAdmin
from rolegate.apikeys import api_keys
from rolegate.config import REPO_ROOT
from rolegate.engine import reads
from rolegate.store import ChangeSet

# API-managed (seeded): the org admins under attack manage these rules through the admin API.
ATTACK_CSV = """# rolegate: managed-by api
# rolegate: global-membership
g, root, platform-admin, *

p, lead, globex, /members, manage, allow
p, lead, globex, /rules, manage, allow
p, lead, globex, /api-keys, manage, allow
p, lead, globex, /hr/*, read, allow
g, lead, member, globex
p, nofinance, globex, /documents/finance/*, read, deny
p, lead2, globex, /projects/lead2, read, allow
g, lead2, lead, globex
g, lead2, nofinance, globex
g, hank, lead, globex
g, hank, nofinance, globex
p, hrrole, globex, /hr/*, read, allow
g, hrrole, viewer, globex
p, reporter, globex, /reports/:id, read, allow
p, reporter, globex, /members, manage, allow
p, reporter, globex, /rules, manage, allow
g, rita, reporter, globex
"""

LEAD_ROLES_CSV = """# Top role `lead`: no role named admin anywhere.
g, lead, staff, *
p, lead, *, /members, manage, allow
p, lead, *, /rules, manage, allow
p, staff, *, /projects/*, read, allow
p, platform-admin, *, /orgs, manage, allow
g, root, platform-admin, *
"""

FINANCE = "/documents/finance/q1"


def attack_policies(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", target, ignore=shutil.ignore_patterns("tests"))
    (target / "attack.csv").write_text(ATTACK_CSV)
    return target


@pytest.fixture
def live(make_live_server, settings, tmp_path):
    return make_live_server(settings.replace(policy_dir=str(attack_policies(tmp_path))))


def with_regex_patterns(settings):
    """The deployment opted in to regular-expression syntax in patterns."""
    return settings.replace(allow_regex_patterns=True)


def call(live, method, path, body=None, *, who):
    subject, org = who
    return live.client.request(method, path, body, headers=live.auth(subject, org))


def code(response) -> tuple[int, str]:
    assert response.body is not None, response.text
    return response.status, response.body.get("error", {}).get("code", "")


def allowed(live, subject, org, resource, action="read", **extra) -> bool:
    response = live.check(subject, org, resource, action, **extra)
    assert response.status == 200, response.text
    return response.body["allowed"]


def p_rule(subject, resource, action="read", effect="allow"):
    return {
        "type": "p",
        "subject": subject,
        "resource": resource,
        "action": action,
        "effect": effect,
    }


class Unchanged:
    """Asserts that the store revision did not move inside the block."""

    def __init__(self, live):
        self.live = live

    def __enter__(self):
        self.before = self.live.core.store.revision()
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            assert self.live.core.store.revision() == self.before, "a refused write changed"


# -- subjects are not roles -------------------------------------------------------------------


ROLE_NAMED = ("admin", "editor", "viewer", "auditor", "contractor", "owner", "platform-admin", "*")


def test_a_token_named_like_a_role_is_refused_on_every_decision_route(live):
    check = {"resource": "/projects/1", "action": "delete"}
    for subject in ROLE_NAMED:
        for org in ("acme", None):
            body = check if org else {**check, "org": "acme"}
            for path, payload in (
                ("/v1/check", body),
                ("/v1/check", {**body, "explain": True}),
                ("/v1/check/batch", {"checks": [body]}),
            ):
                response = call(live, "POST", path, payload, who=(subject, org))
                assert response.status in (401, 403), (subject, path, response.text)
                if subject != "*":  # identity already refuses `*` as a subject (401)
                    assert code(response) == (403, "subject_is_role"), (subject, path, org)


def test_a_real_member_still_decides(live):
    assert allowed(live, "alice", "acme", "/projects/1", "delete")
    assert not allowed(live, "carol", "acme", "/projects/1", "delete")


def test_role_named_tokens_cannot_administer(live):
    with Unchanged(live):
        # sub=admin with no org claim once made mallory admin of globex
        response = call(
            live,
            "PUT",
            "/v1/orgs/globex/members/mallory",
            {"roles": ["admin"]},
            who=("admin", None),
        )
        assert code(response) == (403, "subject_is_role")
        for path in ("/v1/orgs/acme/members", "/v1/orgs/acme/rules", "/v1/orgs/acme/api-keys"):
            assert code(call(live, "GET", path, who=("admin", "acme"))) == (403, "subject_is_role")
        body = {"id": "evilcorp", "admin": "mallory"}
        response = call(live, "POST", "/v1/orgs", body, who=("platform-admin", None))
        assert code(response) == (403, "subject_is_role")
        response = call(live, "DELETE", "/v1/orgs/acme", who=("platform-admin", None))
        assert code(response) == (403, "subject_is_role")
        body = {"rules": [p_rule("editor", "/x")]}
        response = call(live, "POST", "/v1/orgs/acme/rules", body, who=("admin", "acme"))
        assert code(response) == (403, "subject_is_role")
    assert "evilcorp" not in live.core.engine.snapshot.domains
    # the real platform admin still can
    response = call(
        live, "POST", "/v1/orgs", {"id": "realcorp", "admin": "zoe"}, who=("root", None)
    )
    assert response.status == 201, response.text


def test_role_named_tokens_cannot_audit(live):
    for subject in ("auditor", "admin", "platform-admin"):
        for path in (
            "/v1/orgs/acme/matrix",
            "/v1/orgs/acme/who-can?resource=/projects/1&action=read",
            "/v1/orgs/acme/subjects/alice/permissions",
            "/v1/orgs/acme/changes",
        ):
            for org in ("acme", None):
                response = call(live, "GET", path, who=(subject, org))
                assert code(response) == (403, "subject_is_role"), (subject, path, org)
    assert call(live, "GET", "/v1/orgs/acme/matrix", who=("ivan", "acme")).status == 200


def test_audit_views_never_list_role_names_as_subjects(live):
    matrix = call(live, "GET", "/v1/orgs/acme/matrix", who=("ivan", "acme")).body
    subjects = {row["subject"] for row in matrix["rows"]}
    assert "alice" in subjects
    assert not subjects & {"admin", "editor", "viewer", "auditor", "member", "platform-admin"}


def test_a_name_becomes_a_role_when_it_gets_a_member(live):
    def who_reads_hr():
        response = call(
            live,
            "GET",
            "/v1/orgs/globex/who-can?resource=/hr/1&action=read",
            who=("erin", "globex"),
        )
        return {entry["subject"] for entry in response.body["subjects"]}

    # `hrrole` has rules and no members: Casbin cannot tell it from a user with direct rules
    assert "hrrole" in who_reads_hr() and allowed(live, "hrrole", "globex", "/hr/1")
    # a local operator (CLI) is not bound by the escalation guard
    OrgAdmin(live.core).set_member_roles(Caller.operator("ops"), "globex", "gus", ["hrrole"])
    assert "gus" in who_reads_hr() and "hrrole" not in who_reads_hr()
    assert code(live.check("hrrole", "globex", "/hr/1", "read")) == (403, "subject_is_role")


def test_apikey_subjects_only_come_from_keys(live):
    created = live.client.post(
        "/v1/orgs/acme/api-keys",
        {"name": "bot", "roles": ["editor"]},
        headers=live.auth("alice", "acme"),
    )
    assert created.status == 201, created.text
    key, subject = created.body["key"], f"apikey:{created.body['id']}"
    by_key = live.client.post(
        "/v1/check",
        {"resource": "/projects", "action": "create"},
        headers={"Authorization": f"ApiKey {key}"},
    )
    assert by_key.status == 200 and by_key.body["allowed"] is True
    # a token claiming to be the key is refused everywhere
    assert code(live.check(subject, "acme", "/projects", "create")) == (403, "subject_is_role")
    assert code(live.check(subject, None, "/projects", "create", org="acme"))[0] == 403
    response = call(live, "GET", "/v1/orgs/acme/matrix", who=(subject, "acme"))
    assert code(response) == (403, "subject_is_role")

    # expired: the key is refused, and its identity grants nothing by any route
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat(timespec="microseconds")
    with live.core.store.engine.begin() as conn:
        conn.execute(sa.update(api_keys).values(expires_at=past))
    live.core.api_keys.reload_index()  # time passing: keys are answered from memory
    by_key = live.client.post(
        "/v1/check",
        {"resource": "/projects", "action": "create"},
        headers={"X-API-Key": key},
    )
    assert code(by_key) == (401, "api_key_expired")
    for subject_org in ("acme", None):
        response = live.check(subject, subject_org, "/projects", "create", org="acme")
        assert response.status == 403, response.text
        response = call(live, "GET", "/v1/orgs/acme/members", who=(subject, subject_org))
        assert response.status == 403, response.text


def test_role_names_cannot_become_members(live):
    with Unchanged(live):
        for name in ("viewer", "platform-admin", "owner", "nofinance", "apikey:0123456789abcdef"):
            path = f"/v1/orgs/globex/members/{name}"
            response = call(live, "PUT", path, {"roles": ["viewer"]}, who=("erin", "globex"))
            assert response.status == 400, (name, response.text)
        response = call(
            live, "POST", "/v1/orgs", {"id": "newco", "admin": "auditor"}, who=("root", None)
        )
        assert code(response) == (400, "subject_is_role")


def test_bulk_refuses_role_named_items_and_applies_the_others(live):
    items = [
        {"subject": "viewer", "roles": ["member"]},
        {"subject": "gus", "roles": ["nofinance", "member"]},
    ]
    response = call(
        live, "POST", "/v1/orgs/globex/members/bulk", {"items": items}, who=("lead2", "globex")
    )
    assert response.status == 200, response.text
    results = response.body["results"]
    assert results[0]["error"]["code"] == "subject_is_role"
    assert results[1]["status"] == "ok" and response.body["applied"] == 1
    snapshot = live.core.engine.snapshot
    assert reads.member_links(snapshot, "globex", "viewer") == []
    assert {link.role for link in reads.member_links(snapshot, "globex", "gus")} == {
        "nofinance",
        "member",
    }


# -- guards from the engine -------------------------------------------------------------------


def test_regex_patterns_are_refused_by_default(live):
    lead = ("lead2", "globex")
    with Unchanged(live):
        for subject, pattern, who in (
            ("ivan", "/documents/.inance/*", lead),
            ("gus", "/reports/.+", ("rita", "globex")),
            ("gus", "/projects/.*.*.*.*!", ("erin", "globex")),
        ):
            body = {"rules": [p_rule(subject, pattern)]}
            response = call(live, "POST", "/v1/orgs/globex/rules", body, who=who)
            assert code(response) == (400, "unsafe_pattern"), (pattern, response.text)
    assert not allowed(live, "ivan", "globex", FINANCE)


def test_regex_patterns_cannot_escalate_when_allowed(make_live_server, settings, tmp_path):
    settings = with_regex_patterns(settings.replace(policy_dir=str(attack_policies(tmp_path))))
    live = make_live_server(settings)
    with Unchanged(live):
        body = {"rules": [p_rule("ivan", "/documents/.inance/*")]}
        response = call(live, "POST", "/v1/orgs/globex/rules", body, who=("lead2", "globex"))
        assert code(response) == (403, "privilege_escalation"), response.text
        body = {"rules": [p_rule("gus", "/reports/.+")]}
        response = call(live, "POST", "/v1/orgs/globex/rules", body, who=("rita", "globex"))
        assert code(response) == (403, "privilege_escalation"), response.text
    assert not allowed(live, "ivan", "globex", FINANCE)
    assert not allowed(live, "gus", "globex", "/reports/a/b")


def test_narrower_role_cannot_grant_wider_safe_patterns(live):
    rita = ("rita", "globex")
    with Unchanged(live):
        for pattern in ("/reports/*", "/reports/:id/*", "*"):
            body = {"rules": [p_rule("gus", pattern)]}
            response = call(live, "POST", "/v1/orgs/globex/rules", body, who=rita)
            assert code(response) == (403, "privilege_escalation"), (pattern, response.text)
    # the same set written differently is what rita holds: exact, not by spelling
    response = call(
        live, "POST", "/v1/orgs/globex/rules", {"rules": [p_rule("gus", "/reports/:n")]}, who=rita
    )
    assert response.status == 201, response.text
    assert allowed(live, "gus", "globex", "/reports/7")
    assert not allowed(live, "gus", "globex", "/reports/7/raw")


def test_a_lead_cannot_grant_what_their_deny_withholds(live):
    lead = ("lead2", "globex")
    with Unchanged(live):
        for pattern in ("/documents/*", "/documents/finance/*", "/documents/:dir/q1"):
            body = {"rules": [p_rule("ivan", pattern)]}
            response = call(live, "POST", "/v1/orgs/globex/rules", body, who=lead)
            assert code(response) == (403, "privilege_escalation"), (pattern, response.text)
        response = call(live, "PUT", "/v1/orgs/globex/members/gus", {"roles": ["viewer"]}, who=lead)
        assert code(response) == (403, "privilege_escalation")
    assert allowed(live, "lead2", "globex", "/documents/hr/1")
    response = call(
        live,
        "POST",
        "/v1/orgs/globex/rules",
        {"rules": [p_rule("ivan", "/documents/hr/*")]},
        who=lead,
    )
    assert response.status == 201, response.text


def test_lifting_ones_own_deny_by_removing_the_link(live):
    link = {"type": "g", "member": "lead2", "role": "nofinance"}
    with Unchanged(live):
        response = call(
            live, "DELETE", "/v1/orgs/globex/rules", {"rules": [link]}, who=("lead2", "globex")
        )
        assert code(response) == (403, "privilege_escalation"), response.text
        # ... nor by removing the deny rule itself
        deny = p_rule("nofinance", "/documents/finance/*", effect="deny")
        response = call(
            live, "DELETE", "/v1/orgs/globex/rules", {"rules": [deny]}, who=("lead2", "globex")
        )
        assert code(response) == (403, "privilege_escalation"), response.text
    assert not allowed(live, "lead2", "globex", FINANCE)
    # the org admin (who reads finance) may
    response = call(
        live, "DELETE", "/v1/orgs/globex/rules", {"rules": [link]}, who=("erin", "globex")
    )
    assert response.status == 200, response.text
    assert allowed(live, "lead2", "globex", FINANCE)


def test_lifting_ones_own_deny_by_replacing_ones_roles(live):
    with Unchanged(live):
        response = call(
            live,
            "PUT",
            "/v1/orgs/globex/members/hank",
            {"roles": ["hrrole"]},
            who=("hank", "globex"),
        )
        assert code(response) == (403, "privilege_escalation"), response.text
        assert "/documents/finance/" in response.body["error"]["message"]
        bulk = {"items": [{"subject": "hank", "roles": ["lead"]}]}
        response = call(live, "POST", "/v1/orgs/globex/members/bulk", bulk, who=("lead2", "globex"))
        assert response.status == 200
        assert response.body["results"][0]["error"]["code"] == "privilege_escalation"
    assert not allowed(live, "hank", "globex", FINANCE)
    # the org admin (who reads finance) may
    response = call(
        live, "PUT", "/v1/orgs/globex/members/hank", {"roles": ["member"]}, who=("erin", "globex")
    )
    assert response.status == 200, response.text
    assert allowed(live, "hank", "globex", FINANCE)


def test_removing_a_member_cannot_hand_them_the_default_role(make_live_server, settings, tmp_path):
    policies = str(attack_policies(tmp_path))
    live = make_live_server(settings.replace(policy_dir=policies, default_role="viewer"))
    with Unchanged(live):
        response = call(live, "DELETE", "/v1/orgs/globex/members/hank", who=("lead2", "globex"))
        assert code(response) == (403, "privilege_escalation"), response.text
    assert not allowed(live, "hank", "globex", FINANCE)
    response = call(live, "DELETE", "/v1/orgs/globex/members/hank", who=("erin", "globex"))
    assert response.status == 200, response.text
    assert allowed(live, "hank", "globex", FINANCE)  # a non-member now: the default role


def test_owner_rules_are_guarded_too(live):
    rule = p_rule("owner", "/documents/finance/:id")
    with Unchanged(live):
        response = call(
            live, "POST", "/v1/orgs/globex/rules", {"rules": [rule]}, who=("lead2", "globex")
        )
        assert code(response) == (403, "privilege_escalation"), response.text
        assert "owning the resource" in response.body["error"]["message"]
    assert not allowed(live, "gus", "globex", FINANCE, owner="gus")
    response = call(
        live, "POST", "/v1/orgs/globex/rules", {"rules": [rule]}, who=("erin", "globex")
    )
    assert response.status == 201, response.text


def test_api_key_roles_are_guarded_too(live):
    lead = live.auth("lead2", "globex")
    with Unchanged(live):
        response = live.client.post(
            "/v1/orgs/globex/api-keys", {"name": "bot", "roles": ["viewer"]}, headers=lead
        )
        assert code(response) == (403, "privilege_escalation"), response.text
    assert live.core.api_keys.list("globex") == []
    response = live.client.post(
        "/v1/orgs/globex/api-keys", {"name": "bot", "roles": ["nofinance", "member"]}, headers=lead
    )
    assert response.status == 201, response.text


def test_granted_roles_within_ones_own_access_still_pass(live):
    lead = ("lead2", "globex")
    response = call(live, "PUT", "/v1/orgs/globex/members/gus", {"roles": ["nofinance"]}, who=lead)
    assert response.status == 200, response.text
    response = call(
        live, "PUT", "/v1/orgs/globex/members/gus", {"roles": ["nofinance", "member"]}, who=lead
    )
    assert response.status == 200, response.text
    assert allowed(live, "gus", "globex", "/documents/hr/1")
    assert not allowed(live, "gus", "globex", FINANCE)


# -- onboarding -------------------------------------------------------------------------------


def lead_policies(tmp_path: Path) -> Path:
    target = tmp_path / "lead-policies"
    target.mkdir()
    (target / "roles.csv").write_text(LEAD_ROLES_CSV)
    (target / "contoso.csv").write_text("g, carl, lead, contoso\n")
    return target


def test_onboarding_derives_the_admin_role_from_the_policy(make_live_server, settings, tmp_path):
    live = make_live_server(settings.replace(policy_dir=str(lead_policies(tmp_path))))
    response = call(
        live, "POST", "/v1/orgs", {"id": "fabrikam", "admin": "frank"}, who=("root", None)
    )
    assert response.status == 201, response.text
    assert response.body["role"] == "lead"
    assert allowed(live, "frank", "fabrikam", "/members", "manage")
    assert allowed(live, "frank", "fabrikam", "/projects/1")


def test_onboarding_role_from_the_setting(make_live_server, settings, tmp_path):
    live = make_live_server(
        settings.replace(policy_dir=str(lead_policies(tmp_path)), org_admin_role="staff")
    )
    response = call(
        live, "POST", "/v1/orgs", {"id": "fabrikam", "admin": "fay"}, who=("root", None)
    )
    assert response.status == 201, response.text
    assert response.body["role"] == "staff"
    assert not allowed(live, "fay", "fabrikam", "/members", "manage")


def test_onboarding_refuses_when_the_admin_role_is_ambiguous(make_live_server, settings, tmp_path):
    policies = lead_policies(tmp_path)
    with (policies / "roles.csv").open("a") as extra:
        extra.write("p, boss, *, /members, manage, allow\n")
    live = make_live_server(settings.replace(policy_dir=str(policies)))
    with Unchanged(live):
        response = call(
            live, "POST", "/v1/orgs", {"id": "fabrikam", "admin": "frank"}, who=("root", None)
        )
        assert code(response) == (409, "org_admin_role_unknown")
        assert "ROLEGATE_ORG_ADMIN_ROLE" in response.body["error"]["message"]


def test_token_role_holders_count_when_token_roles_are_trusted(
    make_live_server, settings, tmp_path
):
    rule = {"rules": [p_rule("auditor", "/secret/*")]}  # no globex member holds auditor
    policies = str(attack_policies(tmp_path))
    trusted = make_live_server(settings.replace(policy_dir=policies, trust_token_roles=True))
    with Unchanged(trusted):
        response = call(trusted, "POST", "/v1/orgs/globex/rules", rule, who=("lead2", "globex"))
        assert code(response) == (403, "privilege_escalation"), response.text
        assert "a token with role 'auditor'" in response.body["error"]["message"]
    other = tmp_path / "other"
    other.mkdir()
    untrusted = make_live_server(
        settings.replace(
            policy_dir=str(attack_policies(other)), database_url=f"sqlite:///{other / 'x.db'}"
        )
    )
    response = call(untrusted, "POST", "/v1/orgs/globex/rules", rule, who=("lead2", "globex"))
    assert response.status == 201, response.text  # nobody holds auditor in globex: no gain


def test_a_rule_that_breaks_every_check_is_removable_by_who_holds_the_rest(
    make_live_server, settings
):
    live = make_live_server(settings)
    broken = ("p", "nobody", "globex", "/x/**", "read", "allow")  # Casbin cannot compile it
    live.core.store.apply(
        ChangeSet(
            added=[
                broken,
                ("p", "reporter", "globex", "/rules", "manage", "allow"),
                ("g", "rita", "reporter", "globex"),
            ]
        ),
        actor="cli:test",
        managed_by="api",
    )
    live.core.refresh()
    assert not allowed(live, "bob", "globex", "/documents/1")  # every read fails closed
    body = {"rules": [p_rule("nobody", "/x/**")]}
    with Unchanged(live):
        response = call(live, "DELETE", "/v1/orgs/globex/rules", body, who=("rita", "globex"))
        assert code(response) == (403, "privilege_escalation"), response.text
    response = call(live, "DELETE", "/v1/orgs/globex/rules", body, who=("erin", "globex"))
    assert response.status == 200, response.text
    assert allowed(live, "bob", "globex", "/documents/1")


# -- patterns that cannot hurt ----------------------------------------------------------------

REDOS = "/projects/.*.*.*.*!"


def test_redos_pattern_answers_fast_and_other_orgs_are_served(make_live_server, settings, tmp_path):
    live = make_live_server(with_regex_patterns(settings))
    alice = ("alice", "acme")  # acme's admin, holding the pattern (the guard compares regexes
    # by identity), hands it to every viewer
    live.core.store.apply(
        ChangeSet(added=[("p", "alice", "acme", REDOS, "read", "allow")]), actor="cli:test"
    )
    live.core.refresh()
    body = {"rules": [p_rule("viewer", REDOS)]}
    response = call(live, "POST", "/v1/orgs/acme/rules", body, who=alice)
    assert response.status == 201, response.text
    assert allowed(live, "carol", "acme", "/projects/aa!")  # the pattern is in force

    hostile = "/projects/" + "a" * 2000  # Python's re: far past any worker timeout
    answers: dict[str, bool] = {}

    def hostile_check():
        answers["acme"] = allowed(live, "carol", "acme", hostile)

    worker = threading.Thread(target=hostile_check)
    worker.start()
    answers["globex"] = allowed(live, "bob", "globex", "/projects/1")
    worker.join(timeout=10)  # a backtracking matcher would still be running
    assert not worker.is_alive(), "the hostile check did not finish"
    assert answers == {"acme": True, "globex": True}  # viewers read /projects/* anyway


def test_redos_pattern_is_refused_by_default(live):
    with Unchanged(live):
        body = {"rules": [p_rule("viewer", REDOS)]}
        response = call(live, "POST", "/v1/orgs/acme/rules", body, who=("alice", "acme"))
        assert code(response) == (400, "unsafe_pattern"), response.text
        assert "ROLEGATE_ALLOW_REGEX_PATTERNS" in response.body["error"]["message"]


def test_alternation_cannot_hide_from_the_index(make_live_server, settings):
    """`|`, `?` let other first segments match: decisions are Casbin's (issue 10's rules)."""
    live = make_live_server(settings)
    live.core.store.apply(
        ChangeSet(
            added=[
                ("p", "viewer", "*", "/*", "read", "allow"),
                ("p", "viewer", "globex", "/finance/x|/payroll", "read", "deny"),
                ("p", "zed", "acme", "/admin/?panel", "read", "allow"),
            ]
        ),
        actor="cli:test",
    )
    live.core.refresh()
    assert not allowed(live, "erin", "globex", "/payroll")
    assert not allowed(live, "erin", "globex", "/finance/xyz")  # `^/finance/x` is a prefix
    assert allowed(live, "erin", "globex", "/payroll/2")
    assert allowed(live, "zed", "acme", "/adminpanel")
    assert not allowed(live, "zed", "acme", "/admin")
    assert allowed(live, "carol", "acme", "/payroll")  # the deny is globex's


AGREEMENT_PATTERNS = (
    "/projects/:id",
    "/projects/*",
    "/finance/x|/payroll",
    "/projects/.*.*.*.*!",
    "/a{1001}",
    "/files/\\d+",
    "/a$b",
    "/x/**",
)


@pytest.mark.parametrize("allow_regex", [False, True])
def test_lint_and_the_api_refuse_the_same_patterns(
    make_live_server, settings, tmp_path, allow_regex
):
    from rolegate.policy.lint import lint_policy_dir

    if allow_regex:
        settings = with_regex_patterns(settings)
    live = make_live_server(settings)
    for index, pattern in enumerate(AGREEMENT_PATTERNS):
        directory = tmp_path / f"lint{index}"
        directory.mkdir()
        (directory / "acme.csv").write_text(f"p, viewer, acme, {pattern}, read, allow\n")
        report = lint_policy_dir(directory, allow_regex=allow_regex)
        lint_refuses = any(issue.code.startswith("pattern-") for issue in report.errors)
        body = {"rules": [p_rule("viewer", pattern)]}
        before = live.core.store.revision()
        response = call(live, "POST", "/v1/orgs/acme/rules", body, who=("alice", "acme"))
        api_refuses = code(response) == (400, "unsafe_pattern")
        if api_refuses:
            assert live.core.store.revision() == before
        assert lint_refuses == api_refuses, (pattern, allow_regex, report.errors, response.text)


# -- models whose rules cross orgs --------------------------------------------------------------


def test_admin_changes_are_refused_when_rules_can_cross_orgs(make_live_server, settings, tmp_path):
    """With keyMatch domains a rule of one org can apply to another, so the escalation guard
    (which reads one org's rules) cannot bound a change: every admin write is refused."""
    model = (REPO_ROOT / "model.conf").read_text()
    crossing = model.replace('(p.dom == r.dom || p.dom == "*")', "keyMatch(r.dom, p.dom)")
    assert crossing != model
    (tmp_path / "crossing.conf").write_text(crossing)
    live = make_live_server(settings.replace(model=str(tmp_path / "crossing.conf")))
    assert allowed(live, "alice", "acme", "/members", "manage")  # decisions still served
    attempts = [
        ("POST", "/v1/orgs/acme/rules", {"rules": [p_rule("viewer", "/projects/x")]}),
        ("PUT", "/v1/orgs/acme/members/zed", {"roles": ["viewer"]}),
        ("DELETE", "/v1/orgs/acme/members/bob", None),
    ]
    for method, path, body in attempts:
        with Unchanged(live):
            response = call(live, method, path, body, who=("alice", "acme"))
        assert code(response) == (403, "guard_unsupported_model"), (method, path, response.text)
