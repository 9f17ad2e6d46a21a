"""The decision log: one JSON line per decision, written off the request path.

`DecisionLog.record` is a `Rolegate.decision_listeners` entry. It only builds a small dict and
puts it on a bounded queue; a background thread formats the records and hands them, in batches,
to the sinks (stdout, a file, the database). A full queue or a failing sink (full disk, database
down) never blocks, never raises into the decision and never changes it: the records are dropped
and counted in `DecisionLog.dropped` (per sink in `dropped_by_sink`).

Each record (format `v` 2): time, decision_id, subject, org, resource, action, owner,
token_roles (the trusted token roles the decision used), default_role (the one in effect), allowed,
rule (the matched rule), path, revision, issuer, key_id (of the token), client (address),
request_id. Never the token. `v`, owner, token_roles and default_role are what `rolegate replay`
needs to decide the same input again; records without them (format 1) are refused by replay.
A record with `shadow: true` is a shadow policy's disagreement (`rolegate.shadow`), not a decision.
The client address comes from `REQUEST_CONTEXT`, which the HTTP layer sets for the duration of a
request, and the request id from `rolegate.logs.request_id_var` (this module does not know HTTP).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from ..config import Settings
from ..engine import CheckRequest, Decision
from ..identity import Principal
from ..logs import request_id_var
from ..results import DecisionResult
from ..rules import format_rule
from ..store.db import decision_log as decision_log_table
from ..store.db import transaction

log = logging.getLogger("rolegate.decision_log")
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

# {"client": "203.0.113.7"} for the request being served, if any (set by the HTTP layer); the
# request id is `rolegate.logs.request_id_var`, the one the logs and the response carry.
REQUEST_CONTEXT: ContextVar[Mapping[str, str] | None] = ContextVar(
    "rolegate_request_context", default=None
)

DEFAULT_CAPACITY = 10_000
BATCH_SIZE = 1000
WRITE_INTERVAL_SECONDS = 0.05
PRUNE_INTERVAL_SECONDS = 3600.0
MAX_SEARCH_LIMIT = 1000
FORMAT_VERSION = 2
FIELDS = (
    "v",
    "time",
    "decision_id",
    "subject",
    "org",
    "resource",
    "action",
    "owner",
    "token_roles",
    "default_role",
    "allowed",
    "rule",
    "path",
    "revision",
    "issuer",
    "key_id",
    "client",
    "request_id",
)


def format_time(epoch: float) -> str:
    """UTC ISO 8601 with microseconds: sorts lexicographically, like the change log's `at`."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")


def decision_record(
    principal: Principal,
    request: CheckRequest,
    decision: Decision,
    result: DecisionResult | Mapping[str, Any],
    context: Mapping[str, str] | None = None,
    *,
    now: float | None = None,
    default_role: str | None = None,
) -> dict[str, Any]:
    """The log record of one decision (JSON-ready, `time` as UTC ISO 8601).

    `default_role`: the engine's default role when the decision was made (replay uses it).
    """
    context = context or {}
    return {
        "v": FORMAT_VERSION,
        "time": format_time(time.time() if now is None else now),
        "decision_id": result.get("decision_id"),  # a result, or {"decision_id": ...}
        "subject": request.subject,
        "org": request.org,
        "resource": request.resource,
        "action": request.action,
        "owner": request.owner,
        "token_roles": list(request.extra_roles),
        "default_role": default_role,
        "allowed": decision.allowed,
        "rule": format_rule(decision.rule) if decision.rule else None,
        "path": " -> ".join(decision.path) if decision.path else None,
        "revision": decision.revision,
        "issuer": principal.issuer,
        "key_id": principal.key_id,
        "client": context.get("client"),
        "request_id": context.get("request_id"),
    }


# --------------------------------------------------------------------------- sinks


class Sink(Protocol):
    name: str

    def write(self, records: Sequence[dict[str, Any]], lines: Sequence[str]) -> None:
        """Write a batch; raise on failure (the caller counts the batch as dropped)."""

    def close(self) -> None: ...


class StreamSink:
    """JSON lines on a text stream; `sys.stdout` (looked up at each write) by default."""

    name = "stdout"

    def __init__(self, stream=None):
        self._stream = stream

    def write(self, records, lines) -> None:
        stream = self._stream or sys.stdout
        stream.write("".join(lines))
        stream.flush()

    def close(self) -> None:
        pass


class FileSink:
    """JSON lines appended to a file (O_APPEND: workers can share it; one write per batch)."""

    name = "file"

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        return self._fd

    def write(self, records, lines) -> None:
        data = memoryview("".join(lines).encode("utf-8"))
        try:
            fd = self._open()
            while data:
                written = os.write(fd, data)
                data = data[written:]
        except OSError:
            self.close()  # reopen on the next batch (rotated, remounted, space freed)
            raise

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def search(self, **filters: Any) -> list[dict[str, Any]]:
        """Newest matching records first (reads the whole file; the database sink indexes)."""
        limit = filters.pop("limit")
        found: deque[dict[str, Any]] = deque(maxlen=limit)
        try:
            with self.path.open("r", encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a torn last line after a crash
                    if isinstance(record, dict) and _matches(record, **filters):
                        found.append(record)
        except FileNotFoundError:
            return []
        return list(reversed(found))


def _matches(
    record: Mapping[str, Any],
    *,
    org: str,
    subject: str | None = None,
    resource: str | None = None,
    action: str | None = None,
    allowed: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> bool:
    if record.get("org") != org or record.get("shadow") is True:
        return False
    if subject is not None and record.get("subject") != subject:
        return False
    if resource is not None:
        value = str(record.get("resource", ""))
        if resource.endswith("*"):
            if not value.startswith(resource[:-1]):
                return False
        elif value != resource:
            return False
    if action is not None and record.get("action") != action:
        return False
    if allowed is not None and record.get("allowed") is not allowed:
        return False
    at = str(record.get("time", ""))
    if since is not None and at < format_time(since.timestamp()):
        return False
    return not (until is not None and at > format_time(until.timestamp()))


SHADOW_ID_PREFIX = "shadow:"  # decision_id column of shadow records (ids are hex otherwise)


def _row_decision_id(record: Mapping[str, Any]) -> str:
    decision_id = record.get("decision_id") or ""
    return SHADOW_ID_PREFIX + decision_id if record.get("shadow") is True else decision_id


class DatabaseSink:
    """Rows in the store's `decision_log` table, pruned after `retention_days` (0: never).

    The table comes from the store's migrations (`rolegate.store.schema`), like every other.
    """

    name = "database"

    def __init__(self, sql_engine: sa.Engine, retention_days: int = 30, *, clock=time.time):
        self.sql_engine = sql_engine
        self.retention_days = retention_days
        self._clock = clock
        self._next_prune = 0.0

    def write(self, records, lines) -> None:
        rows = [
            {
                "at": record["time"],
                "decision_id": _row_decision_id(record),
                "org": record["org"],
                "subject": record["subject"],
                "resource": record["resource"],
                "action": record["action"],
                "allowed": bool(record["allowed"]),
                "record": line.rstrip("\n"),
            }
            for record, line in zip(records, lines, strict=True)
        ]
        with self.sql_engine.begin() as conn:
            conn.execute(sa.insert(decision_log_table), rows)
        if self._clock() >= self._next_prune:
            self.prune()

    def prune(self) -> int:
        """Delete rows older than the retention period; the number deleted."""
        self._next_prune = self._clock() + PRUNE_INTERVAL_SECONDS
        if self.retention_days <= 0:
            return 0
        cutoff = format_time(self._clock() - timedelta(days=self.retention_days).total_seconds())
        with self.sql_engine.begin() as conn:
            result = conn.execute(
                sa.delete(decision_log_table).where(decision_log_table.c.at < cutoff)
            )
        return result.rowcount or 0

    def search(
        self,
        *,
        org: str,
        subject: str | None = None,
        resource: str | None = None,
        action: str | None = None,
        allowed: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        table = decision_log_table
        stmt = sa.select(table.c.record).where(table.c.org == org)
        # Shadow records carry the candidate's answer: never mistaken for a decision made.
        stmt = stmt.where(
            sa.not_(table.c.decision_id.startswith(SHADOW_ID_PREFIX, autoescape=True))
        )
        if subject is not None:
            stmt = stmt.where(table.c.subject == subject)
        if resource is not None:
            if resource.endswith("*"):
                prefix = resource[:-1]
                stmt = stmt.where(sa.func.substr(table.c.resource, 1, len(prefix)) == prefix)
            else:
                stmt = stmt.where(table.c.resource == resource)
        if action is not None:
            stmt = stmt.where(table.c.action == action)
        if allowed is not None:
            stmt = stmt.where(table.c.allowed == allowed)
        if since is not None:
            stmt = stmt.where(table.c.at >= format_time(since.timestamp()))
        if until is not None:
            stmt = stmt.where(table.c.at <= format_time(until.timestamp()))
        stmt = stmt.order_by(table.c.at.desc(), table.c.id.desc()).limit(limit)
        with transaction(self.sql_engine, write=False, what="decision log") as conn:
            return [json.loads(row.record) for row in conn.execute(stmt)]

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- the log


class DecisionLog:
    """A bounded buffer + one writer thread feeding the sinks; `record` never blocks or raises.

    The hot path is a `deque.append` (atomic under the GIL, no lock, no wake-up): the writer
    drains the buffer every `interval` seconds in batches, so decisions do not pay for thread
    switches. `flush` wakes the writer at once.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        capacity: int = DEFAULT_CAPACITY,
        batch_size: int = BATCH_SIZE,
        interval: float = WRITE_INTERVAL_SECONDS,
        default_role: str | None = None,
    ):
        self.sinks = tuple(sinks)
        self.default_role = default_role
        self.capacity = capacity
        self.batch_size = batch_size
        self.interval = interval
        self._buffer: deque[tuple] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._flushes: list[threading.Event] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self.queue_dropped = 0
        self.dropped_by_sink: dict[str, int] = {sink.name: 0 for sink in self.sinks}
        self.written = 0

    @classmethod
    def from_settings(
        cls, settings: Settings, sql_engine: sa.Engine | None = None
    ) -> DecisionLog | None:
        """The configured log, or None when no sink is configured."""
        sinks: list[Sink] = []
        target = settings.decision_log.strip()
        if target == "-":
            sinks.append(StreamSink())
        elif target:
            sinks.append(FileSink(target))
        if settings.decision_log_db and sql_engine is not None:
            sinks.append(DatabaseSink(sql_engine, settings.decision_log_retention_days))
        return cls(sinks, default_role=settings.default_role) if sinks else None

    # -- the hot path -------------------------------------------------------------------------

    def record(
        self,
        principal: Principal,
        request: CheckRequest,
        decision: Decision,
        result: DecisionResult,
    ) -> None:
        """Decision listener: buffer the decision for writing; drop (and count) when full."""
        try:
            if self._closed or len(self._buffer) >= self.capacity:
                self._count_queue_drop()
                return
            self._buffer.append(
                (
                    time.time(),
                    principal,
                    request,
                    decision,
                    result,
                    REQUEST_CONTEXT.get(),
                    request_id_var.get(),
                )
            )
            if self._thread is None:
                self._start_writer()
        except Exception:  # never let logging touch the decision
            self._count_queue_drop()
            log.exception("decision log: could not buffer a record")

    def record_raw(self, record: dict[str, Any]) -> None:
        """Buffer a record that is already built (JSON-ready); drop (and count) when full."""
        try:
            if self._closed or len(self._buffer) >= self.capacity:
                self._count_queue_drop()
                return
            self._buffer.append((time.time(), None, record, None, None, None, None))
            if self._thread is None:
                self._start_writer()
        except Exception:
            self._count_queue_drop()
            log.exception("decision log: could not buffer a record")

    def _count_queue_drop(self) -> None:
        with self._lock:
            self.queue_dropped += 1

    @property
    def dropped(self) -> int:
        """Records lost: buffer overflow plus, per sink, records a sink failed to write."""
        return self.queue_dropped + sum(self.dropped_by_sink.values())

    # -- the writer ---------------------------------------------------------------------------

    def _start_writer(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                thread = threading.Thread(
                    target=self._run, name="rolegate-decision-log", daemon=True
                )
                thread.start()
                self._thread = thread
                atexit.register(_close_at_exit, weakref.ref(self))

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._lock:
                flushes, self._flushes = self._flushes, []
                stopping = self._stopping
            # Everything buffered before a flush was asked for is written before it returns.
            while self._buffer:
                batch: list[tuple] = []
                while self._buffer and len(batch) < self.batch_size:
                    batch.append(self._buffer.popleft())
                self._write(batch)
            for done in flushes:
                done.set()
            if stopping:
                return

    def _write(self, batch: list[tuple]) -> None:
        records, lines = [], []
        for epoch, principal, request, decision, result, context, request_id in batch:
            try:
                if request_id is not None:
                    context = {**(context or {}), "request_id": request_id}
                if principal is None:  # a ready record (`record_raw`: shadow disagreements)
                    record = request
                else:
                    record = decision_record(
                        principal,
                        request,
                        decision,
                        result,
                        context,
                        now=epoch,
                        default_role=self.default_role,
                    )
                lines.append(_ENCODER.encode(record) + "\n")
                records.append(record)
            except Exception:
                self._count_queue_drop()
                log.exception("decision log: could not format a record")
        if not records:
            return
        for sink in self.sinks:
            try:
                sink.write(records, lines)
            except Exception as exc:
                with self._lock:
                    self.dropped_by_sink[sink.name] += len(records)
                log.warning(
                    "decision log: %s sink failed, %d records dropped: %s",
                    sink.name,
                    len(records),
                    exc,
                )
        with self._lock:
            self.written += len(records)

    # -- control ------------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record buffered so far has been handed to the sinks."""
        with self._lock:
            thread = self._thread
            if thread is None or not thread.is_alive():
                return not self._buffer
            done = threading.Event()
            self._flushes.append(done)
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is buffered, stop the writer, close the sinks. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            thread = self._thread
        if thread is not None:
            self._wake.set()
            thread.join(timeout)
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                sink.close()

    # -- search -------------------------------------------------------------------------------

    @property
    def searchable(self) -> DatabaseSink | FileSink | None:
        """The sink that `search` reads: the database when configured, else the file."""
        for kind in (DatabaseSink, FileSink):
            for sink in self.sinks:
                if isinstance(sink, kind):
                    return sink
        return None

    def search(self, **filters: Any) -> list[dict[str, Any]]:
        sink = self.searchable
        if sink is None:
            raise LookupError("no searchable decision log sink")
        self.flush()
        return sink.search(**filters)


def _close_at_exit(reference: weakref.ref) -> None:
    decision_log = reference()
    if decision_log is not None:
        decision_log.close(timeout=2.0)
