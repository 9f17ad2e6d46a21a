"""The core's typed answers (rolegate.results): what `Rolegate.check` returns, and its JSON form."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rolegate.api.decisions import decision_json
from rolegate.core import CheckInput, DecisionResult
from rolegate.errors import Forbidden
from rolegate.identity import Principal


def test_check_returns_a_frozen_result_with_the_request_and_the_decision(core):
    alice = Principal("alice", "acme", (), None, None)
    result = core.check(alice, CheckInput(resource="/projects/1", action="delete", explain=True))
    assert isinstance(result, DecisionResult)
    assert (result.allowed, result.subject, result.org) == (True, "alice", "acme")
    assert result.request.resource == "/projects/1" and result.decision.rule is not None
    assert result.revision == core.engine.revision and len(result.decision_id) == 32
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.decision_id = "forged"  # type: ignore[misc]


def test_the_json_answer_carries_the_reason_only_when_asked(core):
    alice = Principal("alice", "acme", (), None, None)
    plain = core.check(alice, CheckInput(resource="/projects/1", action="read"))
    explained = core.check(alice, CheckInput(resource="/projects/1", action="read", explain=True))
    assert "reason" not in decision_json(plain)
    assert decision_json(explained)["reason"]["summary"].startswith("allowed by ")
    assert decision_json(plain)["decision_id"] != decision_json(explained)["decision_id"]


def test_listeners_hear_the_result_the_caller_gets(core):
    heard = []
    core.decision_listeners.append(lambda _p, _r, _d, result: heard.append(result))
    batch = core.check_batch(
        Principal("bob", "acme", (), None, None),
        [CheckInput(resource=f"/projects/{i}", action="read") for i in range(3)],
    )
    assert heard == list(batch.results)
    assert {result.revision for result in batch.results} == {batch.revision}


def test_dict_style_reads_of_the_old_wire_dict_still_work_for_one_release(core):
    result = core.check(
        Principal("alice", "acme", (), None, None), CheckInput("/projects/1", "read")
    )
    assert result["allowed"] is True and result.get("decision_id") == result.decision_id
    with pytest.raises(KeyError):
        result["request"]  # only the wire names


def test_readiness_is_what_readyz_reports(core):
    from rolegate.api import create_app

    readiness = core.readiness()
    assert readiness.ready and readiness.revision == core.engine.revision and not readiness.stale
    body = create_app(core=core, follow_store=False).test_client().get("/readyz").get_json()
    assert {k: v for k, v in body.items() if k != "worker"} == dataclasses.asdict(readiness)
    core.note_store_error("store down")
    assert core.readiness().stale and core.readiness().ready  # decisions go on from memory


def test_rolegate_check_makes_the_decision_v1_check_makes(core, env):
    from click.testing import CliRunner

    from rolegate.api import create_app
    from rolegate.cli import main
    from rolegate.config import REPO_ROOT
    from rolegate.identity import mint_token

    client = create_app(core=core, follow_store=False).test_client()
    policies = str(REPO_ROOT / "policies")
    for subject, resource, action in [
        ("bob", "/documents/3", "update"),
        ("carol", "/projects/1", "delete"),
        ("alice", "/projects/42", "delete"),
    ]:
        token = mint_token(core.settings, subject=subject, org="acme")
        http = client.post(
            "/v1/check",
            json={"resource": resource, "action": action, "owner": "bob", "explain": True},
            headers={"Authorization": f"Bearer {token}"},
        ).get_json()
        args = ["check", "acme", subject, resource, action, "--owner", "bob", "--format", "json"]
        cli = CliRunner().invoke(main, [*args, "--policy-dir", policies])
        assert cli.exit_code == (0 if http["allowed"] else 1)
        assert json.loads(cli.output) == {"allowed": http["allowed"], "reason": http["reason"]}


def test_rolegate_check_refuses_a_role_as_subject_like_v1_check(env):
    # Casbin's g(x, x, dom) is true: asking as the role itself would hold the role's rules.
    from click.testing import CliRunner

    from rolegate.cli import main
    from rolegate.config import REPO_ROOT

    policies = str(REPO_ROOT / "policies")
    result = CliRunner().invoke(
        main, ["check", "acme", "admin", "/projects/1", "delete", "--policy-dir", policies]
    )
    assert result.exit_code == 2
    assert "is a role in the policy" in result.output


def test_decision_ids_of_a_batch_are_distinct_and_shaped_like_single_ones():
    from rolegate.results import new_decision_id, new_decision_ids

    ids = new_decision_ids(1000)
    assert len(ids) == len(set(ids)) == 1000
    single = new_decision_id()
    for decision_id in (*ids, single):
        assert len(decision_id) == 32 and int(decision_id, 16) >= 0
    assert new_decision_ids(0) == []


def _without_id(result):
    return (result.request, result.decision, result.explain, result.denial)


@pytest.mark.parametrize(
    "principal",
    [
        Principal("alice", "acme", (), None, None),
        Principal("bob", None, (), None, None),  # no org in the token: each check names one
        Principal("carol", "acme", ("admin",), None, None),  # token roles: trusted in acme only
    ],
    ids=["token-org", "no-token-org", "token-roles"],
)
def test_a_batch_decides_each_check_as_a_single_check_would(core, principal):
    """check_batch resolves each org once for the caller's own checks: the requests, decisions
    and refusals must still be those of `check`, item by item."""
    core.settings = core.settings.replace(trust_token_roles=True)
    orgs = ["acme", "globex"] if principal.org is None else [None, "acme"]
    checks = [
        CheckInput(resource, action, org=org, owner=owner, explain=explain)
        for org in orgs
        for resource in ("/projects/1", "/docs/finance/q3", "/users/alice")
        for action in ("read", "delete", "approve")
        for owner in ("", principal.subject)
        for explain in (False, True)
    ]
    checks.insert(7, CheckInput("/projects/2", "read", org=orgs[1], subject=principal.subject))
    batch = core.check_batch(principal, checks)
    singles = [core.check(principal, check) for check in checks]
    nearest_left_out = 0  # a batch lists the nearest roles for its first 20 explained denials
    for in_batch, single in zip(batch.results, singles, strict=True):
        if in_batch.denial and in_batch.denial["would_allow"]["roles"] is None:
            nearest_left_out += 1
            assert _without_id(in_batch)[:3] == _without_id(single)[:3]
        else:
            assert _without_id(in_batch) == _without_id(single)
    assert nearest_left_out < len(checks) // 2
    assert len({r.decision_id for r in batch.results}) == len(checks)
    assert any(r.allowed for r in batch.results) and not all(r.allowed for r in batch.results)


def test_a_batch_refuses_at_the_first_check_a_single_check_refuses(core):
    principal = Principal("alice", "acme", (), None, None)
    checks = [CheckInput("/projects/1", "read"), CheckInput("/projects/1", "read", org="globex")]
    with pytest.raises(Forbidden) as single:
        core.check(principal, checks[1])
    with pytest.raises(Forbidden) as batch:
        core.check_batch(principal, checks)
    assert str(batch.value) == str(single.value)
    member = Principal("admin", "acme", (), None, None)  # a role's name as the caller
    with pytest.raises(Forbidden, match="is a role in the policy"):
        core.check_batch(member, [CheckInput("/projects/1", "read")] * 3)
