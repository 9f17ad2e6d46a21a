"""`rolegate serve` for real: worker processes, two instances x two workers on one PostgreSQL
database, SIGTERM draining in-flight requests, a killed worker replaced, metrics across workers."""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from conftest import SECRET
from prometheus_client.parser import text_string_to_metric_families
from scaleout import ServeProcess, dedicated_database, wait_for

from rolegate.config import Settings
from rolegate.identity import mint_token
from rolegate.store import ChangeSet, PolicyStore
from rolegate.store.db import policy_state
from rolegate.store.schema import head_revision


@pytest.fixture(scope="module")
def pg_url():
    with dedicated_database("serve") as url:
        yield url


@pytest.fixture(scope="module")
def instances(pg_url, tmp_path_factory):
    """Two instances of two workers each; the first imports the sample policies."""
    tmp = tmp_path_factory.mktemp("serve")
    started = []
    try:
        started.append(ServeProcess(tmp, pg_url).start("--sync-policies"))
        started.append(ServeProcess(tmp, pg_url).start())
        yield started
    finally:
        for instance in started:
            instance.kill()


def put_roles(instance: ServeProcess, subject: str, roles: list[str]):
    return instance.client.request(
        "PUT",
        f"/v1/orgs/acme/members/{subject}",
        {"roles": roles},
        headers={"Authorization": f"Bearer {alice_token()}"},
    )


def all_workers_at(instances, revision: int) -> bool:
    for instance in instances:
        revisions = instance.worker_revisions(2)
        if any(seen < revision for seen in revisions.values()):
            return False
    return True


def test_a_write_through_one_instance_reaches_all_four_workers(instances):
    first, second = instances
    response = put_roles(first, "zoe", ["editor"])
    assert response.status == 200, response.text
    revision = response.body["revision"]
    wait_for(lambda: all_workers_at(instances, revision), timeout=10)
    workers = {**first.worker_revisions(2), **second.worker_revisions(2)}
    assert len(workers) == 4


def test_the_policy_is_loaded_once_in_the_master_and_each_worker_starts_from_it(instances):
    first, _ = instances
    workers = first.worker_revisions(2)
    log = first.log()
    assert log.count(" loaded: ") == 1, log  # `policy revision N loaded: ...` (a full load)
    assert log.count("already in memory") == 2, log
    master = first.process.pid
    assert master not in workers
    for worker in workers:
        with open(f"/proc/{worker}/status") as status:
            assert f"PPid:\t{master}\n" in status.read()  # forked from the process that loaded


def test_concurrent_writes_through_both_instances_get_one_revision_sequence(instances, pg_url):
    store = PolicyStore.from_url(pg_url)
    start = store.revision()
    results: list[tuple[str, int, int]] = []

    def write(instance: ServeProcess, name: str):
        for i in range(5):
            response = put_roles(instance, f"{name}{i}", ["viewer"])
            results.append((f"{name}{i}", response.status, (response.body or {}).get("revision")))

    threads = [
        threading.Thread(target=write, args=(inst, f"w{n}-")) for n, inst in enumerate(instances)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(status == 200 for _, status, _ in results), results
    revisions = sorted(revision for _, _, revision in results)
    end = store.revision()
    assert revisions == list(range(start + 1, end + 1))  # one revision each, none shared
    entries = store.changes(since_revision=start)
    assert sorted({entry.revision for entry in entries}) == revisions
    assert store.verify_chain() is None
    wait_for(lambda: all_workers_at(instances, end), timeout=10)
    store.dispose()


def test_metrics_are_aggregated_across_the_workers(instances):
    instance = instances[0]
    workers = set()
    token_headers = {"Authorization": "Bearer nope"}
    for _ in range(40):
        response = instance.client.post(
            "/v1/check", {"resource": "/x", "action": "read"}, headers=token_headers
        )
        assert response.status == 401
        workers.add(response.headers["x-rolegate-worker"])
    assert len(workers) == 2, "the requests should have reached both workers"
    text = instance.client.get("/metrics").text
    failures = sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "rolegate_token_failures_total"
    )
    assert failures >= 40  # both workers' counts, whichever worker answered the scrape


def test_an_empty_sqlite_database_is_created_and_a_newer_schema_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    instance = ServeProcess(tmp_path, url, workers=1).start("--sync-policies")
    try:
        assert instance.readyz()["revision"] >= 1
    finally:
        assert instance.terminate() == 0
    store = PolicyStore.from_url(url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'zz99'")
    store.dispose()
    refused = ServeProcess(tmp_path, url, workers=1).start(wait=False)
    assert refused.process.wait(30) != 0
    assert "newer than this Rolegate" in refused.log()
    assert head_revision() in refused.log()


@contextmanager
def store_locked(pg_url: str):
    """Hold the store's revision row locked: a write waits for it (a request kept in flight)."""
    engine = sa.create_engine(pg_url, poolclass=sa.NullPool)
    with engine.connect() as conn, conn.begin():
        conn.execute(sa.select(policy_state).with_for_update())
        yield
    engine.dispose()


def test_sigterm_finishes_in_flight_requests(pg_url, tmp_path):
    instance = ServeProcess(tmp_path, pg_url, workers=1).start("--sync-policies")
    try:
        results = []

        def slow_write():  # waits on the locked revision row until the test lets it go
            results.append(put_roles(instance, "drain", ["viewer"]))

        with store_locked(pg_url):
            thread = threading.Thread(target=slow_write)
            thread.start()
            time.sleep(0.5)
            instance.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
        thread.join(15)
        assert results and results[0].status == 200, results and results[0].text
        assert instance.process.wait(30) == 0
    finally:
        instance.kill()


def test_a_worker_killed_mid_request_is_replaced_and_loads_the_current_revision(pg_url, tmp_path):
    instance = ServeProcess(tmp_path, pg_url, workers=1).start("--sync-policies")
    try:
        victim = instance.readyz()["worker"]
        outcome = []

        def in_flight():
            try:
                outcome.append(put_roles(instance, f"killed{victim}", ["viewer"]).status)
            except OSError as exc:  # the connection dies with the worker
                outcome.append(type(exc).__name__)

        with store_locked(pg_url):
            thread = threading.Thread(target=in_flight)
            thread.start()
            time.sleep(0.5)
            os.kill(victim, signal.SIGKILL)
            thread.join(15)
        assert outcome and outcome[0] != 200

        writer = PolicyStore.from_url(pg_url)  # a change the replacement must end up serving
        revision = writer.apply(
            ChangeSet(added=[("g", f"late{victim}", "viewer", "acme")]), actor="test"
        )
        writer.dispose()

        def replaced_and_current():
            # The replacement may boot before or after the write: wait for the real condition,
            # a new worker that serves the write's revision (loaded, notified or polled).
            try:
                body = instance.readyz()
            except OSError:
                return False
            return body["worker"] != victim and body["revision"] >= revision and body

        body = wait_for(replaced_and_current, timeout=30)
        assert body["ready"] is True
    finally:
        assert instance.terminate() == 0


def test_a_request_over_the_timeout_restarts_its_worker(pg_url, tmp_path):
    instance = ServeProcess(tmp_path, pg_url, workers=1, ROLEGATE_WORKER_TIMEOUT="1")
    instance.start("--sync-policies")
    try:
        stuck = instance.readyz()["worker"]
        outcome = []

        def held_write():
            try:
                outcome.append(put_roles(instance, "stuck", ["viewer"]).status)
            except OSError as exc:
                outcome.append(type(exc).__name__)

        with store_locked(pg_url):  # the write waits longer than the 1 s timeout
            thread = threading.Thread(target=held_write)
            thread.start()
            thread.join(15)
        assert outcome and outcome[0] != 200
        assert "restarting this worker" in instance.log()

        def replaced():
            try:
                body = instance.readyz()
            except OSError:
                return False
            return body["worker"] != stuck and body

        assert wait_for(replaced, timeout=30)["ready"] is True
    finally:
        assert instance.terminate() == 0


def alice_token() -> str:
    return mint_token(Settings(jwt_secret=SECRET), subject="alice", org="acme", ttl_seconds=600)
