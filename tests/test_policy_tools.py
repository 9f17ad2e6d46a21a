"""fmt, diff (with access impact), import, export and changes: through the CLI, on real stores."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from rolegate.cli import main
from rolegate.cli import policy as policy_cli
from rolegate.config import REPO_ROOT
from rolegate.policy.impact import diff_rules
from rolegate.store import PolicyStore, change_log, csvfiles, read_policy_dir
from rolegate.store.policies import ChangeSet

SAMPLE = REPO_ROOT / "policies"
MODEL = REPO_ROOT / "model.conf"


@pytest.fixture
def store(env):
    store = PolicyStore.from_url(env["ROLEGATE_DATABASE_URL"])
    yield store
    store.dispose()


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


def copy_sample(tmp_path: Path, name: str = "policies") -> Path:
    target = tmp_path / name
    target.mkdir()
    for path in SAMPLE.glob("*.csv"):
        shutil.copy(path, target / path.name)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def sample_rules() -> set[tuple[str, ...]]:
    return {item.rule for item in read_policy_dir(SAMPLE)}


# -- fmt -----------------------------------------------------------------------------------


def test_fmt_sorts_runs_keeps_comments_and_pins_directives(env, tmp_path):
    directory = tmp_path / "p"
    directory.mkdir()
    source = (
        "\ufeff# Acme members\r\n"
        "g,carol , viewer,acme   \r\n"
        'g, "alice", admin, acme\r\n'
        "\r\n\r\n\r\n"
        "# rolegate: global-membership\r\n"
        "g, root, admin, *\r\n"
        "g, bob, editor, acme\r\n"
        "g, bob, editor, acme\r\n"
    )
    (directory / "acme.csv").write_bytes(source.encode())
    assert run("fmt", str(directory), "--check").exit_code == 1
    assert (directory / "acme.csv").read_bytes() == source.encode()  # --check changes nothing

    result = run("fmt", str(directory))
    assert result.exit_code == 0, result.output
    assert (directory / "acme.csv").read_text() == (
        "# Acme members\n"
        "g, alice, admin, acme\n"
        "g, carol, viewer, acme\n"
        "\n"
        "# rolegate: global-membership\n"
        "g, root, admin, *\n"
        "g, bob, editor, acme\n"
    )
    assert run("fmt", str(directory), "--check").exit_code == 0
    before = (directory / "acme.csv").read_bytes()
    run("fmt", str(directory))
    assert (directory / "acme.csv").read_bytes() == before  # idempotent
    assert {item.rule for item in read_policy_dir(directory)} == {
        ("g", "alice", "admin", "acme"),
        ("g", "carol", "viewer", "acme"),
        ("g", "root", "admin", "*"),
        ("g", "bob", "editor", "acme"),
    }


def test_fmt_leaves_a_broken_file_untouched(env, tmp_path):
    directory = tmp_path / "p"
    directory.mkdir()
    broken = b"g,  b, viewer, acme\np, a, acme\n"
    (directory / "acme.csv").write_bytes(broken)
    (directory / "ok.csv").write_text("g,  x, viewer, acme\n")
    result = run("fmt", str(directory))
    assert result.exit_code == 1
    assert "acme.csv:2:1: field-count" in result.output
    assert (directory / "acme.csv").read_bytes() == broken
    assert (directory / "ok.csv").read_text() == "g, x, viewer, acme\n"


def test_fmt_preserves_meaning_of_the_sample(env, tmp_path):
    directory = copy_sample(tmp_path)
    assert run("fmt", str(directory)).exit_code == 0
    assert {item.rule for item in read_policy_dir(directory)} == sample_rules()


# -- diff and impact -----------------------------------------------------------------------


def test_diff_reports_access_impact_from_effective_permissions(env, tmp_path):
    new = copy_sample(tmp_path)
    edit(new / "acme.csv", "g, bob, editor, acme", "g, bob, viewer, acme")
    edit(new / "globex.csv", "p, contractor, globex, /documents/finance/*, read, deny\n", "")
    result = run("diff", str(SAMPLE), str(new), "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["added"] == ["g, bob, viewer, acme"]
    assert set(data["removed"]) == {
        "g, bob, editor, acme",
        "p, contractor, globex, /documents/finance/*, read, deny",
    }
    changes = {
        (c["org"], c["subject"], c["action"], c["resource"]): (c["change"], c["before"], c["after"])
        for c in data["impact"]
    }
    # bob drops from editor to viewer in acme: loses editor's and member's permissions
    assert changes[("acme", "bob", "update", "/projects/*")] == ("loss", "all", "none")
    assert changes[("acme", "bob", "read", "/members")] == ("loss", "all", "none")
    assert ("acme", "bob", "read", "/projects/*") not in changes  # still a viewer
    # frank (a contractor) regains finance documents; /documents/* goes from some to all
    assert changes[("globex", "frank", "read", "/documents/finance/*")] == ("gain", "none", "all")
    assert changes[("globex", "frank", "read", "/documents/*")] == ("gain", "some", "all")
    # nobody else is affected
    assert {(org, subject) for org, subject, _, _ in changes} == {
        ("acme", "bob"),
        ("globex", "frank"),
        ("globex", "contractor"),
    }


def test_template_change_is_evaluated_in_every_org(env, tmp_path):
    new = copy_sample(tmp_path)
    edit(
        new / "roles.csv",
        "p, viewer, *, /projects/*, read, allow",
        "p, viewer, *, /projects/*, read, deny",
    )
    result = diff_rules(sample_rules(), {r.rule for r in read_policy_dir(new)}, model_path=MODEL)
    assert set(result.orgs) == {"acme", "globex"}
    losers = {
        (c.org, c.subject)
        for c in result.impact
        if c.resource == "/projects/*" and c.action == "read"
    }
    assert (
        ("acme", "alice") in losers
        and ("globex", "erin") in losers
        and ("globex", "frank") in losers
    )
    assert all(c.change == "loss" for c in result.impact)


def test_owner_variant_reported_when_it_differs(tmp_path):
    old = sample_rules()
    new = old - {("p", "owner", "*", "/documents/:id", "update", "allow")}
    result = diff_rules(old, new, model_path=MODEL)
    carol = [c for c in result.impact if c.subject == "carol"]
    assert carol and all(c.as_owner and c.change == "loss" and c.action == "update" for c in carol)
    # admins update every document anyway: the owner rule's removal changes nothing for them
    assert not [c for c in result.impact if c.subject == "alice"]


def test_removed_member_loses_everything_and_text_groups_subjects(env, tmp_path):
    old = sample_rules()
    new = old - {("g", "carol", "viewer", "acme"), ("g", "dave", "member", "acme")} | {
        ("g", "zed", "viewer", "acme")
    }
    result = diff_rules(old, new, model_path=MODEL)
    assert {c.subject for c in result.impact} == {"carol", "dave", "zed"}
    text = result.render_text()
    assert "- g, carol, viewer, acme" in text and "+ g, zed, viewer, acme" in text
    assert "    zed\n      + read /documents/*  none -> all" in text
    markdown = result.render_markdown()
    assert "| dave | loss | `read` | `/members` | all | none |" in markdown


def test_diff_against_the_store_and_markdown(env, store, tmp_path):
    store.replace_all(sample_rules(), actor="test")
    result = run("diff", "store", str(SAMPLE), "--format", "markdown")
    assert result.exit_code == 0
    assert result.output == "**No rule changes.**\n"
    new = copy_sample(tmp_path)
    edit(new / "acme.csv", "g, carol, viewer, acme", "g, carol, admin, acme")
    result = run("diff", "store", str(new), "--format", "markdown")
    assert "### Rule changes: 1 added, 1 removed" in result.output
    assert "| carol | gain | `delete` | `/projects/*` | none | all |" in result.output
    result = run("diff", "store", str(new))
    assert result.output.startswith("Rule changes (store@1 -> ")


def test_diff_of_a_broken_dir_is_a_clear_error(env, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "acme.csv").write_text("g, alice\n")
    result = run("diff", str(SAMPLE), str(broken))
    assert result.exit_code == 2
    assert "acme.csv:1:" in result.output and "found 1" in result.output


# -- import --------------------------------------------------------------------------------


def stored(store: PolicyStore) -> tuple[int, set]:
    revision, rules = store.load_all()
    return revision, set(rules)


def test_import_applies_once_then_is_a_no_op(env, store):
    result = run("import", str(SAMPLE))
    assert result.exit_code == 0, result.output
    assert "store revision 0 -> 1" in result.output
    assert "seed rule(s) added as API-managed" in result.output  # the summary, by default
    assert "Access impact:" not in result.output  # the full impact needs --verbose
    assert stored(store) == (1, sample_rules())
    entries = store.changes()
    assert {entry.actor for entry in entries} == {policy_cli.cli_actor()}
    assert policy_cli.cli_actor().startswith("cli:")
    result = run("import", str(SAMPLE))
    assert result.exit_code == 0
    assert "already equals" in result.output
    assert store.revision() == 1


def test_import_dry_run_changes_nothing(env, store):
    result = run("import", str(SAMPLE), "--dry-run", "--verbose", "--max-rules", "0")
    assert result.exit_code == 0
    assert "+ (API-managed seed) g, alice, admin, acme" in result.output
    assert "Access impact:" in result.output and "Dry run" in result.output
    assert stored(store) == (0, set())


def test_import_refuses_store_only_removals_without_yes(env, store, tmp_path):
    store.replace_all(sample_rules(), actor="test")
    store.apply(ChangeSet(added=(("g", "zoe", "viewer", "acme"),)), actor="api:alice")
    before = stored(store)
    result = run("import", str(SAMPLE), "--verbose")
    assert result.exit_code == 1
    assert "1 file-managed rule(s) are gone from" in result.output
    assert "  - g, zoe, viewer, acme" in result.output
    assert "zoe\n      - read /documents/*  all -> none" in result.output  # impact shown first
    assert stored(store) == before
    result = run("import", str(SAMPLE), "--yes")
    assert result.exit_code == 0, result.output
    assert stored(store) == (before[0] + 1, sample_rules())


def test_import_with_lint_errors_changes_nothing(env, store, tmp_path):
    store.replace_all(sample_rules(), actor="test")
    new = copy_sample(tmp_path)
    edit(new / "acme.csv", "g, alice, admin, acme", "g, alice, admin, acme\ng, admin, alice, acme")
    result = run("import", str(new), "--yes")
    assert result.exit_code == 2
    assert "role-cycle" in result.output and "nothing imported" in result.output
    assert stored(store) == (1, sample_rules())


@pytest.mark.parametrize("kind", ["binary", "latin1", "malformed", "symlink", "huge"])
def test_import_of_bad_input_changes_nothing(env, store, tmp_path, monkeypatch, kind):
    store.replace_all(sample_rules(), actor="test")
    new = copy_sample(tmp_path)
    bad = new / "zzz.csv"
    if kind == "binary":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    elif kind == "latin1":
        bad.write_bytes("g, jos\xe9, viewer, acme\n".encode("latin-1"))
    elif kind == "malformed":
        bad.write_text('g, "alice, viewer, acme\n')
    elif kind == "symlink":
        outside = tmp_path / "outside.csv"
        outside.write_text("g, mallory, admin, acme\n")
        bad.symlink_to(outside)
    else:
        monkeypatch.setattr(csvfiles, "MAX_POLICY_FILE_BYTES", 2000)
        bad.write_text("g, alice, viewer, acme\n" * 200)
    result = run("import", str(new), "--yes")
    assert result.exit_code != 0
    assert "zzz.csv" in result.output and "nothing imported" in result.output
    assert stored(store) == (1, sample_rules())


def test_large_import_shows_progress(env, store, tmp_path, monkeypatch):
    monkeypatch.setattr(policy_cli, "LARGE_IMPORT", 10)
    result = run("import", str(SAMPLE))
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("[  0.0s] Reading and linting")  # before any slow step
    assert "Writing rules" in result.output
    assert stored(store) == (1, sample_rules())


# -- export --------------------------------------------------------------------------------


def test_export_then_import_is_a_no_op_and_export_is_byte_stable(env, store, tmp_path):
    store.replace_all(sample_rules(), actor="test")
    store.apply(ChangeSet(added=(("g", "zoe", "viewer", "acme"),)), actor="api:alice")
    out = tmp_path / "export"
    result = run("export", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.iterdir()) == ["acme.csv", "globex.csv", "roles.csv"]
    first = {path.name: path.read_bytes() for path in out.iterdir()}
    assert b"g, zoe, viewer, acme" in first["acme.csv"]

    revision = store.revision()
    log_size = len(store.changes())
    result = run("import", str(out))
    assert result.exit_code == 0 and "already equals" in result.output
    assert store.revision() == revision and len(store.changes()) == log_size

    assert run("export", str(out)).exit_code == 0
    assert {path.name: path.read_bytes() for path in out.iterdir()} == first
    assert run("fmt", str(out), "--check").exit_code == 0  # the export is already canonical
    assert run("lint", str(out)).exit_code == 0


def test_export_refuses_a_dir_with_other_policy_files(env, store, tmp_path):
    store.replace_all(sample_rules(), actor="test")
    out = tmp_path / "export"
    out.mkdir()
    (out / "initech.csv").write_text("g, milton, viewer, initech\n")
    result = run("export", str(out))
    assert result.exit_code == 2
    assert "initech.csv" in result.output and "--clean" in result.output
    assert sorted(path.name for path in out.iterdir()) == ["initech.csv"]
    assert run("export", str(out), "--clean").exit_code == 0
    assert sorted(path.name for path in out.iterdir()) == ["acme.csv", "globex.csv", "roles.csv"]


# -- changes -------------------------------------------------------------------------------


def test_changes_lists_filters_and_verifies(env, store):
    store.replace_all(sample_rules(), actor="cli:ops")
    store.apply(ChangeSet(added=(("g", "zoe", "viewer", "acme"),)), actor="api:alice")
    store.apply(
        ChangeSet(removed=(("g", "erin", "admin", "globex"),)), actor="file:policies/globex.csv"
    )

    result = run("changes", "--since", "1")
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("r2  ") and lines[0].endswith("api:alice  + g, zoe, viewer, acme")
    assert lines[1].endswith("file:policies/globex.csv  - g, erin, admin, globex")

    data = json.loads(run("changes", "--org", "globex", "--format", "json").output)
    assert {entry["org"] for entry in data} == {"globex"}
    assert data[-1]["operation"] == "remove" and data[-1]["revision"] == 3

    assert run("changes", "--since", "2999-01-01").output == ""
    assert run("changes", "--since", "yesterday").exit_code == 2

    result = run("changes", "--verify")
    assert result.exit_code == 0 and result.output.strip() == "change log intact"

    with store.engine.begin() as conn:
        target = conn.execute(
            sa.select(change_log.c.id).where(change_log.c.actor == "api:alice")
        ).scalar_one()
        conn.execute(
            sa.update(change_log).where(change_log.c.id == target).values(actor="api:mallory")
        )
    result = run("changes", "--verify")
    assert result.exit_code == 1
    assert f"broken at entry {target} (revision 2" in result.output
    data = json.loads(run("changes", "--verify", "--format", "json").output)
    assert data["intact"] is False and data["broken"]["id"] == target


# -- kill -9 midway ------------------------------------------------------------------------


def make_large_dir(directory: Path, orgs: int = 40, members: int = 500) -> set:
    directory.mkdir()
    shutil.copy(SAMPLE / "roles.csv", directory / "roles.csv")
    roles = ("admin", "editor", "member", "viewer")
    for org in range(orgs):
        lines = [f"g, user{m}, {roles[m % 4]}, org{org:03d}\n" for m in range(members)]
        (directory / f"org{org:03d}.csv").write_text("".join(lines))
    return {item.rule for item in read_policy_dir(directory)}


def test_import_killed_midway_leaves_old_or_new_revision(env, store, tmp_path):
    store.replace_all(sample_rules(), actor="test")
    old = stored(store)
    large = tmp_path / "large"
    new_rules = make_large_dir(large)
    process = subprocess.Popen(
        [sys.executable, "-m", "rolegate.cli", "import", str(large), "--yes", "--max-rules", "1"],
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in process.stderr:  # wait until the write has started
            if line.startswith("Applying"):
                break
        time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    assert process.returncode in (-signal.SIGKILL, 0)

    after = PolicyStore.from_url(env["ROLEGATE_DATABASE_URL"])
    try:
        revision, rules = after.load_all()
        assert (revision, set(rules)) in (old, (old[0] + 1, new_rules))
        assert len(rules) == len(set(rules))
        assert after.verify_chain() is None
        assert {entry.revision for entry in after.changes(limit=10**6)} <= {1, revision}
        with after.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    finally:
        after.dispose()
    # whichever state it is, a rerun completes the import
    result = subprocess.run(
        [sys.executable, "-m", "rolegate.cli", "import", str(large), "--yes", "--max-rules", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert stored(store) == (old[0] + 1, new_rules)
