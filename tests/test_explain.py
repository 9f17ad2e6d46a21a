"""Deny explanations (issue 17): which deny rule decided and the nearest ways to be allowed,
with stable reason codes, asked of the engine (so they agree with the decisions)."""

from __future__ import annotations

import pytest
from conftest import SAMPLE_POLICIES

from rolegate.config import REPO_ROOT
from rolegate.engine import CheckRequest, Engine
from rolegate.engine.explain import explain_denial
from rolegate.store import read_policy_dir

SAMPLE_RULES = [item.rule for item in read_policy_dir(SAMPLE_POLICIES)]


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = Engine.from_model_file(REPO_ROOT / "model.conf")
    engine.load(1, SAMPLE_RULES)
    return engine


def explain(engine: Engine, *args, **kwargs) -> dict:
    request = CheckRequest(*args, **kwargs)
    return explain_denial(engine, request, engine.check(request))


def roles(explanation: dict) -> list[str]:
    return [item["role"] for item in explanation["would_allow"]["roles"]]


def test_a_deny_rule_is_named_with_its_path(engine):
    found = explain(engine, "frank", "globex", "/documents/finance/q1", "read")
    assert found["code"] == "denied_by_rule" and found["codes"] == ["denied_by_rule"]
    assert found["deny_rule"] == {
        "rule": "p, contractor, globex, /documents/finance/*, read, deny",
        "path": "frank -> contractor",
    }
    assert roles(found) == []  # no role outweighs a deny rule the subject holds


def test_the_missing_owner_relation_and_the_nearest_role(engine):
    found = explain(engine, "carol", "acme", "/documents/8", "update", owner="dave")
    assert found["code"] == "owner_required" and found["codes"] == ["owner_required", "no_grant"]
    assert found["would_allow"]["as_owner"] == {
        "owner": "carol",
        "rule": "p, owner, *, /documents/:id, update, allow",
    }
    assert roles(found) == ["admin"]


def test_only_the_nearest_granting_roles_are_listed(engine):
    found = explain(engine, "dave", "acme", "/projects/1", "update")
    assert found["code"] == "no_grant" and found["would_allow"]["as_owner"] is None
    assert found["would_allow"]["roles"] == [
        {"role": "editor", "rule": "p, editor, *, /projects/*, update, allow"}
    ]  # admin also grants it, but through editor
    reading = explain(engine, "nobody", "acme", "/projects/1", "read")
    assert roles(reading) == ["viewer"]


def test_every_listed_role_really_allows_when_granted(engine):
    """The explanation is the engine's answer: giving the role (a policy link) allows."""
    cases = [
        ("dave", "acme", "/projects/1", "update"),
        ("carol", "acme", "/documents/8", "update"),
        ("bob", "globex", "/members", "manage"),
        ("nobody", "globex", "/audit", "audit"),
    ]
    for subject, org, resource, action in cases:
        found = explain(engine, subject, org, resource, action)
        assert roles(found), (subject, resource)
        for role in roles(found):
            granted = Engine.from_model_file(REPO_ROOT / "model.conf")
            granted.load(2, [*SAMPLE_RULES, ("g", subject, role, org)])
            assert granted.check(CheckRequest(subject, org, resource, action)).allowed, role


def test_token_roles_count_as_held(engine):
    found = explain(engine, "zed", "acme", "/projects/1", "update", extra_roles=("member",))
    assert roles(found) == ["editor"]
    held = explain(engine, "zed", "acme", "/documents/1", "delete", extra_roles=("editor",))
    assert "editor" not in roles(held) and roles(held) == ["admin"]


def test_unknown_orgs_and_allows(engine):
    found = explain(engine, "alice", "nowhere", "/projects/1", "read")
    assert found["codes"] == ["unknown_org", "no_grant"] and roles(found) == []
    assert explain(engine, "alice", "acme", "/projects/1", "read") == {}


def test_explanations_are_deterministic(engine):
    first = explain(engine, "carol", "acme", "/documents/8", "update", owner="dave")
    assert all(
        explain(engine, "carol", "acme", "/documents/8", "update", owner="dave") == first
        for _ in range(5)
    )


def test_over_http_single_and_batch(live):
    denied = live.check("frank", "globex", "/documents/finance/q1", "read", explain=True)
    assert denied.status == 200 and denied.body["allowed"] is False
    reason = denied.body["reason"]
    assert reason["code"] == "denied_by_rule" and reason["effect"] == "deny"
    assert reason["deny_rule"]["rule"].endswith("/documents/finance/*, read, deny")

    quiet = live.check("frank", "globex", "/documents/finance/q1", "read")
    assert "reason" not in quiet.body
    allowed = live.check("alice", "acme", "/projects/1", "read", explain=True)
    assert "code" not in allowed.body["reason"]

    batch = live.client.post(
        "/v1/check/batch",
        {
            "checks": [
                {"resource": "/projects/1", "action": "update", "explain": True},
                {"resource": "/documents/3", "action": "update", "owner": "x", "explain": True},
            ]
        },
        headers=live.auth("dave", "acme"),
    )
    first, second = batch.body["results"]
    assert first["reason"]["code"] == "no_grant" and roles(first["reason"]) == ["editor"]
    assert second["reason"]["code"] == "owner_required"


def test_the_cli_prints_the_reasons(env):
    from click.testing import CliRunner

    from rolegate.cli import main

    result = CliRunner().invoke(
        main,
        [
            "check",
            "dave",
            "acme",
            "/projects/1",
            "update",
            "--explain",
            "--policy-dir",
            str(SAMPLE_POLICIES),
        ],
    )
    assert result.exit_code == 1
    assert "reason: no_grant" in result.output
    assert "would be allowed with role editor" in result.output


def test_a_batch_lists_the_nearest_roles_for_its_first_denials_only(live):
    """Each listing costs a decision per role: a 1,000-item batch cannot buy 256,000."""
    from rolegate.core import MAX_NEAREST_PER_BATCH

    checks = [
        {"resource": f"/projects/{i}", "action": "update", "explain": True}
        for i in range(MAX_NEAREST_PER_BATCH + 5)
    ]
    batch = live.client.post(
        "/v1/check/batch", {"checks": checks}, headers=live.auth("dave", "acme")
    )
    reasons = [item["reason"] for item in batch.body["results"]]
    assert all(reason["code"] == "no_grant" for reason in reasons)
    listed = [reason["would_allow"]["roles"] for reason in reasons]
    assert (
        listed[:MAX_NEAREST_PER_BATCH]
        == [[{"role": "editor", "rule": "p, editor, *, /projects/*, update, allow"}]]
        * MAX_NEAREST_PER_BATCH
    )
    assert listed[MAX_NEAREST_PER_BATCH:] == [None] * 5


def test_every_reason_code_is_documented():
    from rolegate.engine.explain import CODES

    text = (REPO_ROOT / "docs" / "audit.md").read_text()
    table = text[text.index("## Deny explanations") : text.index("## Replaying")]
    assert all(f"| `{code}` |" in table for code in CODES)
