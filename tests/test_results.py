"""The core's typed answers (rolegate.results): what `Rolegate.check` returns, and its JSON form."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rolegate.api.decisions import decision_json
from rolegate.core import CheckInput, DecisionResult
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
