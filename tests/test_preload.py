"""A worker started from a snapshot its server's master loaded (`create_app(engine=...)`): it
catches up with the store through the change log, never serves the inherited revision
unconfirmed, and loads everything again only when the log cannot explain the gap."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from rolegate import core as core_module
from rolegate import metrics
from rolegate.api import create_app
from rolegate.core import CheckInput, Rolegate
from rolegate.engine import CheckRequest
from rolegate.errors import StoreUnavailable
from rolegate.identity import Principal
from rolegate.store import ChangeSet, PolicyStore


def master_engine(settings):
    """What `rolegate serve` holds before forking: the store synced and loaded, core closed."""
    master = Rolegate.from_settings(settings)
    master.start(sync_policies=True)
    master.close()
    return master.engine


def write(settings, changes: ChangeSet) -> int:
    store = PolicyStore.from_url(settings.database_url)
    try:
        return store.apply(changes, actor="test")
    finally:
        store.dispose()


def allowed(core: Rolegate, subject: str, org: str, resource: str, action: str) -> bool:
    principal = Principal(subject=subject, org=org, roles=(), issuer=None, key_id=None)
    return core.check(principal, CheckInput(resource, action)).allowed


def allowed_in(engine, subject: str, org: str) -> bool:
    return engine.check(CheckRequest(subject, org, "/projects/42", "delete")).allowed


@pytest.fixture
def count_full_loads(monkeypatch):
    loads = []
    original = PolicyStore.load_all

    def counted(self, *args, **kwargs):
        loads.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PolicyStore, "load_all", counted)
    return loads


def test_a_revocation_after_the_master_loaded_is_in_force_in_the_worker(settings, count_full_loads):
    engine = master_engine(settings)
    inherited = engine.snapshot
    assert allowed_in(engine, "alice", "acme")
    revision = write(settings, ChangeSet(removed=[("g", "alice", "admin", "acme")]))
    count_full_loads.clear()

    app = create_app(settings, engine=engine, follow_store=False)
    core = app.extensions["rolegate"]
    try:
        assert core.engine is engine
        assert core.engine.revision == revision > inherited.revision
        assert not allowed(core, "alice", "acme", "/projects/42", "delete")
        assert count_full_loads == []  # caught up from the change log
        # the org nobody changed is the inherited index itself, not a copy
        assert core.engine.snapshot.domains["globex"] is inherited.domains["globex"]
        ready = app.test_client().get("/readyz")
        assert ready.status_code == 200 and ready.get_json()["revision"] == revision
    finally:
        core.close()


def test_with_no_change_the_inherited_snapshot_is_served_as_it_is(settings, count_full_loads):
    engine = master_engine(settings)
    inherited = engine.snapshot
    count_full_loads.clear()
    app = create_app(settings, engine=engine, follow_store=False)
    core = app.extensions["rolegate"]
    try:
        assert core.engine.snapshot is inherited
        assert count_full_loads == []
        kinds = {
            sample.labels.get("kind")
            for family in metrics.get().registry.collect()
            if family.name == "rolegate_policy_reload_duration_seconds"
            for sample in family.samples
        }
        assert "inherited" not in kinds  # nothing was read: no reload is timed
        body = app.test_client().get("/readyz").get_json()
        assert body["ready"] is True and body["revision"] == inherited.revision
        assert allowed(core, "alice", "acme", "/projects/42", "delete")
    finally:
        core.close()


def test_a_gap_the_change_log_cannot_explain_means_a_full_load(
    settings, count_full_loads, monkeypatch
):
    engine = master_engine(settings)
    write(settings, ChangeSet(added=[("g", "zed", "viewer", "acme")]))
    write(settings, ChangeSet(removed=[("g", "alice", "admin", "acme")]))
    monkeypatch.setattr(core_module, "MAX_INCREMENTAL_ENTRIES", 1)
    count_full_loads.clear()
    app = create_app(settings, engine=engine, follow_store=False)
    core = app.extensions["rolegate"]
    try:
        assert count_full_loads == [1]
        assert not allowed(core, "alice", "acme", "/projects/42", "delete")
        assert core.engine.snapshot.is_member("zed", "acme")
    finally:
        core.close()


def test_an_unreadable_store_at_worker_start_refuses_to_serve_the_inherited_snapshot(
    settings, tmp_path
):
    engine = master_engine(settings)
    (tmp_path / "rolegate.db").unlink()
    (tmp_path / "rolegate.db").mkdir()  # the file is gone and cannot be recreated
    with pytest.raises(StoreUnavailable):
        create_app(settings, engine=engine, follow_store=False)


def test_a_store_failing_during_the_catch_up_refuses_to_serve_the_inherited_snapshot(
    settings, monkeypatch
):
    engine = master_engine(settings)

    def black_holed(self, *args, **kwargs):
        raise sa.exc.OperationalError("SELECT change_log", {}, TimeoutError("timed out"))

    monkeypatch.setattr(PolicyStore, "load_changes", black_holed)
    with pytest.raises(StoreUnavailable, match="cannot catch up from policy revision 1"):
        create_app(settings, engine=engine, follow_store=False)
