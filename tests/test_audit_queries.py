"""Reverse queries (permissions, who-can, matrix) answer what the engine answers, and nothing leaks.

The sample policy pins the expected answers; Hypothesis then generates random policies and
compares every reverse query with forward decisions: `Engine.check` for permissions and who-can,
Casbin's own enforcer for the matrix. Names are prefixed by the domain that uses them so that a
leak of another org's subjects or rules is visible.
"""

from __future__ import annotations

import json

import casbin
import pytest
from casbin.util import key_match
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rolegate.audit import (
    ANY_SUBJECT,
    OWNER_SUBJECT,
    access_matrix,
    effective_permissions,
    is_platform_admin,
    org_exists,
    org_names,
    require_org,
    require_subject,
    who_can,
)
from rolegate.audit.queries import page_after
from rolegate.config import REPO_ROOT
from rolegate.engine import CheckRequest, Engine, reads
from rolegate.engine.patterns import compile_matcher
from rolegate.errors import NotFound
from rolegate.rules import TEMPLATE_DOMAIN, format_rule, rule_domain
from rolegate.store import read_policy_dir

MODEL = REPO_ROOT / "model.conf"


def sample_engine(extra=(), default_role=None) -> Engine:
    engine = Engine.from_model_file(MODEL, default_role=default_role)
    rules = [item.rule for item in read_policy_dir(REPO_ROOT / "policies")]
    engine.load(1, [*rules, *extra])
    return engine


@pytest.fixture
def engine() -> Engine:
    return sample_engine()


def subjects(entries) -> list[str]:
    return [entry.subject for entry in entries]


# -- the sample policy ------------------------------------------------------------------------


def test_permissions_show_rules_with_role_paths_and_owner_condition(engine):
    held = {
        (p.resource, p.action, p.effect, p.condition): p
        for p in effective_permissions(engine.snapshot, "bob", "acme")
    }
    update = held[("/projects/*", "update", "allow", None)]
    assert update.path == ("bob", "editor")
    assert format_rule(update.rule) == "p, editor, *, /projects/*, update, allow"
    read = held[("/projects/*", "read", "allow", None)]
    assert read.to_dict()["path"] == "bob -> editor -> member -> viewer"
    owner = held[("/documents/:id", "update", "allow", "owner")]
    assert owner.path == ("bob", "owner")
    assert ("/projects/*", "delete", "allow", None) not in held  # admins only
    assert all(rule_domain(p.rule) in ("acme", "*") for p in held.values())


def test_permissions_show_deny_rules_as_such(engine):
    held = effective_permissions(engine.snapshot, "frank", "globex")
    denies = [p.to_dict() for p in held if p.effect == "deny"]
    assert denies == [
        {
            "resource": "/documents/finance/*",
            "action": "read",
            "effect": "deny",
            "rule": "p, contractor, globex, /documents/finance/*, read, deny",
            "from": "org",
            "path": "frank -> contractor",
            "roles": ["contractor"],
            "condition": None,
        }
    ]


def test_who_can_update_a_document_names_admin_and_the_owner(engine):
    entries = who_can(engine, engine.snapshot, "acme", "/documents/7", "update")
    assert subjects(entries) == [OWNER_SUBJECT, "alice"]
    owner, alice = (entry.to_dict() for entry in entries)
    assert owner["via"] == "owner" and owner["kind"] == "owner"
    assert owner["rule"] == "p, owner, *, /documents/:id, update, allow"
    assert alice["path"] == "alice -> admin" and alice["via"] == "role"


def test_who_can_takes_deny_rules_into_account(engine):
    entries = who_can(engine, engine.snapshot, "globex", "/documents/finance/q3", "read")
    assert subjects(entries) == ["bob", "erin"]  # frank the contractor is denied
    entries = who_can(engine, engine.snapshot, "globex", "/documents/q3", "read")
    assert subjects(entries) == ["bob", "erin", "frank"]


def test_who_can_accepts_a_pattern(engine):
    entries = who_can(engine, engine.snapshot, "acme", "/projects/*", "update")
    assert subjects(entries) == ["alice", "bob"]


def test_api_keys_are_subjects(engine):
    engine = sample_engine([("g", "apikey:k1", "viewer", "acme")])
    entries = who_can(engine, engine.snapshot, "acme", "/projects/1", "read")
    key = next(entry.to_dict() for entry in entries if entry.subject == "apikey:k1")
    assert key["kind"] == "apikey" and key["path"] == "apikey:k1 -> viewer"


def test_default_role_is_reported_as_any_other_subject():
    engine = sample_engine(default_role="viewer")
    entries = who_can(engine, engine.snapshot, "acme", "/projects/1", "read")
    anyone = next(entry for entry in entries if entry.subject == ANY_SUBJECT)
    assert anyone.via == "default_role"
    assert engine.check(CheckRequest("stranger", "acme", "/projects/1", "read")).allowed


def test_matrix_cells_distinguish_allow_deny_and_none(engine):
    matrix = access_matrix(engine, engine.snapshot, "globex")
    columns = list(matrix.columns)
    rows = dict(matrix.rows)
    finance = columns.index(("/documents/finance/*", "read"))
    delete = columns.index(("/projects/*", "delete"))
    assert rows["frank"][finance] == "deny"
    assert rows["bob"][finance] == "allow"
    assert rows["bob"][delete] == "none"
    assert rows["erin"][delete] == "allow"
    assert set(rows) == {"bob", "erin", "frank", OWNER_SUBJECT}
    header, table = matrix.to_table()
    assert header[0] == "subject" and "read /documents/finance/*" in header
    assert [row[0] for row in table] == sorted(rows)


def test_members_roles_include_inherited_roles(engine):
    matrix = access_matrix(engine, engine.snapshot, "acme")
    assert matrix.roles["bob"] == {
        "editor": "bob -> editor",
        "member": "bob -> editor -> member",
        "viewer": "bob -> editor -> member -> viewer",
    }


def test_unknown_org_and_subject_are_not_found(engine):
    with pytest.raises(NotFound) as caught:
        require_org(engine.snapshot, "initech")
    assert caught.value.code == "unknown_org"
    with pytest.raises(NotFound) as caught:
        require_subject(engine.snapshot, "acme", "erin")  # erin is in globex only
    assert caught.value.code == "unknown_subject"
    require_subject(engine.snapshot, "acme", "editor")  # a role is a known name
    assert not org_exists(engine.snapshot, "*")


def test_platform_admin_needs_a_template_domain_link(engine):
    engine = sample_engine(
        [("g", "root", "platform-admin", "*"), ("g", "mallory", "platform-admin", "acme")]
    )
    assert is_platform_admin(engine.snapshot, "root")
    assert not is_platform_admin(engine.snapshot, "mallory")
    assert not is_platform_admin(engine.snapshot, "alice")


def test_pages_concatenate_to_the_complete_list(engine):
    extra = [("g", f"user{i:03d}", "viewer", "acme") for i in range(57)]
    engine = sample_engine(extra)
    entries = who_can(engine, engine.snapshot, "acme", "/projects/1", "read")
    collected, after = [], None
    while True:
        page, after = page_after(entries, after, 10)
        collected += page
        if after is None:
            break
    assert collected == entries
    assert len(entries) == 57 + 4  # the new viewers, alice, bob, carol, dave (not ivan)


# -- random policies ----------------------------------------------------------------------------

ORGS = ("acme", "globex")
PREFIX = {"acme": "acme", "globex": "globex", "*": "star", "ac*": "acp"}
ROLES = ("admin", "editor", "viewer")
PATTERNS = ("/projects/*", "/projects/:id", "/docs/*", "/docs/secret/*", "*", "/projects/1")
RESOURCES = ("/projects/1", "/projects/2", "/docs/a", "/docs/secret/x", "/projects", "/x")
ACTIONS = ("read", "update")


def users_of(domain: str) -> tuple[str, ...]:
    return tuple(f"{PREFIX[domain]}_u{i}" for i in range(3))


@st.composite
def links(draw):
    domain = draw(st.sampled_from((*ORGS, "*", "ac*")))
    member = draw(st.sampled_from((*users_of(domain), *ROLES)))
    role = draw(st.sampled_from(ROLES))
    return ("g", member, role, domain)


@st.composite
def grants(draw):
    domain = draw(st.sampled_from((*ORGS, "*")))
    subjects = (*ROLES, "owner") if domain == "*" else (*ROLES, "owner", *users_of(domain))
    return (
        "p",
        draw(st.sampled_from(subjects)),
        domain,
        draw(st.sampled_from(PATTERNS)),
        draw(st.sampled_from(ACTIONS)),
        draw(st.sampled_from(("allow", "allow", "deny"))),
    )


policies = st.tuples(
    st.lists(links(), max_size=14, unique=True), st.lists(grants(), max_size=14, unique=True)
).map(lambda pair: [*pair[0], *pair[1]])

RANDOM = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def random_engine(rules) -> Engine:
    engine = Engine.from_model_file(MODEL)
    engine.load(7, rules)
    return engine


def all_names(rules) -> set[str]:
    names = {"mallory"}
    for rule in rules:
        names.update(rule[1:3] if rule[0] == "g" else rule[1:2])
    return names


@RANDOM
@given(policies)
def test_who_can_lists_exactly_the_allowed_subjects(rules):
    engine = random_engine(rules)
    snapshot = engine.snapshot
    for org in ORGS:
        roles = org_names(snapshot, org).roles
        for resource in RESOURCES:
            for action in ACTIONS:
                listed = set(subjects(who_can(engine, snapshot, org, resource, action)))
                for name in all_names(rules) - roles:
                    allowed = engine.check(CheckRequest(name, org, resource, action)).allowed
                    assert allowed == (name in listed), (org, name, resource, action)
                # a subject with no role of its own, owning the resource: only the owner rule
                as_owner = CheckRequest("mallory", org, resource, action, owner="mallory")
                assert engine.check(as_owner).allowed == (OWNER_SUBJECT in listed), (
                    org,
                    resource,
                    action,
                )


def decide_from_permissions(held, resource: str, action: str, owner: bool) -> bool:
    applicable = [
        p
        for p in held
        if p.action == action
        and (p.condition is None or owner)
        and compile_matcher("keyMatch2", p.resource)(resource)
    ]
    return any(p.effect == "allow" for p in applicable) and not any(
        p.effect == "deny" for p in applicable
    )


@RANDOM
@given(policies)
def test_effective_permissions_decide_like_the_engine(rules):
    engine = random_engine(rules)
    snapshot = engine.snapshot
    for org in ORGS:
        for subject in sorted(all_names(rules)):
            held = effective_permissions(snapshot, subject, org)
            for resource in RESOURCES:
                for action in ACTIONS:
                    for owner in ("", subject):
                        request = CheckRequest(subject, org, resource, action, owner=owner)
                        expected = engine.check(request).allowed
                        got = decide_from_permissions(held, resource, action, bool(owner))
                        assert got == expected, (org, subject, resource, action, owner)


def casbin_enforcer(rules) -> casbin.Enforcer:
    enforcer = casbin.Enforcer(str(MODEL))
    enforcer.add_named_domain_matching_func("g", key_match)
    model = enforcer.get_model()
    for rule in rules:
        model.add_policy(rule[0], rule[0], list(rule[1:]))
    enforcer.build_role_links()
    return enforcer


@RANDOM
@given(policies)
def test_matrix_equals_casbin(rules):
    engine = random_engine(rules)
    enforcer = casbin_enforcer(rules)
    for org in ORGS:
        if not org_exists(engine.snapshot, org):
            continue
        matrix = access_matrix(engine, engine.snapshot, org)
        for subject, cells in matrix.rows:
            owner = subject if subject == OWNER_SUBJECT else ""
            for (resource, action), cell in zip(matrix.columns, cells, strict=True):
                allowed = enforcer.enforce(subject, org, resource, action, owner)
                assert (cell == "allow") == allowed, (org, subject, resource, action)


def foreign(name: str, org: str) -> bool:
    """A name that only another org's rules use."""
    return any(name.startswith(PREFIX[other] + "_") for other in ORGS if other != org)


@RANDOM
@given(policies)
def test_reverse_queries_never_leak_other_orgs(rules):
    engine = random_engine(rules)
    snapshot = engine.snapshot
    for org in ORGS:
        if not org_exists(snapshot, org):
            continue
        names = org_names(snapshot, org)
        assert not [name for name in names.subjects if foreign(name, org)]
        matrix = access_matrix(engine, snapshot, org)
        assert not [subject for subject, _ in matrix.rows if foreign(subject, org)]
        for subject, roles in matrix.roles.items():
            assert not [path for path in roles.values() if foreign(path, org)], subject
        for resource in RESOURCES:
            for entry in who_can(engine, snapshot, org, resource, "read"):
                assert not foreign(entry.subject, org)
                assert entry.decision.rule is None or rule_domain(entry.decision.rule) in (
                    org,
                    TEMPLATE_DOMAIN,
                )
        for subject in names.subjects:
            for held in effective_permissions(snapshot, subject, org):
                assert rule_domain(held.rule) in (org, TEMPLATE_DOMAIN)
                assert not [name for name in held.path if foreign(name, org)]


# -- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from rolegate.cli import main

    monkeypatch.setenv("ROLEGATE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("ROLEGATE_MODEL", str(MODEL))
    policies = str(REPO_ROOT / "policies")

    def run(*args):
        return CliRunner().invoke(main, [*args, "--policy-dir", policies])

    return run


def test_cli_who_can_as_table_json_and_csv(cli):
    table = cli("who-can", "acme", "/documents/7", "update")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split() == ["subject", "kind", "via", "path", "rule"]
    assert lines[2].startswith("(owner)") and lines[3].startswith("alice")
    as_json = cli("who-can", "acme", "/documents/7", "update", "--format", "json")
    document = json.loads(as_json.output)
    assert [entry["subject"] for entry in document["subjects"]] == ["(owner)", "alice"]
    as_csv = cli("who-can", "globex", "/documents/finance/q3", "read", "--format", "csv")
    assert [line.split(",")[0] for line in as_csv.output.splitlines()] == ["subject", "bob", "erin"]


def test_cli_who_can_hints_at_a_typo(cli):
    typo = cli("who-can", "acme", "/documents/7", "delet", "--format", "json")
    assert typo.exit_code == 0, typo.output
    document = json.loads(typo.stdout)
    assert document["subjects"] == []
    assert document["hint"].startswith("no rule mentions action 'delet'; known actions:")
    assert "delete" in document["hint"]
    table = cli("who-can", "acme", "/documents/7", "delet")
    assert "hint: no rule mentions action 'delet'" in table.stderr
    assert (
        json.loads(cli("who-can", "acme", "/documents/7", "read", "--format", "json").stdout)[
            "hint"
        ]
        is None
    )


def test_cli_permissions_and_matrix(cli):
    result = cli("permissions", "globex", "frank", "--format", "csv")
    assert result.exit_code == 0
    assert "/documents/finance/*,read,deny,,frank -> contractor" in result.output
    matrix = cli("matrix", "globex", "--format", "csv")
    header, *rows = matrix.output.splitlines()
    assert header.startswith("subject,") and [row.split(",")[0] for row in rows] == [
        "(owner)",
        "bob",
        "erin",
        "frank",
    ]


def test_cli_unknown_subject_and_org_exit_2(cli):
    result = cli("permissions", "acme", "zed")
    assert result.exit_code == 2 and "unknown subject 'zed'" in result.output
    result = cli("matrix", "initech")
    assert result.exit_code == 2 and "unknown org 'initech'" in result.output


def test_cli_decisions_reads_the_log_file(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from rolegate.audit.decision_log import DecisionLog, FileSink
    from rolegate.cli import main
    from rolegate.engine import Decision
    from rolegate.identity import Principal
    from rolegate.results import DecisionResult

    path = tmp_path / "decisions.jsonl"
    decision_log = DecisionLog([FileSink(path)])
    principal = Principal("bob", "acme", (), None, None)
    for action, allowed in (("read", True), ("delete", False)):
        request = CheckRequest("bob", "acme", "/projects/1", action)
        decision = Decision(allowed, 1)
        result = DecisionResult(request, decision, action)
        decision_log.record(principal, request, decision, result)
    decision_log.close()
    monkeypatch.setenv("ROLEGATE_DECISION_LOG", str(path))
    result = CliRunner().invoke(main, ["decisions", "acme", "--denied", "--format", "json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)["decisions"]
    assert [(d["action"], d["allowed"]) for d in found] == [("delete", False)]


# -- the engine's read API, which these views and the admin guards share ----------------------


def test_role_names_are_link_targets_anywhere_template_subjects_and_builtins():
    engine = sample_engine([("g", "zed", "globex-only", "globex")], default_role="guest")
    names = reads.role_names(engine.snapshot)
    assert {"admin", "editor", "viewer", "auditor", "contractor", "globex-only"} <= names
    assert {"owner", "platform-admin", "guest"} <= names
    assert not names & {"alice", "bob", "zed", "frank"}
    # a role of globex is refused as a subject in acme too
    assert reads.is_role_name(engine.snapshot, "globex-only")
    assert "globex-only" not in reads.subjects_in(engine.snapshot, "acme")


def test_role_names_follow_each_change():
    engine = sample_engine()
    before = engine.snapshot
    assert not reads.is_role_name(before, "hrrole")
    after = engine.apply(2, [("g", "gus", "hrrole", "globex")], [])
    assert reads.is_role_name(after, "hrrole") and not reads.is_role_name(before, "hrrole")
    removed = engine.apply(3, [], [("g", "gus", "hrrole", "globex")])
    assert not reads.is_role_name(removed, "hrrole")
    assert reads.is_role_name(removed, "contractor")  # untouched orgs keep their roles


def test_memberships_and_grants_by_name():
    snapshot = sample_engine().snapshot
    assert reads.direct_memberships(snapshot, "acme")["bob"] == ["editor"]
    assert "contractor" not in reads.direct_memberships(snapshot, "globex")
    grants = reads.role_grants(snapshot, "globex", "contractor")
    assert reads.Grant("contractor", "globex", "/documents/finance/*", "read", "deny") in grants
    assert reads.Grant("viewer", "*", "/documents/*", "read", "allow") in grants
    access = reads.access_by_action(snapshot, "globex", reads.roles_of(snapshot, "frank", "globex"))
    assert access["read"].deny == ("/documents/finance/*",)
    assert reads.uncovered(snapshot, ["/documents/hr/*"], access["read"]) is None
    assert reads.uncovered(snapshot, ["/documents/*"], access["read"]).startswith(
        "/documents/finance/"
    )
