"""`rolegate org ...` as a local operator, against a real SQLite store."""

from __future__ import annotations

import getpass
import json

import pytest
from click.testing import CliRunner

from rolegate.cli import main
from rolegate.config import Settings
from rolegate.core import Rolegate


@pytest.fixture
def env(env, tmp_path):
    """The clean CLI environment with the sample policies imported into its store."""
    core = Rolegate.from_settings(Settings.from_env(), with_identity=False)
    core.sync_policies()
    core.close()
    return tmp_path


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def ok(*args: str, input: str | None = None) -> dict:
    result = run(*args, input=input)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def store_core() -> Rolegate:
    core = Rolegate.from_settings(Settings.from_env(), with_identity=False)
    core.load()
    return core


def test_set_roles_members_and_remove_with_the_operator_as_actor(env):
    result = ok("org", "set-roles", "acme", "dave", "editor", "viewer")
    assert result["roles"] == ["editor", "viewer"]
    members = ok("org", "members", "acme")["members"]
    dave = next(m for m in members if m["subject"] == "dave")
    assert dave == {
        "subject": "dave",
        "roles": ["editor", "viewer"],
        "inherited": ["member"],
        "managed_by": "api",
    }
    ok("org", "remove-member", "acme", "dave")
    core = store_core()
    try:
        entries = core.store.changes(since_revision=result["revision"] - 1)
        assert {entry.actor for entry in entries} == {f"cli:{getpass.getuser()}"}
        assert not core.engine.snapshot.is_member("dave", "acme")
    finally:
        core.close()


def test_errors_are_one_line_and_nonzero(env):
    result = run("org", "set-roles", "acme", "dave", "superuser")
    assert result.exit_code != 0
    assert "superuser" in result.output and "Traceback" not in result.output
    result = run("org", "remove-member", "acme", "alice")
    assert result.exit_code != 0 and "without an admin" in result.output
    result = run("org", "set-roles", "acme", "da\x07ve", "viewer")
    assert result.exit_code != 0 and "control characters" in result.output


def test_create_and_delete_org(env):
    created = ok("org", "create", "initech", "--admin", "zoe", "--name", "Initech")
    assert created["admin"] == "zoe"
    deleted = ok("org", "delete", "initech", "--yes")
    assert deleted["removed_rules"] == 1
    result = run("org", "delete", "initech", "--yes")
    assert result.exit_code != 0 and "does not exist" in result.output
    aborted = run("org", "delete", "acme", input="n\n")
    assert aborted.exit_code != 0
    assert ok("org", "members", "acme")["members"]


def test_bulk_from_a_file_exits_1_when_an_item_fails(env):
    path = env / "items.json"
    path.write_text(
        json.dumps(
            {
                "items": [
                    {"subject": "zoe", "roles": ["viewer"]},
                    {"subject": "yan", "roles": ["nope"]},
                ]
            }
        )
    )
    result = run("org", "bulk", "acme", str(path))
    assert result.exit_code == 1
    body = json.loads(result.output)
    assert [r["status"] for r in body["results"]] == ["ok", "error"]
    path.write_text("{")
    result = run("org", "bulk", "acme", str(path))
    assert result.exit_code != 0 and "items.json:1" in result.output
    ok("org", "bulk", "acme", "-", input='[{"subject": "xia", "roles": ["member"]}]')


def test_rules_and_keys(env):
    ok("org", "rules", "add", "globex", "p", "reviewer", "/projects/*", "update", "allow")
    ok("org", "rules", "add", "globex", "g", "reviewer", "viewer")
    rules = ok("org", "rules", "list", "globex")["rules"]
    assert {"type": "g", "member": "reviewer", "role": "viewer"} in rules
    ok("org", "rules", "remove", "globex", "g", "reviewer", "viewer")
    bad = run("org", "rules", "add", "globex", "p", "x")
    assert bad.exit_code != 0

    key = ok("org", "keys", "create", "acme", "--name", "ci", "--role", "viewer")
    assert key["key"].startswith(f"rgk_{key['id']}_")
    listed = ok("org", "keys", "list", "acme")["api_keys"]
    assert [k["id"] for k in listed] == [key["id"]]
    ok("org", "keys", "revoke", "acme", key["id"])
    core = store_core()
    try:
        from rolegate.errors import AuthenticationError

        with pytest.raises(AuthenticationError):
            core.api_keys.authenticate(key["key"])
    finally:
        core.close()
