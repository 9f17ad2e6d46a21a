"""The decision log: one JSON line per decision, buffered, never changing or blocking a decision."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from rolegate.audit.decision_log import (
    FIELDS,
    DatabaseSink,
    DecisionLog,
    FileSink,
    StreamSink,
    decision_log_table,
)
from rolegate.config import Settings
from rolegate.engine import CheckRequest, Decision
from rolegate.identity import Principal
from rolegate.results import DecisionResult
from rolegate.store import init_schema, make_engine

PRINCIPAL = Principal("bob", "acme", (), "https://issuer.example", "key-1")


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def record(log: DecisionLog, subject="bob", allowed=True, resource="/projects/1", action="read"):
    request = CheckRequest(subject, "acme", resource, action)
    rule = ("p", "viewer", "*", "/projects/*", "read", "allow") if allowed else None
    decision = Decision(allowed, 3, rule, (subject, "viewer") if allowed else ())
    result = DecisionResult(request, decision, f"d-{subject}-{resource}")
    log.record(PRINCIPAL, request, decision, result)


# -- over HTTP: single and batch, context, no token -----------------------------------------


def test_every_decision_is_one_json_line_without_the_token(make_live_server, settings, tmp_path):
    path = tmp_path / "decisions.jsonl"
    live = make_live_server(settings.replace(decision_log=str(path)))
    token = live.token("bob", "acme")
    headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "req-42"}
    single = live.client.post(
        "/v1/check", {"resource": "/projects/1", "action": "delete"}, headers=headers
    )
    assert single.status == 200 and single.headers["x-request-id"] == "req-42"
    batch = live.client.post(
        "/v1/check/batch",
        {
            "checks": [
                {"resource": "/projects/1", "action": "read"},
                {"resource": "/x", "action": "y"},
            ]
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert batch.status == 200
    assert live.core.decision_log.flush()

    lines = read_lines(path)
    assert len(lines) == 3
    assert all(set(line) == set(FIELDS) for line in lines)
    first, second, third = lines
    assert first["decision_id"] == single.body["decision_id"]
    assert (first["subject"], first["org"], first["action"], first["allowed"]) == (
        "bob",
        "acme",
        "delete",
        False,
    )
    assert first["request_id"] == "req-42" and first["client"] == "127.0.0.1"
    assert second["allowed"] is True
    assert second["rule"] == "p, viewer, *, /projects/*, read, allow"
    assert second["path"] == "bob -> editor -> member -> viewer"
    assert second["revision"] == batch.body["revision"]
    assert second["request_id"] == third["request_id"] == batch.headers["x-request-id"]
    assert second["request_id"] != "req-42"
    text = path.read_text()
    assert token not in text and token.split(".")[2] not in text


def test_a_full_disk_changes_no_answer_and_counts_drops(make_live_server, settings):
    live = make_live_server(settings.replace(decision_log="/dev/full"))
    answers = []
    for _ in range(3):
        answers.append(live.check("carol", "acme", "/projects/1", "delete").body["allowed"])
        answers.append(live.check("carol", "acme", "/projects/1", "read").body["allowed"])
    assert answers == [False, True] * 3
    decision_log = live.core.decision_log
    assert decision_log.flush()
    assert decision_log.dropped == 6
    assert decision_log.dropped_by_sink == {"file": 6}
    assert live.client.get("/healthz").status == 200


# -- the buffer ------------------------------------------------------------------------------


class BlockedSink:
    name = "blocked"

    def __init__(self):
        self.release = threading.Event()
        self.records: list[dict] = []

    def write(self, records, lines):
        self.release.wait(30)
        self.records.extend(records)

    def close(self):
        self.release.set()


def test_a_full_queue_drops_and_counts_instead_of_blocking():
    sink = BlockedSink()
    decision_log = DecisionLog([sink], capacity=5, batch_size=1)
    for i in range(50):  # the writer is stuck on the first record: the rest overflow
        record(decision_log, subject=f"u{i}")
    assert decision_log.queue_dropped >= 50 - 5 - 1
    sink.release.set()
    assert decision_log.flush()
    assert len(sink.records) + decision_log.dropped == 50
    decision_log.close()


class FailingSink:
    name = "broken"

    def write(self, records, lines):
        raise RuntimeError("database down")

    def close(self):
        pass


def test_one_failing_sink_does_not_stop_the_others(tmp_path):
    path = tmp_path / "log.jsonl"
    decision_log = DecisionLog([FailingSink(), FileSink(path)])
    for i in range(4):
        record(decision_log, subject=f"u{i}")
    assert decision_log.flush()
    assert [line["subject"] for line in read_lines(path)] == ["u0", "u1", "u2", "u3"]
    assert decision_log.dropped_by_sink == {"broken": 4, "file": 0}
    decision_log.close()


def test_stdout_sink(capsys):
    decision_log = DecisionLog([StreamSink()])
    record(decision_log)
    decision_log.close()
    line = json.loads(capsys.readouterr().out)
    assert line["subject"] == "bob" and line["issuer"] == "https://issuer.example"
    assert line["key_id"] == "key-1"


def test_file_sink_recovers_after_a_failure(tmp_path):
    path = tmp_path / "missing-dir"
    sink = FileSink(path / "log.jsonl")
    path.write_text("a file where the directory should be")
    with pytest.raises(OSError):
        sink.write([{}], ["{}\n"])
    path.unlink()
    sink.write([{}], ["{}\n"])
    assert (path / "log.jsonl").read_text() == "{}\n"


def test_from_settings(tmp_path):
    assert DecisionLog.from_settings(Settings()) is None
    stdout = DecisionLog.from_settings(Settings(decision_log="-"))
    assert [sink.name for sink in stdout.sinks] == ["stdout"]
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    both = DecisionLog.from_settings(
        Settings(decision_log=str(tmp_path / "f.jsonl"), decision_log_db=True), engine
    )
    assert [sink.name for sink in both.sinks] == ["file", "database"]
    assert both.searchable.name == "database"
    engine.dispose()


# -- searching -------------------------------------------------------------------------------


@pytest.fixture
def db_engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    init_schema(engine)  # the migrations create every table
    yield engine
    engine.dispose()


@pytest.mark.parametrize("kind", ["database", "file"])
def test_search_filters_newest_first(kind, db_engine, tmp_path):
    sink = DatabaseSink(db_engine) if kind == "database" else FileSink(tmp_path / "log.jsonl")
    decision_log = DecisionLog([sink])
    record(decision_log, "bob", True, "/projects/1")
    record(decision_log, "carol", False, "/projects/2", "delete")
    record(decision_log, "bob", False, "/documents/1", "delete")
    other = CheckRequest("bob", "globex", "/projects/1", "read")
    decision_log.record(
        PRINCIPAL, other, Decision(True, 3), DecisionResult(other, Decision(True, 3), "g")
    )
    decision_log.flush()

    def search(**filters):
        found = decision_log.search(org="acme", limit=filters.pop("limit", 100), **filters)
        return [(item["subject"], item["resource"]) for item in found]

    assert search() == [("bob", "/documents/1"), ("carol", "/projects/2"), ("bob", "/projects/1")]
    assert search(subject="bob") == [("bob", "/documents/1"), ("bob", "/projects/1")]
    assert search(allowed=False, action="delete") == [
        ("bob", "/documents/1"),
        ("carol", "/projects/2"),
    ]
    assert search(resource="/projects/*") == [("carol", "/projects/2"), ("bob", "/projects/1")]
    assert search(resource="/projects/1") == [("bob", "/projects/1")]
    assert search(limit=1) == [("bob", "/documents/1")]
    future = datetime.now(UTC) + timedelta(hours=1)
    assert search(since=future) == []
    assert len(search(until=future)) == 3
    decision_log.close()


def test_database_retention_prunes_old_rows(db_engine):
    now = [datetime(2025, 1, 31, tzinfo=UTC).timestamp()]
    sink = DatabaseSink(db_engine, retention_days=30, clock=lambda: now[0])
    old = {
        "time": "2024-12-01T00:00:00.000000+00:00",
        "decision_id": "a",
        "org": "acme",
        "subject": "bob",
        "resource": "/x",
        "action": "read",
        "allowed": True,
    }
    recent = {**old, "time": "2025-01-30T00:00:00.000000+00:00", "decision_id": "b"}
    sink.write([old, recent], [json.dumps(old) + "\n", json.dumps(recent) + "\n"])
    with db_engine.connect() as conn:
        ids = conn.execute(sa.select(decision_log_table.c.decision_id)).scalars().all()
    assert ids == ["b"]
    assert DatabaseSink(db_engine, retention_days=0).prune() == 0


def test_dev_full_is_a_full_disk():
    # The full-disk test above relies on /dev/full failing every write with ENOSPC.
    descriptor = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError):
            os.write(descriptor, b"x")
    finally:
        os.close(descriptor)
