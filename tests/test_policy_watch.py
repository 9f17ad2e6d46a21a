"""`serve --watch-policies`: edits reach the store; broken files are not applied (see /readyz)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rolegate.config import REPO_ROOT
from rolegate.policy.watch import (
    RELOAD_ERROR_FILE,
    PolicyWatcher,
    read_reload_error,
    start_watcher,
    write_reload_error,
)
from rolegate.store import PolicyStore, read_policy_dir
from rolegate.store.policies import ChangeSet

SAMPLE = REPO_ROOT / "policies"


@pytest.fixture
def policy_dir(tmp_path) -> Path:
    target = tmp_path / "policies"
    target.mkdir()
    for path in SAMPLE.glob("*.csv"):
        # Without the `managed-by api` markers: every rule is file-managed, as the watcher sees.
        text = path.read_text().replace("# rolegate: managed-by api\n", "")
        (target / path.name).write_text(text)
    return target


@pytest.fixture
def watched(settings, policy_dir):
    """Store synced with the copied policies, and a watcher over them (not started)."""
    settings = settings.replace(policy_dir=str(policy_dir))
    store = PolicyStore.from_url(settings.database_url)
    store.replace_all([item.rule for item in read_policy_dir(policy_dir)], actor="test")
    watcher = PolicyWatcher(
        policy_dir, store, data_dir=settings.data_path, model_path=settings.model_path
    )
    yield settings, store, watcher
    watcher.stop()
    store.dispose()


def rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    # Make sure the change is visible even on file systems with coarse timestamps.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_a_file_change_is_applied_with_the_file_as_actor(watched, policy_dir):
    _, store, watcher = watched
    assert watcher.poll_once() is None  # nothing changed yet
    revision = store.revision()
    rewrite(policy_dir / "acme.csv", "g, carol, viewer, acme", "g, carol, editor, acme")
    assert watcher.poll_once() == revision + 1
    rules = set(store.load_all()[1])
    assert ("g", "carol", "editor", "acme") in rules and (
        "g",
        "carol",
        "viewer",
        "acme",
    ) not in rules
    entries = store.changes(since_revision=revision)
    assert {entry.actor for entry in entries} == {f"file:{policy_dir / 'acme.csv'}"}
    assert watcher.poll_once() is None


def test_rules_added_through_the_api_survive_a_reload(watched, policy_dir):
    _, store, watcher = watched
    store.apply(ChangeSet(added=(("g", "zoe", "viewer", "acme"),)), actor="api:alice")
    rewrite(policy_dir / "globex.csv", "g, bob, viewer, globex", "g, bob, editor, globex")
    assert watcher.poll_once() is not None
    rules = set(store.load_all()[1])
    assert ("g", "zoe", "viewer", "acme") in rules
    assert ("g", "bob", "editor", "globex") in rules and (
        "g",
        "bob",
        "viewer",
        "globex",
    ) not in rules


def test_a_broken_file_is_not_applied_and_the_error_is_shared(watched, policy_dir):
    settings, store, watcher = watched
    before = store.load_all()
    rewrite(policy_dir / "acme.csv", "g, carol, viewer, acme", "g, carol, viewer")
    assert watcher.poll_once() is None
    assert store.load_all() == before
    error = read_reload_error(settings.data_path)
    assert error is not None and error == watcher.last_error
    assert f"{policy_dir / 'acme.csv'}:7:1: field-count" in error
    # a binary file too
    (policy_dir / "junk.csv").write_bytes(b"\x00\x01")
    watcher.poll_once()
    assert "binary" in read_reload_error(settings.data_path)
    assert store.load_all() == before
    # fixed: applied, error cleared
    (policy_dir / "junk.csv").unlink()
    rewrite(policy_dir / "acme.csv", "g, carol, viewer\n", "g, carol, admin, acme\n")
    assert watcher.poll_once() == before[0] + 1
    assert read_reload_error(settings.data_path) is None
    assert not (settings.data_path / RELOAD_ERROR_FILE).exists()


def test_readyz_shows_the_watchers_error(watched, policy_dir, make_live_server):
    settings, store, watcher = watched
    live = make_live_server(settings, sync_policies=False)
    assert live.client.get("/readyz").body["last_reload_error"] is None
    rewrite(
        policy_dir / "roles.csv", "g, admin, editor, *", "g, admin, editor, *\ng, editor, admin, *"
    )
    watcher.poll_once()
    ready = live.client.get("/readyz")
    assert ready.status == 200 and ready.body["ready"] is True  # the old revision keeps serving
    assert "role-cycle" in ready.body["last_reload_error"]
    assert ready.body["revision"] == store.revision()


def test_error_of_an_exited_watcher_is_ignored(tmp_path):
    write_reload_error(tmp_path, "boom")
    assert read_reload_error(tmp_path) == "boom"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    record = json.loads((tmp_path / RELOAD_ERROR_FILE).read_text())
    record["pid"] = int(dead.stdout)
    (tmp_path / RELOAD_ERROR_FILE).write_text(json.dumps(record))
    assert read_reload_error(tmp_path) is None
    (tmp_path / RELOAD_ERROR_FILE).write_text("not json")
    assert read_reload_error(tmp_path) is None


def test_watcher_started_broken_only_adds_once_fixed(settings, policy_dir):
    store = PolicyStore.from_url(settings.database_url)
    try:
        store.replace_all([item.rule for item in read_policy_dir(policy_dir)], actor="test")
        store.apply(ChangeSet(added=(("g", "zoe", "viewer", "acme"),)), actor="api:alice")
        rewrite(policy_dir / "acme.csv", "g, carol, viewer, acme", "g, carol")
        watcher = PolicyWatcher(
            policy_dir, store, data_dir=settings.data_path, model_path=settings.model_path
        )
        assert "field-count" in read_reload_error(settings.data_path)
        rewrite(
            policy_dir / "acme.csv", "g, carol\n", "g, carol, viewer, acme\ng, yan, viewer, acme\n"
        )
        assert watcher.poll_once() is not None
        rules = set(store.load_all()[1])
        assert {("g", "yan", "viewer", "acme"), ("g", "zoe", "viewer", "acme")} <= rules
    finally:
        store.dispose()


def test_thread_applies_changes_in_the_background(watched, policy_dir):
    _, store, watcher = watched
    watcher.interval = 0.05
    watcher.start()
    revision = store.revision()
    rewrite(policy_dir / "acme.csv", "g, dave, member, acme", "g, dave, admin, acme")
    deadline = time.monotonic() + 30
    while store.revision() == revision and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ("g", "dave", "admin", "acme") in set(store.load_all()[1])
    watcher.stop()
    assert not watcher._thread.is_alive()


def test_start_watcher_runs_once_outside_the_reloader_child(settings, policy_dir, monkeypatch):
    settings = settings.replace(policy_dir=str(policy_dir))
    monkeypatch.setenv("WERKZEUG_RUN_MAIN", "true")
    assert start_watcher(settings) is None
    monkeypatch.delenv("WERKZEUG_RUN_MAIN")
    watcher = start_watcher(settings, interval=0.05)
    try:
        assert watcher is not None and watcher._thread.is_alive()
        assert watcher.resource_function == "keyMatch2"
    finally:
        watcher.stop()
        watcher.store.dispose()
