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

import contextlib
import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from ..buffered import BufferedWorker
from ..config import Settings
from ..engine import CheckRequest, Decision
from ..identity import Principal
from ..logs import request_id_var
from ..results import DecisionResult
from ..rules import format_rule
from ..store.db import decision_log as decision_log_table  # noqa: F401  (re-exported)
from ..store.decisions import DecisionRows

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

    def __init__(self, rows: DecisionRows, retention_days: int = 30, *, clock=time.time):
        self.rows = rows
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
        self.rows.insert(rows)
        if self._clock() >= self._next_prune:
            self.prune()

    def prune(self) -> int:
        """Delete rows older than the retention period; the number deleted."""
        self._next_prune = self._clock() + PRUNE_INTERVAL_SECONDS
        if self.retention_days <= 0:
            return 0
        cutoff = format_time(self._clock() - timedelta(days=self.retention_days).total_seconds())
        return self.rows.delete_before(cutoff)

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
        prefix = resource[:-1] if resource is not None and resource.endswith("*") else None
        texts = self.rows.search(
            org=org,
            # Shadow records carry the candidate's answer: never mistaken for a decision made.
            exclude_id_prefix=SHADOW_ID_PREFIX,
            subject=subject,
            resource=resource if prefix is None else None,
            resource_prefix=prefix,
            action=action,
            allowed=allowed,
            since=None if since is None else format_time(since.timestamp()),
            until=None if until is None else format_time(until.timestamp()),
            limit=limit,
        )
        return [json.loads(text) for text in texts]

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- the log


class DecisionLog(BufferedWorker):
    """A bounded buffer + one writer thread feeding the sinks; `record` never blocks or raises.

    The hot path is a `deque.append` (atomic under the GIL, no lock, no wake-up): the writer
    drains the buffer every `interval` seconds in batches, so decisions do not pay for thread
    switches. `flush` wakes the writer at once.
    """

    thread_name = "rolegate-decision-log"

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        capacity: int = DEFAULT_CAPACITY,
        batch_size: int = BATCH_SIZE,
        interval: float = WRITE_INTERVAL_SECONDS,
        default_role: str | None = None,
    ):
        super().__init__(capacity=capacity, interval=interval)
        self.sinks = tuple(sinks)
        self.default_role = default_role
        self.batch_size = batch_size
        self.queue_dropped = 0
        self.dropped_by_sink: dict[str, int] = {sink.name: 0 for sink in self.sinks}
        self.written = 0

    @classmethod
    def from_settings(
        cls, settings: Settings, rows: DecisionRows | None = None
    ) -> DecisionLog | None:
        """The configured log, or None when no sink is configured."""
        sinks: list[Sink] = []
        target = settings.decision_log.strip()
        if target == "-":
            sinks.append(StreamSink())
        elif target:
            sinks.append(FileSink(target))
        if settings.decision_log_db and rows is not None:
            sinks.append(DatabaseSink(rows, settings.decision_log_retention_days))
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
            item = (
                time.time(),
                principal,
                request,
                decision,
                result,
                REQUEST_CONTEXT.get(),
                request_id_var.get(),
            )
            if not self.offer(item):
                self._count_queue_drop()
        except Exception:  # never let logging touch the decision
            self._count_queue_drop()
            log.exception("decision log: could not buffer a record")

    def record_raw(self, record: dict[str, Any]) -> None:
        """Buffer a record that is already built (JSON-ready); drop (and count) when full."""
        try:
            if not self.offer((time.time(), None, record, None, None, None, None)):
                self._count_queue_drop()
        except Exception:
            self._count_queue_drop()
            log.exception("decision log: could not buffer a record")

    def _count_queue_drop(self) -> None:
        with self.lock:
            self.queue_dropped += 1

    @property
    def dropped(self) -> int:
        """Records lost: buffer overflow plus, per sink, records a sink failed to write."""
        return self.queue_dropped + sum(self.dropped_by_sink.values())

    # -- the writer ---------------------------------------------------------------------------

    def drain(self) -> None:
        while self.buffer:
            batch: list[tuple] = []
            while self.buffer and len(batch) < self.batch_size:
                batch.append(self.buffer.popleft())
            self._write(batch)

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
                with self.lock:
                    self.dropped_by_sink[sink.name] += len(records)
                log.warning(
                    "decision log: %s sink failed, %d records dropped: %s",
                    sink.name,
                    len(records),
                    exc,
                )
        with self.lock:
            self.written += len(records)

    # -- control ------------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is buffered, stop the writer, close the sinks. Idempotent."""
        if not super().close(timeout):
            return False
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                sink.close()
        return True

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
