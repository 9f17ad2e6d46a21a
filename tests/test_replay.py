"""`rolegate replay`: a recorded workload re-decided with candidate policies (issue 17).

The workload is recorded by a real server (several orgs, a deny rule, owner checks, trusted
token roles) into a decision-log file and the database table; each candidate changes known
rules, so the flips, their groups and their counts are known in advance.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SAMPLE_POLICIES

from rolegate.cli import main
from rolegate.config import REPO_ROOT
from rolegate.engine import Engine
from rolegate.policy.replay import candidate_decider, parse_record, replay

# (subject, token org, resource, action, owner, token roles) -> recorded answer
WORKLOAD = [
    ("alice", "acme", "/projects/1", "read", None, (), True),
    ("bob", "acme", "/projects/2", "read", None, (), True),
    ("carol", "acme", "/projects/3", "read", None, (), True),
    ("dave", "acme", "/projects/1", "update", None, (), False),
    ("bob", "acme", "/projects/1", "update", None, (), True),
    ("dave", "acme", "/documents/7", "update", "dave", (), True),  # the owner rule
    ("carol", "acme", "/documents/8", "update", "dave", (), False),
    ("zed", "acme", "/projects/9", "update", None, ("editor",), True),  # a token role only
    ("zed", "acme", "/projects/9", "read", None, ("editor",), True),
    ("frank", "globex", "/documents/finance/q1", "read", None, (), False),  # contractor deny
    ("frank", "globex", "/documents/public", "read", None, (), True),
    ("bob", "globex", "/projects/5", "read", None, (), True),
    ("erin", "globex", "/projects/5", "delete", None, (), True),
]


@pytest.fixture
def recorded(make_live_server, settings, tmp_path) -> tuple[Path, str]:
    """(decision-log file, database URL) after the workload ran once on a real server."""
    path = tmp_path / "decisions.jsonl"
    live = make_live_server(
        settings.replace(decision_log=str(path), decision_log_db=True, trust_token_roles=True)
    )
    for subject, org, resource, action, owner, roles, expected in WORKLOAD:
        body = {"resource": resource, "action": action}
        if owner:
            body["owner"] = owner
        answer = live.client.post("/v1/check", body, headers=live.auth(subject, org, roles))
        assert answer.status == 200 and answer.body["allowed"] is expected, (subject, resource)
    assert live.core.decision_log.flush()
    return path, settings.database_url


def candidate(tmp_path: Path, name: str, *, drop=(), add=()) -> Path:
    """The sample policies with the lines `drop` removed and `add` appended (file, line)."""
    directory = tmp_path / name
    shutil.copytree(SAMPLE_POLICIES, directory)
    for file_name, line in drop:
        path = directory / file_name
        lines = path.read_text().splitlines()
        assert line in lines, line
        path.write_text("\n".join(item for item in lines if item != line) + "\n")
    for file_name, line in add:
        with (directory / file_name).open("a") as handle:
            handle.write(line + "\n")
    return directory


def run_replay(env, *args: str, database_url: str | None = None):
    extra = {"ROLEGATE_DATABASE_URL": database_url} if database_url else {}
    return CliRunner().invoke(main, ["replay", *args], env={**env, **extra})


def groups(document: dict) -> dict[tuple, int]:
    return {
        (g["direction"], g["org"], g["who"], g["action"], g["pattern"]): g["count"]
        for g in document["groups"]
    }


VIEWER_PROJECTS = ("roles.csv", "p, viewer, *, /projects/*, read, allow")
OWNER_UPDATE = ("roles.csv", "p, owner, *, /documents/:id, update, allow")
CONTRACTOR_DENY = ("globex.csv", "p, contractor, globex, /documents/finance/*, read, deny")


def test_the_same_policy_flips_nothing(env, recorded, tmp_path):
    """Owner and token roles are replayed: without them records 6, 8 and 9 would flip."""
    path, _ = recorded
    result = run_replay(env, str(candidate(tmp_path, "same")), "--log", str(path), "--format=json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["read"] == document["replayed"] == len(WORKLOAD)
    assert document["flips"] == {"total": 0, "grant": 0, "revoke": 0}
    assert document["groups"] == [] and document["refused"]["total"] == 0


def test_a_removed_allow_rule_revokes_exactly_its_decisions_grouped_per_org(
    env, recorded, tmp_path
):
    path, _ = recorded
    directory = candidate(tmp_path, "no-project-read", drop=[VIEWER_PROJECTS])
    document = json.loads(
        run_replay(env, str(directory), "--log", str(path), "--format", "json").output
    )
    assert groups(document) == {
        ("revoke", "acme", "viewer", "read", "/projects/*"): 4,  # alice, bob, carol, zed
        ("revoke", "globex", "viewer", "read", "/projects/*"): 1,
    }
    acme = next(g for g in document["groups"] if g["org"] == "acme")
    assert [e["subject"] for e in acme["examples"]] == ["alice", "bob", "carol"]
    example = acme["examples"][0]
    assert example["recorded"] == {"allowed": True, "rule": VIEWER_PROJECTS[1]}
    assert example["candidate"]["allowed"] is False and example["candidate"]["rule"] is None


def test_grants_and_revokes_with_the_rule_deciding_each_side(env, recorded, tmp_path):
    path, _ = recorded
    directory = candidate(tmp_path, "open", drop=[CONTRACTOR_DENY, OWNER_UPDATE])
    document = json.loads(
        run_replay(env, str(directory), "--log", str(path), "--format", "json").output
    )
    assert groups(document) == {
        ("grant", "globex", "viewer", "read", "/documents/*"): 1,
        ("revoke", "acme", "owner", "update", "/documents/:id"): 1,
    }
    grant = next(g for g in document["groups"] if g["direction"] == "grant")
    assert grant["examples"][0]["recorded"]["rule"] == CONTRACTOR_DENY[1]
    assert grant["examples"][0]["candidate"]["rule"] == "p, viewer, *, /documents/*, read, allow"
    assert document["flips"] == {"total": 2, "grant": 1, "revoke": 1}


def test_a_new_deny_rule_groups_by_that_rule(env, recorded, tmp_path):
    path, _ = recorded
    deny = "p, editor, acme, /projects/9, update, deny"
    directory = candidate(tmp_path, "deny", add=[("acme.csv", deny)])
    document = json.loads(
        run_replay(env, str(directory), "--log", str(path), "--format", "json").output
    )
    assert groups(document) == {("revoke", "acme", "editor", "update", "/projects/9"): 1}
    example = document["groups"][0]["examples"][0]
    assert example["subject"] == "zed" and example["token_roles"] == ["editor"]
    assert example["candidate"]["rule"] == deny


def test_fail_on_exit_codes(env, recorded, tmp_path):
    path, _ = recorded
    revoking = str(candidate(tmp_path, "revoking", drop=[VIEWER_PROJECTS]))
    same = str(candidate(tmp_path, "same"))
    log = ["--log", str(path)]
    assert run_replay(env, revoking, *log).exit_code == 0  # reporting only
    assert run_replay(env, revoking, *log, "--fail-on", "flip").exit_code == 1
    assert run_replay(env, revoking, *log, "--fail-on", "revoke").exit_code == 1
    assert run_replay(env, revoking, *log, "--fail-on", "grant").exit_code == 0
    assert run_replay(env, same, *log, "--fail-on", "flip").exit_code == 0
    assert run_replay(env, revoking, *log, "--fail-on", "sometimes").exit_code == 2


def test_the_database_log_filters_and_table_output(env, recorded, tmp_path):
    path, database_url = recorded
    directory = str(candidate(tmp_path, "no-project-read", drop=[VIEWER_PROJECTS]))
    from_table = run_replay(env, directory, "--format", "json", database_url=database_url)
    assert from_table.exit_code == 0, from_table.output
    from_file = run_replay(env, directory, "--log", str(path), "--format", "json")
    assert groups(json.loads(from_table.output)) == groups(json.loads(from_file.output))

    globex = json.loads(
        run_replay(
            env, directory, "--org", "globex", "--format=json", database_url=database_url
        ).output
    )
    assert globex["read"] == 4 and groups(globex) == {
        ("revoke", "globex", "viewer", "read", "/projects/*"): 1
    }
    limited = json.loads(
        run_replay(env, directory, "--log", str(path), "--limit", "2", "--format=json").output
    )
    assert limited["read"] == 2 and limited["flips"]["total"] == 2
    future = json.loads(
        run_replay(
            env, directory, "--log", str(path), "--since", "2999-01-01", "--format=json"
        ).output
    )
    assert future["read"] == 0
    recent = json.loads(
        run_replay(env, directory, "--log", str(path), "--since", "1h", "--format=json").output
    )
    assert recent["read"] == len(WORKLOAD)

    table = run_replay(env, directory, database_url=database_url)
    assert (
        "revoke  acme" in table.output and "p, viewer, *, /projects/*, read, allow" in table.output
    )
    markdown = run_replay(env, directory, "--format", "markdown", database_url=database_url)
    assert (
        markdown.output.startswith("## Decision replay") and "| revoke | acme |" in markdown.output
    )


def test_older_and_incomplete_records_are_refused_and_counted(env, recorded, tmp_path):
    path, _ = recorded
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    older = {
        k: v for k, v in lines[0].items() if k not in ("v", "owner", "token_roles", "default_role")
    }
    incomplete = {k: v for k, v in lines[1].items() if k != "token_roles"}
    newer = {**lines[2], "v": 3}
    shadow = {**lines[3], "shadow": True}
    with path.open("a") as handle:
        for item in (older, older, incomplete, newer, shadow):
            handle.write(json.dumps(item) + "\n")
        handle.write('{"torn": \n')
    result = run_replay(env, str(candidate(tmp_path, "same")), "--log", str(path), "--format=json")
    document = json.loads(result.output)
    assert document["refused"] == {
        "total": 5,
        "older_format": 2,
        "newer_format": 1,
        "incomplete": 1,
        "unreadable": 1,
    }
    assert document["shadow_skipped"] == 1 and document["replayed"] == len(WORKLOAD)
    text = run_replay(env, str(candidate(tmp_path, "same2")), "--log", str(path))
    assert "Refused 5 record(s)" in text.output and "2 older_format" in text.output


def test_bad_candidates_and_sources_exit_2_with_a_message(env, recorded, tmp_path):
    path, _ = recorded
    broken = candidate(tmp_path, "broken", add=[("acme.csv", "p, bob, acme")])
    result = run_replay(env, str(broken), "--log", str(path))
    assert result.exit_code == 2 and "acme.csv:" in result.output
    missing = run_replay(env, str(candidate(tmp_path, "ok")), "--log", str(tmp_path / "none.jsonl"))
    assert missing.exit_code == 2 and "no such decision-log file" in missing.output
    no_table = run_replay(env, str(candidate(tmp_path, "ok2")))  # env's own, empty database
    assert no_table.exit_code == 2 and "ROLEGATE_DECISION_LOG_DB=1" in no_table.output
    bad_time = run_replay(
        env, str(candidate(tmp_path, "ok3")), "--log", str(path), "--since", "soon"
    )
    assert bad_time.exit_code == 2


def engine_for(rules, default_role=None):
    engine = Engine.from_model_file(REPO_ROOT / "model.conf", default_role=default_role)
    engine.load(1, rules)
    return engine


def record(**fields):
    base = {
        "v": 2,
        "subject": "nobody",
        "org": "acme",
        "resource": "/projects/1",
        "action": "read",
        "owner": "",
        "token_roles": [],
        "default_role": None,
        "allowed": True,
        "rule": "p, viewer, acme, /projects/*, read, allow",
    }
    return {**base, **fields}


def test_the_recorded_default_role_is_the_one_replayed():
    rules = [("p", "viewer", "acme", "/projects/*", "read", "allow")]
    decide = candidate_decider(lambda role: engine_for(rules, role))
    report = replay([record(default_role="viewer"), record(default_role=None)], decide)
    assert report.unchanged == 1 and report.flips("revoke") == 1


def test_a_subject_the_candidate_makes_a_role_is_a_revoke():
    """A candidate that turns a subject's name into a role: the service would refuse it (403)."""
    rules = [
        ("p", "viewer", "acme", "/projects/*", "read", "allow"),
        ("g", "bob", "viewer", "acme"),
        ("g", "mallory", "bob", "acme"),
    ]
    decide = candidate_decider(lambda role: engine_for(rules, role))
    report = replay([record(subject="bob")], decide)
    (group,) = report.groups.values()
    assert group.direction == "revoke"
    assert group.examples[0]["candidate"]["error"].startswith("subject_is_role")


def test_parse_record_never_guesses():
    assert parse_record(record()).request.extra_roles == ()
    for broken in ({**record(), "allowed": "yes"}, {**record(), "v": True}, [1, 2]):
        with pytest.raises(ValueError):
            parse_record(broken)


def test_the_progress_bar_goes_to_stderr_only_when_asked(env, recorded, tmp_path):
    path, database_url = recorded
    directory = str(candidate(tmp_path, "same"))
    shown = run_replay(env, directory, "--log", str(path), "--progress", "--format=json")
    assert f"Replaying {path}" in shown.stderr and "Replaying" not in shown.stdout
    json.loads(shown.stdout)
    table = run_replay(env, directory, "--progress", database_url=database_url)
    assert "Replaying the decision log" in table.stderr
    quiet = run_replay(env, directory, "--log", str(path))
    assert quiet.stderr == ""
