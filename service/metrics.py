"""Prometheus metrics, aggregated across the server's workers (prometheus-client multiprocess mode).

With `PROMETHEUS_MULTIPROC_DIR` set (`rolegate serve` sets it up), each worker writes its values
to files in that directory and `GET /metrics` merges every worker's files; without it (tests,
`--dev`), the process keeps them in its own registry. The recording functions below never raise
into the caller and cost a dictionary lookup plus an add.

    metrics.observe_reload("incremental", 0.004)
    metrics.record_response("decisions.check", 200, "", 0.002)   # from rolegate.api.hooks
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

log = logging.getLogger("rolegate.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DECISION_ENDPOINTS = {"decisions.check": "check", "decisions.check_batch": "batch"}
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
RELOAD_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)


class Metrics:
    """Every Rolegate metric, for one process."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

        self.pid = os.getpid()
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        if self.multiprocess:
            # The value class is chosen when prometheus_client is imported; the directory may
            # have been configured after that (by `rolegate serve`, before forking workers).
            values.ValueClass = values.get_value_class()
        registry = None if self.multiprocess else CollectorRegistry()
        self.registry = registry
        self.decisions = Counter(
            "rolegate_decisions", "Decisions made, by result.", ["result"], registry=registry
        )
        self.decisions_by_result = {
            True: self.decisions.labels("allow"),
            False: self.decisions.labels("deny"),
        }
        self.decision_seconds = Histogram(
            "rolegate_decision_duration_seconds",
            "Time to answer a decision request (check or batch), by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "rolegate_batch_size",
            "Checks per batch request.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.token_failures = Counter(
            "rolegate_token_failures",
            "Requests refused with 401, by error code.",
            ["code"],
            registry=registry,
        )
        self.revision = Gauge(
            "rolegate_policy_revision",
            "Policy revision served (multiprocess: the lowest of the live workers).",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.reload_seconds = Histogram(
            "rolegate_policy_reload_duration_seconds",
            "Time to load policy changes from the store, by kind (full, incremental).",
            ["kind"],
            buckets=RELOAD_BUCKETS,
            registry=registry,
        )
        self.reload_errors = Counter(
            "rolegate_policy_reload_errors",
            "Failed policy reloads (store unreachable, ...).",
            registry=registry,
        )
        self.notifications = Counter(
            "rolegate_notifications_received",
            "PostgreSQL policy change notifications received.",
            registry=registry,
        )
        self.listener_reconnects = Counter(
            "rolegate_listener_reconnects",
            "Reconnections of the notification listener.",
            registry=registry,
        )
        self.decision_log_dropped = Gauge(
            "rolegate_decision_log_dropped",
            "Decision log entries dropped (queue full or sink failing), summed over workers.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.shadow_evaluated = Counter(
            "rolegate_shadow_evaluated",
            "Decisions also evaluated with the shadow policy (ROLEGATE_SHADOW_POLICY_DIR).",
            registry=registry,
        )
        self.shadow_dropped = Counter(
            "rolegate_shadow_dropped",
            "Decisions not shadow-evaluated because the shadow queue was full.",
            registry=registry,
        )
        self.shadow_disagreements = Counter(
            "rolegate_shadow_disagreements",
            "Decisions the shadow policy answers differently, by org and direction (grant: the "
            "shadow allows what was denied; revoke: the reverse).",
            ["org", "direction"],
            registry=registry,
        )
        self._last_dropped: int | None = None

    def render(self) -> tuple[bytes, str]:
        """The exposition text of every worker (multiprocess) or of this process."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.registry is not None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client.multiprocess import MultiProcessCollector  # multiprocess mode

        forget_dead_workers()
        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        return generate_latest(merged), CONTENT_TYPE_LATEST

    def sample_decision_log(self, decision_log: Any) -> None:
        dropped = getattr(decision_log, "dropped", None)
        if isinstance(dropped, int) and dropped != self._last_dropped:
            self._last_dropped = dropped
            self.decision_log_dropped.set(dropped)


_metrics: Metrics | None = None


def get() -> Metrics:
    """This process's metrics (created on first use, again after a fork)."""
    global _metrics
    if _metrics is None or _metrics.pid != os.getpid():
        _metrics = Metrics()
    return _metrics


def _safely(record) -> None:
    try:
        record(get())
    except Exception:  # metrics never break a decision or a reload
        log.debug("metric not recorded", exc_info=True)


def observe_reload(kind: str, seconds: float) -> None:
    _safely(lambda m: m.reload_seconds.labels(kind).observe(seconds))


def reload_failed() -> None:
    _safely(lambda m: m.reload_errors.inc())


def set_revision(revision: int) -> None:
    _safely(lambda m: m.revision.set(revision))


def shadow_evaluated(count: int) -> None:
    _safely(lambda m: m.shadow_evaluated.inc(count))


def shadow_dropped(count: int) -> None:
    _safely(lambda m: m.shadow_dropped.inc(count))


def shadow_disagreement(org: str, direction: str) -> None:
    _safely(lambda m: m.shadow_disagreements.labels(org, direction).inc())


def notification_received() -> None:
    _safely(lambda m: m.notifications.inc())


def listener_reconnected() -> None:
    _safely(lambda m: m.listener_reconnects.inc())


def mark_process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (its `livemin`/`livesum` files)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True
    return True


def forget_dead_workers() -> None:
    """Before a scrape: the live gauges of workers that have exited (crashed, replaced) no
    longer count. The server has no exit hook, so the scraping worker looks for them."""
    from pathlib import Path

    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid_text = path.stem.rpartition("_")[2]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            mark_process_dead(int(pid_text))


# --------------------------------------------------------------------------- per request
# Called by the HTTP layer's hooks (`rolegate.api.hooks`); nothing here imports Flask.


def _token_failure_code(challenge: str) -> str | None:
    """The `error="..."` of a `WWW-Authenticate` challenge."""
    marker = 'error="'
    start = challenge.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = challenge.find('"', start)
    return challenge[start:end] if end > start else None


_decided_in_request = threading.local()  # a request runs on one thread: its decisions


def count_decision(_principal: Any, _request: Any, decision: Any, _result: Any) -> None:
    """Decision listener: counted on the request's thread and added to the counters once, when
    the request ends (`end_request`), so a batch of 1,000 costs one counter update, not 1,000.
    A decision outside a request is counted at once."""
    counts = getattr(_decided_in_request, "counts", None)
    if counts is None:
        _safely(lambda m: m.decisions_by_result[decision.allowed].inc())
        return
    counts[decision.allowed] += 1


def start_request() -> None:
    """A request begins on this thread: its decision counts start at zero."""
    _decided_in_request.counts = [0, 0]  # [denied, allowed], indexed by `allowed`


def decided_in_request() -> int:
    """Decisions made so far by the request on this thread."""
    counts = getattr(_decided_in_request, "counts", None)
    return 0 if counts is None else counts[0] + counts[1]


def end_request() -> None:
    """The request on this thread has ended: add its decisions to the counters."""
    counts = getattr(_decided_in_request, "counts", None)
    _decided_in_request.counts = None
    if counts is None or not (counts[0] or counts[1]):
        return

    def add(m: Metrics) -> None:
        for allowed in (False, True):
            if counts[allowed]:
                m.decisions_by_result[allowed].inc(counts[allowed])

    _safely(add)


def record_response(
    endpoint: str | None, status: int, challenge: str, seconds: float | None
) -> None:
    """Latency and batch size of decision endpoints; 401s by token error code."""
    metrics = get()
    kind = DECISION_ENDPOINTS.get(endpoint or "")
    if kind is not None and seconds is not None:
        metrics.decision_seconds.labels(kind).observe(seconds)
        if kind == "batch" and status == 200:
            metrics.batch_size.observe(decided_in_request())
    if status == 401:
        metrics.token_failures.labels(_token_failure_code(challenge) or "unknown").inc()
