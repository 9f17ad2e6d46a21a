"""Query plans: pattern conditions, simplification, refusals, plan_filter in SQL, the CLI and
`POST /v1/plan` over real HTTP (agreeing with `/v1/check` on the same server)."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from rolegate.cli import main
from rolegate.config import REPO_ROOT
from rolegate.engine import CheckRequest, Engine
from rolegate.engine.plan import (
    PlanNotExpressible,
    PlanRequest,
    PlanUnsupportedModel,
    TemplateError,
    evaluate,
    fill_template,
    member_orgs,
    parse_template,
    pattern_condition,
    plan_condition,
    to_json,
)
from rolegate.sqlalchemy import PlanFormatError, UnmappedField, plan_filter
from rolegate.store import read_policy_dir

MODEL = REPO_ROOT / "model.conf"
POLICIES = REPO_ROOT / "policies"


def sample_engine(*extra_rules, default_role=None) -> Engine:
    engine = Engine.from_model_file(MODEL, default_role=default_role)
    rules = [item.rule for item in read_policy_dir(POLICIES)]
    engine.load(1, [*rules, *extra_rules])
    return engine


def plan_for(engine, subject, action, template, orgs=None, extra=()):
    if orgs is None:
        orgs = member_orgs(engine.snapshot, subject)
    return plan_condition(
        engine.snapshot, PlanRequest(subject, action, template, tuple(orgs), extra)
    )


# -- patterns against templates ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "template", "expected"),
    [
        ("/documents/*", "/documents/:id", True),
        ("/documents/:id", "/documents/:id", True),
        ("*", "/a/:x/:y", True),
        ("/projects/:id", "/documents/:id", False),
        ("/documents/*", "/documents", False),  # `/*` needs the slash
        ("/documents/finance/*", "/documents/:a/:b", {"eq": ["a", "finance"]}),
        ("/documents/finance", "/documents/:a/:b", False),
        ("/documents/7", "/documents/:id", {"eq": ["id", "7"]}),
        ("/d/x-:id", "/d/:id", {"and": [{"like": ["id", "x-*"]}, {"not": {"eq": ["id", "x-"]}}]}),
        ("/*e", "/:a/:b", {"like": ["b", "*e"]}),
        ("/*e/x", "/:a/:b", {"and": [{"like": ["a", "*e"]}, {"eq": ["b", "x"]}]}),
        ("/*-/*", "/:a/:b/:c", {"or": [{"like": ["b", "*-"]}, {"like": ["a", "*-"]}]}),
        ("/%_/:id", "/%_/:id", True),  # literal text with LIKE metacharacters
        ("/d/*", "/d/:a/e", True),
        ("/d/:id", "/d/:a/e", False),
    ],
)
def test_pattern_condition(pattern, template, expected):
    assert to_json(pattern_condition(pattern, parse_template(template))) == expected


@pytest.mark.parametrize(
    "pattern",
    ["/finance/x|/payroll", "/admin/?panel", "/x1/{0}y", "/docs/a.b", "/docs*", "/d/(x)"],
)
def test_regex_constructs_are_refused_not_approximated(pattern):
    with pytest.raises(PlanNotExpressible):
        pattern_condition(pattern, parse_template("/docs/:id"))


def test_a_minimum_length_inside_a_longer_shape_is_refused():
    # `/*x:id`: the segment is "anything, then x, then at least one character"
    with pytest.raises(PlanNotExpressible, match="minimum length"):
        pattern_condition("/*x:id", parse_template("/:a"))


@pytest.mark.parametrize(
    "template",
    [
        "/documents/:org",
        "/documents/:owner",
        "/d/:id/:id",
        "/d/x-:id",
        "/d/*",
        "/d/:",
        "/d/:1a",
        "".join(f"/:p{i}" for i in range(9)),  # more than 8 parameters
        "/" + "a" * 256,  # longer than 256 characters
    ],
)
def test_bad_templates(template):
    with pytest.raises(TemplateError):
        parse_template(template)


# -- plans on the sample policy ----------------------------------------------------------------


def test_sample_plans_read_like_the_policy():
    engine = sample_engine()
    assert plan_for(engine, "bob", "read", "/documents/:id") == {"in": ["org", ["acme", "globex"]]}
    # editors may not update documents: bob only as the owner
    assert plan_for(engine, "bob", "update", "/documents/:id") == {
        "and": [{"in": ["org", ["acme", "globex"]]}, {"eq": ["owner", "bob"]}]
    }
    assert plan_for(engine, "alice", "update", "/documents/:id") == {"eq": ["org", "acme"]}
    # frank is a contractor: the deny on /documents/finance/* shows as a `not`
    assert plan_for(engine, "frank", "read", "/documents/:a/:b") == {
        "and": [{"eq": ["org", "globex"]}, {"not": {"eq": ["a", "finance"]}}]
    }
    assert plan_for(engine, "mallory", "read", "/documents/:id") is False


def test_orgs_outside_the_request_are_false_and_membership_needs_a_link():
    engine = sample_engine(default_role="viewer")
    # the default role grants reads in every org, but does not make mallory a member anywhere
    assert member_orgs(engine.snapshot, "mallory") == []
    assert plan_for(engine, "mallory", "read", "/documents/:id") is False
    assert plan_for(engine, "mallory", "read", "/documents/:id", ["acme"]) == {
        "eq": ["org", "acme"]
    }


def test_trusted_roles_count_like_in_a_check():
    engine = sample_engine()
    plan = plan_for(engine, "zed", "delete", "/documents/:id", ["acme"], extra=("admin",))
    assert plan == {"eq": ["org", "acme"]}
    assert engine.check(
        CheckRequest("zed", "acme", "/documents/1", "delete", "", ("admin",))
    ).allowed


def test_an_unusable_pattern_fails_closed_like_the_check():
    broken = ("p", "viewer", "*", "/documents/(", "read", "allow")
    engine = sample_engine(broken)
    assert not engine.check(CheckRequest("alice", "acme", "/documents/1", "read")).allowed
    assert plan_for(engine, "alice", "read", "/documents/:id") is False


def test_models_other_than_keymatch2_fast_are_refused(tmp_path):
    model = MODEL.read_text().replace("keyMatch2(", "regexMatch(")
    path = tmp_path / "model.conf"
    path.write_text(model)
    engine = Engine.from_model_file(path)
    engine.load(1, [("p", "alice", "acme", "^/d/.*$", "read", "allow")])
    with pytest.raises(PlanUnsupportedModel):
        plan_for(engine, "alice", "read", "/d/:id", ["acme"])


def test_owner_rule_with_a_deny_only_the_owner_reaches():
    rules = [
        ("g", "u", "viewer", "acme"),
        ("g", "owner", "locked", "acme"),
        ("p", "viewer", "acme", "/d/*", "read", "allow"),
        ("p", "locked", "acme", "/d/secret-:id", "read", "deny"),
    ]
    engine = Engine.from_model_file(MODEL)
    engine.load(1, rules)
    plan = plan_for(engine, "u", "read", "/d/:id")
    for owner, value in itertools.product(("", "u", "v"), ("1", "secret-1", "secret-")):
        allowed = engine.check(CheckRequest("u", "acme", f"/d/{value}", "read", owner)).allowed
        assert evaluate(plan, {"org": "acme", "owner": owner, "id": value}) == allowed, (
            owner,
            value,
        )


# -- plan_filter -------------------------------------------------------------------------------

ROWS = [
    {"id": 1, "org": "acme", "owner": "bob", "name": "abc"},
    {"id": 2, "org": "acme", "owner": None, "name": "ABC"},
    {"id": 3, "org": None, "owner": "bob", "name": "abc"},
    {"id": 4, "org": "acme", "owner": "", "name": "a%c"},
    {"id": 5, "org": "acme", "owner": "BOB", "name": "a_c"},
    {"id": 6, "org": "acme", "owner": "bob", "name": "a\\c"},
    {"id": 7, "org": "globex", "owner": "bob", "name": "aXc"},
    {"id": 8, "org": "acme", "owner": "bob", "name": "xa%c"},
    {"id": 9, "org": "acme", "owner": "bob", "name": "[a]*c?"},
    {"id": 10, "org": "acme", "owner": "bob", "name": "ü%c"},
]


@pytest.fixture(params=["sqlite", "postgresql"])
def rows_db(request, tmp_path):
    """A real table of ROWS on SQLite, then on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'rows.db'}"
        database = sa.create_engine(url)
        yield from _with_rows(database)
        return
    from pg import fresh_schema_url, postgres_url_or_skip

    with fresh_schema_url(postgres_url_or_skip()) as url:
        yield from _with_rows(sa.create_engine(url, poolclass=sa.NullPool))


TABLE = sa.Table(
    "items",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("org", sa.String(20)),
    sa.Column("owner", sa.String(20)),
    sa.Column("name", sa.String(20)),
)
COLUMNS = {"org": TABLE.c.org, "owner": TABLE.c.owner, "name": TABLE.c.name}


def _with_rows(database):
    TABLE.metadata.create_all(database)
    with database.begin() as conn:
        conn.execute(TABLE.insert(), ROWS)
    yield database
    database.dispose()


def visible(database, condition, resource="/items/:name") -> set[int]:
    plan = {"resource": resource, "condition": condition}
    with database.connect() as conn:
        return set(conn.scalars(sa.select(TABLE.c.id).where(plan_filter(plan, COLUMNS))))


@pytest.mark.parametrize(
    ("glob", "expected"),
    [
        ("a*c", {1, 4, 5, 6}),  # case-sensitive: not ABC, not aXc (globex is in no plan here)
        ("a%c", {4}),
        ("a_c", {5}),
        ("a\\c", {6}),
        ("*%c", {4, 8, 10}),
        ("[a]*c?", {9}),
        ("ü*", {10}),
        ("A*", {2}),
    ],
)
def test_like_is_literal_and_case_sensitive(rows_db, glob, expected):
    condition = {"and": [{"eq": ["org", "acme"]}, {"like": ["name", glob]}]}
    assert visible(rows_db, condition) == expected
    for row in ROWS:
        if row["org"] == "acme":
            assert evaluate({"like": ["name", glob]}, row) == (row["id"] in expected)


def test_null_owner_is_no_owner_and_null_org_is_never_visible(rows_db):
    acme = {"eq": ["org", "acme"]}
    is_bob = {"eq": ["owner", "bob"]}
    assert visible(rows_db, {"and": [acme, is_bob]}) == {1, 6, 8, 9, 10}
    # not-owner includes the NULL owner (2) and the empty owner (4)
    assert visible(rows_db, {"and": [acme, {"not": is_bob}]}) == {2, 4, 5}
    # a NULL org never shows, even under `not`
    assert visible(rows_db, {"not": {"eq": ["org", "acme"]}}) == {7}
    assert visible(rows_db, {"not": {"in": ["org", ["x"]]}}) == set(range(1, 11)) - {3}
    assert visible(rows_db, True) == set(range(1, 11)) - {3}
    assert visible(rows_db, False) == set()


def test_plan_filter_refuses_unmapped_fields_and_malformed_plans():
    with pytest.raises(UnmappedField, match="'id'"):
        plan_filter({"resource": "/x/:id", "condition": {"eq": ["org", "a"]}}, COLUMNS)
    with pytest.raises(UnmappedField, match="'size'"):
        plan_filter({"condition": {"eq": ["size", "a"]}}, COLUMNS)
    for bad in ({"eq": ["org"]}, {"xor": []}, {"in": ["org", "a"]}, {"and": {}}, [1], None):
        with pytest.raises(PlanFormatError):
            plan_filter({"condition": bad}, COLUMNS)
    with pytest.raises(PlanFormatError):
        plan_filter({"eq": ["org", "a"]}, COLUMNS)  # a bare condition, not the answer


# -- CLI ---------------------------------------------------------------------------------------


def test_cli_plan_json_and_sql(env):
    runner = CliRunner()
    result = runner.invoke(
        main, ["plan", "bob", "update", "/documents/:id", "--policy-dir", str(POLICIES)]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["orgs"] == ["acme", "globex"]
    assert answer["condition"] == plan_for(sample_engine(), "bob", "update", "/documents/:id")
    sql = runner.invoke(
        main,
        ["plan", "bob", "update", "/documents/:id", "--org", "acme", "--format", "sql",
         "--table", "documents", "--policy-dir", str(POLICIES)],
    )  # fmt: skip
    assert sql.exit_code == 0, sql.output
    assert "FROM documents" in sql.output
    assert "documents.org = 'acme'" in sql.output
    assert "coalesce(documents.owner, '') = 'bob'" in sql.output


def test_cli_plan_errors(env):
    result = CliRunner().invoke(
        main, ["plan", "bob", "read", "/documents/:owner", "--policy-dir", str(POLICIES)]
    )
    assert result.exit_code == 2
    assert "may not be named 'owner'" in result.output


# -- HTTP --------------------------------------------------------------------------------------


def test_plan_over_http_agrees_with_check(live):
    values = ("finance", "1", "x%", "Finance")
    for subject, token_org in (("bob", None), ("frank", "globex"), ("alice", "acme")):
        answer = live.client.post(
            "/v1/plan",
            {"action": "read", "resource": "/documents/:a/:b"},
            headers=live.auth(subject, token_org),
        )
        assert answer.status == 200, answer.text
        body = answer.body
        assert list(body) == ["subject", "action", "resource", "orgs", "revision", "condition"]
        assert body["subject"] == subject
        assert body["revision"] == live.core.engine.revision
        for org, a, b in itertools.product(("acme", "globex"), values, values):
            resource = fill_template(parse_template("/documents/:a/:b"), {"a": a, "b": b})
            check = live.check(subject, token_org or org, resource, "read", org=org)
            row = {"org": org, "owner": "", "a": a, "b": b}
            if token_org not in (None, org):
                assert check.status == 403
                assert not evaluate(body["condition"], row)
                continue
            assert evaluate(body["condition"], row) == check.body["allowed"], (subject, row)


def test_plan_org_rules(live):
    def plan(subject, token_org=None, **body):
        return live.client.post(
            "/v1/plan",
            {"action": "read", "resource": "/documents/:id", **body},
            headers=live.auth(subject, token_org),
        )

    assert plan("bob").body["orgs"] == ["acme", "globex"]
    assert plan("bob", org="globex").body["orgs"] == ["globex"]
    assert plan("bob", "acme").body["orgs"] == ["acme"]
    assert plan("bob", "acme", org="acme").body["orgs"] == ["acme"]
    mismatch = plan("bob", "acme", org="globex")
    assert mismatch.status == 403
    assert mismatch.body["error"]["code"] == "org_mismatch"
    assert plan("mallory").body == {
        "subject": "mallory", "action": "read", "resource": "/documents/:id", "orgs": [],
        "revision": live.core.engine.revision, "condition": False,
    }  # fmt: skip


def test_plan_bad_requests(live):
    headers = live.auth("bob")
    cases = [
        ({"action": "read", "resource": "/documents/:org"}, "invalid_template"),
        ({"action": "read", "resource": "/documents/:owner"}, "invalid_template"),
        ({"action": "read", "resource": "/documents/x-:id"}, "invalid_template"),
        ({"action": "read"}, "invalid_request"),
        ({"action": "read", "resource": "/d/:id", "owner": "bob"}, "invalid_request"),
        ({"action": "", "resource": "/d/:id"}, "invalid_request"),
        ({"action": "read", "resource": "/d/:id", "org": "ac*"}, "invalid_request"),
        (["read"], "invalid_request"),
    ]
    for body, code in cases:
        answer = live.client.post("/v1/plan", body, headers=headers)
        assert answer.status == 400, (body, answer.text)
        assert answer.body["error"]["code"] == code, body
    assert live.client.post("/v1/plan", {"action": "read", "resource": "/d/:id"}).status == 401


def test_plan_not_expressible_is_422(live):
    engine = live.core.engine
    rules = [
        *engine.snapshot.rules(),
        ("p", "viewer", "*", "/documents/a|/payroll", "read", "allow"),
    ]
    engine.load(engine.revision + 1, rules)
    answer = live.client.post(
        "/v1/plan", {"action": "read", "resource": "/documents/:id"}, headers=live.auth("carol")
    )
    assert answer.status == 422
    assert answer.body["error"]["code"] == "plan_not_expressible"
    assert "/documents/a|/payroll" in answer.body["error"]["message"]


def test_trusted_token_roles_in_plans(make_live_server, settings):
    live = make_live_server(dataclasses.replace(settings, trust_token_roles=True))
    headers = live.auth("zed", "acme", roles=["admin"])
    answer = live.client.post(
        "/v1/plan", {"action": "delete", "resource": "/documents/:id"}, headers=headers
    )
    assert answer.body["condition"] == {"eq": ["org", "acme"]}
    untrusted = live.client.post(
        "/v1/plan",
        {"action": "delete", "resource": "/documents/:id"},
        headers=live.auth("zed", roles=["admin"]),
    )
    assert untrusted.body["condition"] is False


def test_member_orgs_reads_membership_like_the_snapshot():
    engine = sample_engine(("g", "bob", "viewer", "ac*"), ("g", "bob", "admin", "*"))
    snapshot = engine.snapshot
    for subject in ("alice", "bob", "frank", "contractor", "admin", "mallory"):
        expected = [
            org for org in snapshot.orgs() if "*" not in org and snapshot.is_member(subject, org)
        ]
        assert member_orgs(snapshot, subject) == expected
    assert member_orgs(snapshot, "bob") == ["acme", "globex"]  # links in `*` or `ac*` do not count


MODEL_VARIANTS = {
    "allow-override": ("!some(where (p.eft == deny))", None),
    "no owner term": (
        '(g(r.sub, p.sub, r.dom) || (r.owner == r.sub && g("owner", p.sub, r.dom)))',
        "g(r.sub, p.sub, r.dom)",
    ),
    "no template domain": ('(p.dom == r.dom || p.dom == "*")', "p.dom == r.dom"),
}


@pytest.mark.parametrize("variant", sorted(MODEL_VARIANTS))
def test_plans_follow_the_model_shape(variant, tmp_path):
    """Other fast-path shapes: the plan still equals the check (Python evaluation, random cases)."""
    import random

    from test_plan_differential import VALUES, random_policy

    old, new = MODEL_VARIANTS[variant]
    text = MODEL.read_text()
    if new is None:  # drop the term (and the `&&` before a dropped effect term)
        text = text.replace(" && " + old, "").replace(old, "")
    else:
        text = text.replace(old, new)
    assert text != MODEL.read_text()
    path = tmp_path / "model.conf"
    path.write_text(text)
    rng = random.Random(variant)
    compared = 0
    for _ in range(30):
        engine = Engine.from_model_file(path, default_role=rng.choice((None, "guest")))
        assert engine.mode == "fast"
        engine.load(1, random_policy(rng))
        for subject, action in itertools.product(("u1", "u2", "u3"), ("read", "update")):
            condition = plan_for(engine, subject, action, "/d/:a/:b", ["acme", "ac"])
            for org, owner, a, b in itertools.product(
                ("acme", "ac"), ("", subject), VALUES[:8], VALUES[:5]
            ):
                resource = f"/d/{a}/{b}"
                allowed = engine.check(CheckRequest(subject, org, resource, action, owner)).allowed
                row = {"org": org, "owner": owner, "a": a, "b": b}
                assert evaluate(condition, row) == allowed, (variant, condition, row)
                compared += 1
    assert compared > 10_000
