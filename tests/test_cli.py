"""The command line as a user runs it: check, token, and serve --demo under the real server."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from rolegate.cli import main
from rolegate.config import REPO_ROOT

POLICIES = str(REPO_ROOT / "policies")


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_check_exit_codes_against_a_policy_dir(env):
    allow = run("check", "acme", "bob", "/projects/1", "update", "--policy-dir", POLICIES)
    assert (allow.exit_code, allow.output.strip()) == (0, "allow")
    deny = run("check", "acme", "bob", "/projects/1", "delete", "--policy-dir", POLICIES)
    assert (deny.exit_code, deny.output.strip()) == (1, "deny")
    explained = run(
        "check",
        "acme",
        "bob",
        "/documents/3",
        "update",
        "--owner",
        "bob",
        "--explain",
        "--policy-dir",
        POLICIES,
    )
    assert explained.exit_code == 0
    assert "p, owner, *, /documents/:id, update, allow" in explained.output
    assert "path: bob -> owner" in explained.output


def test_check_against_the_store(env):
    from rolegate.config import Settings
    from rolegate.core import Rolegate

    core = Rolegate.from_settings(Settings.from_env(policy_dir=POLICIES), with_identity=False)
    core.sync_policies()
    core.close()
    assert run("check", "acme", "alice", "/projects/1", "delete").exit_code == 0
    assert run("check", "globex", "alice", "/projects/1", "delete").exit_code == 1


def test_check_formats_and_the_old_argument_order(env):
    as_json = run(
        "check",
        "acme",
        "bob",
        "/projects/1",
        "update",
        "--format",
        "json",
        "--policy-dir",
        POLICIES,
    )
    assert json.loads(as_json.output)["allowed"] is True
    as_csv = run(
        "check", "acme", "bob", "/projects/1", "delete", "--format", "csv", "--policy-dir", POLICIES
    )
    assert as_csv.exit_code == 1
    assert as_csv.output.splitlines()[1].startswith("acme,bob,/projects/1,delete,deny,")
    # Deprecated: --json, and SUBJECT before ORG (read correctly, with a warning on stderr).
    old = CliRunner().invoke(
        main, ["check", "bob", "acme", "/projects/1", "update", "--json", "--policy-dir", POLICIES]
    )
    assert old.exit_code == 0
    assert json.loads(old.stdout)["allowed"] is True
    assert "deprecated" in old.stderr


def test_check_errors_exit_2_with_file_and_line(env, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "org.csv").write_text("g, alice, admin, acme\np, alice, acme, /x, read\n")
    result = CliRunner().invoke(
        main, ["check", "acme", "a", "/x", "read", "--policy-dir", str(bad)]
    )
    assert result.exit_code == 2
    assert "org.csv:2" in result.output
    empty = CliRunner().invoke(main, ["check", "acme", "a", "", "read", "--policy-dir", POLICIES])
    assert empty.exit_code == 2
    assert "resource: must not be empty" in empty.output


def test_token_requires_a_secret(env):
    result = CliRunner().invoke(main, ["token", "--sub", "alice", "--org", "acme"])
    assert result.exit_code == 2
    assert "ROLEGATE_JWT_SECRET" in result.output


def test_token_round_trip(env, monkeypatch):
    import jwt

    monkeypatch.setenv("ROLEGATE_JWT_SECRET", "s" * 40)
    result = run("token", "--sub", "alice", "--org", "acme", "--role", "editor", "--ttl", "15m")
    assert result.exit_code == 0
    claims = jwt.decode(result.output.strip(), "s" * 40, algorithms=["HS256"])
    assert (claims["sub"], claims["org"], claims["roles"]) == ("alice", "acme", ["editor"])
    assert 14 * 60 <= claims["exp"] - time.time() <= 15 * 60
    bad_ttl = CliRunner().invoke(main, ["token", "--sub", "a", "--ttl", "soon"])
    assert bad_ttl.exit_code == 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_demo_prints_a_curl_line_that_works(tmp_path: Path):
    """... also on a demo store an older Rolegate left behind (it is upgraded, not refused)."""
    from rolegate.store.db import make_engine
    from rolegate.store.schema import upgrade

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLEGATE_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")  # the default ROLEGATE_HOME: <it>/rolegate
    (tmp_path / "xdg" / "rolegate").mkdir(parents=True)
    older = make_engine(f"sqlite:///{tmp_path / 'xdg' / 'rolegate' / 'rolegate.db'}")
    upgrade(older, "0005")
    older.dispose()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rolegate.cli",
            "serve",
            "--demo",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = ""
        deadline = time.time() + 60
        while "curl" not in output and time.time() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output += line
        match = re.search(r"Authorization: Bearer ([\w.-]+)", output)
        assert match, output
        body = re.search(r"-d '(\{.*\})'", output).group(1)
        status, answer = None, None
        while time.time() < deadline:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request(
                    "POST",
                    "/v1/check",
                    body=body,
                    headers={
                        "Authorization": f"Bearer {match.group(1)}",
                        "Content-Type": "application/json",
                    },
                )
                response = connection.getresponse()
                status, answer = response.status, json.loads(response.read())
                break
            except OSError:
                time.sleep(0.2)
        assert status == 200, answer
        assert answer["allowed"] is True and answer["subject"] == "alice"
        assert "demo store upgraded from schema 0005 to " in output, output
        secret = tmp_path / "xdg" / "rolegate" / "demo-secret"
        assert secret.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "xdg" / "rolegate" / "rolegate.db").is_file()
        assert not (tmp_path / "rolegate.db").exists()  # nothing in the working directory
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_serve_stops_on_a_policy_file_that_does_not_parse(env, tmp_path, monkeypatch):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "acme.csv").write_text("# members\ng, alice, admin, acme\ng, bob, editor\n")
    monkeypatch.setenv("ROLEGATE_POLICY_DIR", str(bad))
    monkeypatch.setenv("ROLEGATE_JWT_SECRET", "s" * 40)
    result = CliRunner().invoke(main, ["serve", "--sync-policies", "--port", "1"])
    assert result.exit_code == 2
    assert f"{bad / 'acme.csv'}:3" in result.output or "acme.csv:3" in result.output


def test_serve_without_a_key_source_explains_what_to_set(env):
    result = CliRunner().invoke(main, ["serve", "--port", "1"])
    assert result.exit_code == 2
    assert "ROLEGATE_JWT_SECRET" in result.output
