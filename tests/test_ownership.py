"""Who manages a rule: the policy files or the admin API. Import, sync, `--demo` and the watcher
change only file-managed rules; the API only its own; API keys keep their links; the quick
start survives restarts; export/import round-trips; every command resolves the same home."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from click.testing import CliRunner
from conftest import HttpClient

from rolegate.admin import Caller, OrgAdmin
from rolegate.cli import main
from rolegate.config import REPO_ROOT
from rolegate.core import Rolegate
from rolegate.errors import Conflict, PolicyError
from rolegate.policy.watch import PolicyWatcher
from rolegate.store import ChangeSet, PolicyStore, read_policy_dir
from rolegate.store.schema import alembic_config

SAMPLE = REPO_ROOT / "policies"
ZOE = ("g", "zoe", "viewer", "acme")
EDITOR_RULE = ("p", "editor", "acme", "/wiki/*", "update", "allow")


def run(*args: str, **kwargs):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, **kwargs)


@pytest.fixture
def store(env) -> PolicyStore:
    store = PolicyStore.from_url(env["ROLEGATE_DATABASE_URL"])
    yield store
    store.dispose()


def sample(directory: Path = SAMPLE) -> tuple[list, list]:
    sourced = read_policy_dir(directory)
    return (
        [item.rule for item in sourced if item.managed_by == "files"],
        [item.rule for item in sourced if item.managed_by == "api"],
    )


def owners(store: PolicyStore) -> dict:
    return store.load_owners()[1]


# -- the store -------------------------------------------------------------------------------


def test_file_sync_keeps_api_rules_and_applies_seeds_once(store):
    files, seeds = sample()
    first = store.sync_files(files, seeds=seeds, actor="file:policies")
    assert set(first.seeded) == set(seeds) and first.revision == 1
    assert owners(store)[("g", "alice", "admin", "acme")] == "api"
    assert owners(store)[("g", "admin", "editor", "*")] == "files"
    store.apply(ChangeSet(added=[ZOE]), actor="alice", managed_by="api")
    # An admin removes a seeded member through the API: the next sync does not bring it back.
    store.apply(ChangeSet(removed=[("g", "dave", "member", "acme")]), actor="a", managed_by="api")
    again = store.sync_files(files, seeds=seeds, actor="file:policies")
    assert again.is_empty() and again.revision == store.revision()
    assert ZOE in owners(store) and ("g", "dave", "member", "acme") not in owners(store)
    # A file rule deleted from the files goes; API rules stay.
    trimmed = [rule for rule in files if rule != ("g", "member", "viewer", "*")]
    result = store.sync_files(trimmed, seeds=seeds, actor="file:policies")
    assert result.changes.removed == (("g", "member", "viewer", "*"),)
    assert ZOE in owners(store)


def test_files_adopt_an_api_rule_they_declare_and_release_what_they_mark_api(store):
    store.apply(ChangeSet(added=[ZOE]), actor="alice", managed_by="api")
    result = store.sync_files([ZOE], actor="file:x")
    assert result.adopted == (ZOE,) and result.changes.is_empty()
    assert owners(store)[ZOE] == "files"
    result = store.sync_files([], seeds=[ZOE], actor="file:x")
    assert result.released == (ZOE,) and result.changes.is_empty()
    assert owners(store)[ZOE] == "api"


def test_the_api_cannot_remove_a_file_rule_and_files_cannot_hold_api_keys(store):
    store.sync_files([EDITOR_RULE], actor="file:x")
    with pytest.raises(Conflict) as caught:
        store.apply(ChangeSet(removed=[EDITOR_RULE]), actor="alice", managed_by="api")
    assert caught.value.code == "managed_by_files"
    assert EDITOR_RULE in owners(store)
    with pytest.raises(PolicyError) as refused:
        store.sync_files([("g", "apikey:abc", "viewer", "acme")], actor="file:x")
    assert refused.value.code == "api_key_in_files"


def test_no_file_sync_removes_an_api_key_link_even_one_marked_as_files(store):
    link = ("g", "apikey:k1", "editor", "acme")
    store.apply(ChangeSet(added=[link]), actor="legacy")  # an old row, owner "files"
    result = store.sync_files([], actor="file:x")
    assert link in owners(store) and link not in result.changes.removed


def test_migration_0005_attributes_api_made_rules(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0004")
    legacy = PolicyStore(engine)
    # Written before ownership existed: through the admin API (actor alice), by files, a key.
    for rule, actor in (
        (ZOE, "alice"),
        (("g", "bob", "editor", "acme"), "file:policies"),
        (("g", "apikey:k1", "editor", "acme"), "cli:ops"),
    ):
        with engine.begin() as connection:
            revision = connection.execute(sa.text("SELECT revision FROM policy_state")).scalar()
            connection.execute(
                sa.text("INSERT INTO casbin_rule (ptype, v0, v1, v2) VALUES ('g', :a, :b, :c)"),
                {"a": rule[1], "b": rule[2], "c": rule[3]},
            )
            connection.execute(
                sa.text(
                    "INSERT INTO change_log (revision, at, actor, operation, ptype, rule, org, "
                    "prev_hash, hash) VALUES (:r, '2026-01-01T00:00:00.000000+00:00', :actor, "
                    "'add', 'g', :rule, 'acme', '', '')"
                ),
                {"r": revision + 1, "actor": actor, "rule": ", ".join(rule)},
            )
            connection.execute(sa.text("UPDATE policy_state SET revision = revision + 1"))
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0005")
    found = legacy.load_owners()[1]
    assert found == {
        ZOE: "api",
        ("g", "bob", "editor", "acme"): "files",
        ("g", "apikey:k1", "editor", "acme"): "api",
    }
    engine.dispose()


# -- the admin API and the watcher -------------------------------------------------------------


def test_admin_api_answers_409_for_file_rules_and_offboarding_a_file_org(settings, tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(SAMPLE, policies, ignore=shutil.ignore_patterns("tests"))
    (policies / "initech.csv").write_text("g, milton, admin, initech\n")
    core = Rolegate.from_settings(settings.replace(policy_dir=str(policies)), with_identity=False)
    try:
        core.start(sync_policies=True)
        admin, operator = OrgAdmin(core), Caller.operator("ops")
        with pytest.raises(Conflict) as caught:
            admin.set_member_roles(operator, "initech", "milton", ["viewer"])
        assert caught.value.code == "managed_by_files"
        assert "initech.csv" in caught.value.message
        with pytest.raises(Conflict) as caught:
            admin.delete_org(operator, "initech")
        assert caught.value.code == "managed_by_files"
        assert ("g", "milton", "admin", "initech") in core.engine.snapshot.rules("initech")
        listed = admin.list_members(operator, "initech")["members"]
        assert [(item["subject"], item["managed_by"]) for item in listed] == [("milton", "files")]
        # Adding roles to a file-managed member is fine: only the new link is the API's.
        admin.set_member_roles(operator, "initech", "milton", ["admin", "viewer"])
        assert owners(core.store)[("g", "milton", "viewer", "initech")] == "api"
        # Seeded sample members belong to the API.
        admin.set_member_roles(operator, "acme", "bob", ["viewer"])
    finally:
        core.close()


def test_the_watcher_never_removes_api_rules(settings, tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(SAMPLE, policies, ignore=shutil.ignore_patterns("tests"))
    store = PolicyStore.from_url(settings.database_url)
    try:
        files, seeds = sample(policies)
        store.sync_files(files, seeds=seeds, actor="file:x")
        watcher = PolicyWatcher(
            policies, store, data_dir=settings.data_path, model_path=settings.model_path
        )
        store.apply(ChangeSet(added=[ZOE, EDITOR_RULE]), actor="alice", managed_by="api")
        # The files now also drop a seed and a file rule: only the file rule goes.
        text = (policies / "roles.csv").read_text().replace("g, member, viewer, *\n", "")
        (policies / "roles.csv").write_text(text)
        (policies / "acme.csv").write_text((policies / "acme.csv").read_text() + "# edited\n")
        watcher.reload(["roles.csv"])
        found = owners(store)
        assert ZOE in found and EDITOR_RULE in found
        assert ("g", "alice", "admin", "acme") in found
        assert ("g", "member", "viewer", "*") not in found
    finally:
        store.dispose()


# -- the quick start: serve --demo, API changes, restart -----------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLEGATE_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


class DemoServer:
    def __init__(self, tmp_path: Path, cwd: Path):
        self.port = free_port()
        self.client = HttpClient("127.0.0.1", self.port)
        self.env = demo_env(tmp_path)
        cwd.mkdir(exist_ok=True)
        self.log = (tmp_path / f"demo-{self.port}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rolegate.cli", "serve", "--demo", "--port", str(self.port)]
            + ["--workers", "1"],
            cwd=cwd,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.process.poll() is None, "serve --demo exited early"
            try:
                if self.client.get("/readyz").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("serve --demo did not become ready")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        self.log.close()


def demo_token(env: dict[str, str], cwd: Path, subject: str, org: str) -> str:
    cwd.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "rolegate.cli", "token", "--demo", "--sub", subject, "--org", org],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_quick_start_keeps_api_members_and_keys_across_restart_and_import(tmp_path):
    server = DemoServer(tmp_path, tmp_path / "first-cwd")
    try:
        # A token minted from another directory is signed with the same demo secret.
        token = demo_token(server.env, tmp_path / "elsewhere", "alice", "acme")
        auth = {"Authorization": f"Bearer {token}"}
        response = server.client.request(
            "PUT", "/v1/orgs/acme/members/zoe", {"roles": ["editor"]}, headers=auth
        )
        assert response.status == 200, response.text
        response = server.client.post(
            "/v1/orgs/acme/api-keys", {"name": "ci", "roles": ["viewer"]}, headers=auth
        )
        assert response.status == 201, response.text
        key = response.body["key"]
    finally:
        server.stop()

    def key_reads(client) -> bool:
        body = {"resource": "/projects/1", "action": "read"}
        response = client.post("/v1/check", body, headers={"X-API-Key": key})
        assert response.status == 200, response.text
        return response.body["allowed"]

    server = DemoServer(tmp_path, tmp_path / "second-cwd")  # restart, elsewhere
    try:
        token = demo_token(server.env, tmp_path / "elsewhere", "zoe", "acme")
        check = server.client.post(
            "/v1/check",
            {"resource": "/projects/1", "action": "update"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert check.status == 200 and check.body["allowed"] is True, check.text
        assert key_reads(server.client)
    finally:
        server.stop()

    # `import --yes` of the sample files keeps both as well.
    result = subprocess.run(
        [sys.executable, "-m", "rolegate.cli", "import", str(SAMPLE), "--yes"],
        cwd=tmp_path,
        env=server.env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "already equals" in result.stdout
    database = tmp_path / "xdg" / "rolegate" / "rolegate.db"
    store = PolicyStore.from_url(f"sqlite:///{database}")
    try:
        found = owners(store)
        assert found[("g", "zoe", "editor", "acme")] == "api"
        assert any(rule[1].startswith("apikey:") for rule in found)
    finally:
        store.dispose()


# -- round trips -----------------------------------------------------------------------------


def seeded_store(store: PolicyStore) -> None:
    files, seeds = sample()
    store.sync_files(
        [*files, ("g", "root", "platform-admin", "*")], seeds=seeds, actor="file:policies"
    )
    store.apply(
        ChangeSet(added=[ZOE, ("g", "apikey:k1", "viewer", "acme")]), actor="a", managed_by="api"
    )


@pytest.mark.parametrize("include_api", [False, True])
def test_export_then_import_is_a_no_op(env, store, tmp_path, include_api):
    seeded_store(store)
    out = tmp_path / "out"
    args = ["export", str(out)] + (["--include-api"] if include_api else [])
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "API-key role link(s) not exported" in result.output
    if not include_api:
        assert "API-managed rule(s) not exported (--include-api" in result.output
    roles = (out / "roles.csv").read_text()
    assert "# rolegate: global-membership\ng, root, platform-admin, *" in roles
    # Roles nobody in the exported files holds (pep: API keys; auditor: the API's ivan).
    held = "pep" if include_api else "auditor, pep"
    assert roles.startswith(f"# rolegate: held-elsewhere {held}\n")
    lint = run("lint", str(out))
    assert "0 errors, 0 warnings" in lint.output, lint.output
    # The sample's acme members are all API-managed: acme.csv exists only with --include-api.
    assert (out / "acme.csv").exists() == include_api
    if include_api:
        acme = (out / "acme.csv").read_text()
        assert "# rolegate: managed-by api\ng, alice, admin, acme" in acme
        assert "g, zoe, viewer, acme" in acme and "apikey:" not in acme
    assert run("lint", str(out)).exit_code == 0
    revision, before = store.load_owners()
    result = run("import", str(out), "--yes")
    assert result.exit_code == 0, result.output
    assert "already equals" in result.output
    assert store.load_owners() == (revision, before)


def test_export_refuses_to_overwrite_other_content_unless_forced(env, store, tmp_path):
    seeded_store(store)
    out = tmp_path / "src"
    shutil.copytree(SAMPLE, out, ignore=shutil.ignore_patterns("tests"))
    original = (out / "acme.csv").read_text()
    result = run("export", str(out), "--include-api")
    assert result.exit_code == 2
    assert "--force" in result.output and "acme.csv" in result.output
    assert (out / "acme.csv").read_text() == original  # nothing written
    result = run("export", str(out), "--force", "--include-api")
    assert result.exit_code == 0, result.output
    assert run("export", str(out), "--include-api").exit_code == 0  # same content: no-op


# -- diff --fail-on ----------------------------------------------------------------------------


def test_diff_fail_on(env, store, tmp_path):
    seeded_store(store)
    new = tmp_path / "new"
    shutil.copytree(SAMPLE, new, ignore=shutil.ignore_patterns("tests"))
    roles = new / "roles.csv"
    roles.write_text(roles.read_text() + "p, viewer, *, /wiki/*, read, allow\n")
    assert run("diff", str(SAMPLE), str(new), "--fail-on", "loss").exit_code == 0
    gained = run("diff", str(SAMPLE), str(new), "--fail-on", "gain")
    assert gained.exit_code == 1
    assert "--fail-on gain" in gained.output
    assert run("diff", str(SAMPLE), str(new), "--fail-on", "any").exit_code == 1
    # Against the store, API-managed members are on both sides: no change from them.
    assert run("diff", "store", str(SAMPLE), "--fail-on", "any").exit_code == 0


# -- working directory independence -------------------------------------------------------------


def test_offline_commands_on_a_missing_store_say_so_and_create_nothing(env, tmp_path):
    home = Path(env["ROLEGATE_HOME"])
    del_env = {"ROLEGATE_DATABASE_URL": None}
    for args in (
        ["permissions", "acme", "bob"],
        ["check", "acme", "bob", "/x", "read"],
        ["export", str(tmp_path / "out")],
        ["org", "members", "acme"],
    ):
        result = CliRunner().invoke(main, args, env=del_env)
        assert result.exit_code == 2, (args, result.output)
        assert "no policy store at" in result.output and str(home) in result.output
    assert not (home / "rolegate.db").exists()
    assert not (tmp_path / "rolegate.db").exists() and not (tmp_path / "out").exists()


def test_default_store_and_demo_secret_do_not_depend_on_the_working_directory(env, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    del_env = {"ROLEGATE_DATABASE_URL": None, "ROLEGATE_DATA_DIR": None}
    os.chdir(one)
    assert CliRunner().invoke(main, ["import", str(SAMPLE)], env=del_env).exit_code == 0
    first = CliRunner().invoke(main, ["token", "--demo", "--sub", "a"], env=del_env).output
    os.chdir(two)
    result = CliRunner().invoke(main, ["permissions", "acme", "bob"], env=del_env)
    assert result.exit_code == 0, result.output
    second = CliRunner().invoke(main, ["token", "--demo", "--sub", "a"], env=del_env).output
    import jwt

    secret = (Path(env["ROLEGATE_HOME"]) / "demo-secret").read_text().strip()
    for token in (first.strip(), second.strip()):
        assert jwt.decode(token, secret, algorithms=["HS256"])["sub"] == "a"
    assert not any(path.name == "rolegate.db" for path in (*one.iterdir(), *two.iterdir()))


# -- matrix ---------------------------------------------------------------------------------


def test_matrix_table_fits_the_terminal_and_points_to_csv(env, store, monkeypatch):
    seeded_store(store)
    monkeypatch.setenv("COLUMNS", "60")
    result = run("matrix", "acme")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines[:-1]) <= 60
    assert "--format csv" in lines[-1]


def test_revoking_a_key_drops_even_a_link_marked_as_file_managed(settings):
    core = Rolegate.from_settings(settings, with_identity=False)
    try:
        core.start(sync_policies=True)
        admin, operator = OrgAdmin(core), Caller.operator("ops")
        created = admin.create_api_key(operator, "acme", "ci", ["viewer"])
        link = ("g", f"apikey:{created['id']}", "viewer", "acme")
        assert owners(core.store)[link] == "api"
        with core.store.engine.begin() as connection:  # another tool rewrote the owner
            connection.execute(sa.text("UPDATE casbin_rule SET managed_by = 'files'"))
        revoked = admin.revoke_api_key(operator, "acme", created["id"])
        assert revoked["revoked_at"]
        assert link not in owners(core.store)
    finally:
        core.close()


def test_bulk_cannot_change_a_file_member_and_applies_the_rest(settings, tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(SAMPLE, policies, ignore=shutil.ignore_patterns("tests"))
    (policies / "acme.csv").write_text(
        (policies / "acme.csv").read_text() + "# rolegate: managed-by files\ng, gil, viewer, acme\n"
    )
    core = Rolegate.from_settings(settings.replace(policy_dir=str(policies)), with_identity=False)
    try:
        core.start(sync_policies=True)
        items = [{"subject": "gil", "roles": ["editor"]}, {"subject": "zoe", "roles": ["viewer"]}]
        result = OrgAdmin(core).bulk_set_roles(Caller.operator("ops"), "acme", items)
        statuses = [(item["subject"], item["status"]) for item in result["results"]]
        assert statuses == [("gil", "error"), ("zoe", "ok")]
        assert result["results"][0]["error"]["code"] == "managed_by_files"
        found = owners(core.store)
        assert found[("g", "gil", "viewer", "acme")] == "files"
        assert ("g", "gil", "editor", "acme") not in found and found[ZOE] == "api"
    finally:
        core.close()


def test_import_refuses_api_key_links_in_files_with_file_and_line(env, store, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(SAMPLE, bad, ignore=shutil.ignore_patterns("tests"))
    (bad / "keys.csv").write_text("g, apikey:k9, admin, acme\n")
    result = run("import", str(bad), "--yes")
    assert result.exit_code == 2
    assert "keys.csv:1:" in result.output and "api-key-in-files" in result.output
    assert store.revision() == 0
