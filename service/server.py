"""The HTTP server of `rolegate serve`: granian (Rust HTTP/1.1, WSGI interface), chosen by
measurement (bench/README.md) over gunicorn.

    run_server(lambda: create_app(settings), ServerOptions(host="127.0.0.1", port=8000))

The seam is `ServerOptions` + `run_server`; nothing else in Rolegate knows which server runs.
What it gives, and how:

- N worker processes forked from this one (`workers`), each building the app itself after the
  fork (its own store connections, LISTEN thread and poll). What this process loaded before
  (`rolegate serve` loads the policy here) is frozen out of the garbage collector's reach and
  shared with the workers copy-on-write;
- requests are parsed in Rust: a slow or idle client holds no Python thread. Request headers must
  arrive within `header_read_timeout`; a worker runs at most `threads` requests at once and queues
  at most `backpressure` more;
- SIGTERM: the workers stop accepting, finish in-flight requests (`graceful_timeout` s, then
  killed) and exit 0;
- a worker that crashes is replaced; one whose request runs longer than `timeout` seconds exits
  (the request watchdog below) and is replaced;
- multiprocess /metrics: the metrics directory is set before the fork, dead workers' live gauges
  are dropped when /metrics is scraped (rolegate.metrics);
- a worker whose master has gone (killed with SIGKILL) stops too: the kernel sends it SIGTERM
  (PR_SET_PDEATHSIG) and its watchdog also notices the new parent; no orphan keeps the port;
- granian's own log records go through the `granian` logger to Rolegate's handler (JSON lines).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("rolegate.server")

WsgiApp = Callable[..., Any]
WATCHDOG_INTERVAL_S = 0.5


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    threads: int = 2  # Python threads running requests, per worker
    timeout: int = 30  # a request running longer restarts its worker
    graceful_timeout: int = 30  # SIGTERM: seconds in-flight requests get
    header_read_timeout: float = 5.0  # seconds a client has to send its request headers
    keepalive: bool = True
    backpressure: int | None = None  # requests queued per worker beyond `threads`

    @property
    def queued_per_worker(self) -> int:
        return self.backpressure if self.backpressure is not None else self.threads * 16


class RequestWatchdog:
    """Exits the worker when a request has run longer than `timeout` seconds: the master then
    starts a fresh one (what gunicorn's worker timeout did). Wraps the WSGI app."""

    def __init__(
        self, app: WsgiApp, timeout: float, exit_process: Callable[[int], None] = os._exit
    ):
        self.app = app
        self.timeout = timeout
        self._started: dict[int, float] = {}  # thread id -> monotonic start of its request
        self._exit = exit_process
        self._parent = os.getppid()
        threading.Thread(target=self._watch, name="rolegate-watchdog", daemon=True).start()

    def __call__(self, environ, start_response):
        ident = threading.get_ident()
        self._started[ident] = time.monotonic()
        try:
            return buffered(self.app, environ, start_response)
        finally:
            self._started.pop(ident, None)

    def overdue(self, now: float | None = None) -> float | None:
        """Seconds the oldest overdue request has run, or None (also with no timeout set)."""
        if self.timeout <= 0:
            return None
        now = time.monotonic() if now is None else now
        oldest = min(self._started.values(), default=None)
        if oldest is None or now - oldest <= self.timeout:
            return None
        return now - oldest

    def _watch(self) -> None:
        while True:
            time.sleep(WATCHDOG_INTERVAL_S)
            if os.getppid() != self._parent:
                log.error("the server's master has exited: stopping this worker")
                logging.shutdown()
                self._exit(1)
            running = self.overdue()
            if running is not None:
                log.error(
                    "a request has run %.1f s (timeout %s s): restarting this worker",
                    running,
                    self.timeout,
                )
                logging.shutdown()
                self._exit(1)


def buffered(app: WsgiApp, environ, start_response) -> Any:
    """The app's answer as one bytes chunk in a list when it declares its length (every JSON
    answer): the server then sends it in one call instead of iterating the body (Flask returns
    an iterator), which held the GIL for a third of a single check's time. Bodies without a
    Content-Length (streams) pass through unchanged."""
    declared: list[bool] = []

    def remember(status, headers, exc_info=None):
        declared.append(any(name.lower() == "content-length" for name, _ in headers))
        return start_response(status, headers, exc_info)

    result = app(environ, remember)
    if isinstance(result, list) or not (declared and declared[-1]):
        return result
    try:
        return [b"".join(result)]
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


def stop_with_the_master() -> None:
    """Linux: this process gets SIGTERM when its parent (the server's master) dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        log.debug("PR_SET_PDEATHSIG not available", exc_info=True)


def worker_app(app_factory: Callable[[], WsgiApp], options: ServerOptions) -> WsgiApp:
    """What each worker serves: the app built in the worker, under the request watchdog. The
    loaded policy is moved out of the garbage collector's reach (`gc.freeze`): full collections
    no longer walk every rule (they cost 90-440 ms at 1,000-10,000 orgs, in the tail)."""
    stop_with_the_master()
    app = app_factory()
    gc.freeze()  # no collection first: one full pass over the rules costs seconds at start-up
    return RequestWatchdog(app, options.timeout)


def _granian_logging() -> dict[str, Any]:
    """granian's loggers propagate to the root handler that `configure_logging` installed."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {
            name: {"handlers": [], "propagate": True, "level": "INFO"}
            for name in ("granian", "_granian", "granian.access")
        },
    }


def run_server(app_factory: Callable[[], WsgiApp], options: ServerOptions) -> None:
    """Serve `app_factory()` (called in every worker) until SIGTERM/SIGINT."""
    import multiprocessing

    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.server import Server

    server = Server(
        "rolegate",
        address=options.host,
        port=options.port,
        interface=Interfaces.WSGI,
        workers=options.workers,
        blocking_threads=options.threads,
        backpressure=options.threads + options.queued_per_worker,
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(
            header_read_timeout=int(options.header_read_timeout * 1000),
            keep_alive=options.keepalive,
        ),
        websockets=False,
        log_enabled=True,
        log_dictconfig=_granian_logging(),
        log_access=False,
        respawn_failed_workers=True,
        respawn_interval=0.5,
        workers_kill_timeout=options.graceful_timeout,
    )
    # Workers are forked, never spawned: they inherit what this process loaded, and
    # `app_factory` (a closure) could not be pickled for a spawned process anyway.
    multiprocessing.set_start_method("fork", force=True)
    gc.freeze()  # collections in the workers leave the inherited objects (and their pages) alone
    server.serve(target_loader=lambda _target: worker_app(app_factory, options))
