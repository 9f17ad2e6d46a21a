"""The request hooks of the HTTP app, in one place: one timer, one access line, one set of headers.

    hooks.init_app(app, core)

Before a request: its id (`X-Request-ID` honoured when well-formed, else generated) is set for the
logs (`rolegate.logs.request_id_var`) and the client address for the decision log
(`rolegate.audit.REQUEST_CONTEXT`); the timer starts. After it: the id, worker and revision
headers, the access log line and the request metrics (`rolegate.metrics`), all from the one
measured duration. At teardown the context variables are reset.
"""

from __future__ import annotations

import logging
import os
import time
from contextvars import ContextVar, Token
from typing import Any

from flask import Flask, Response, g, request

from .. import metrics
from ..audit import REQUEST_CONTEXT
from ..core import Rolegate
from ..logs import (
    REQUEST_ID_HEADER,
    REVISION_HEADER,
    WORKER_HEADER,
    request_id_from,
    request_id_var,
)

access_log = logging.getLogger("rolegate.access")
log = logging.getLogger("rolegate.api")


class RequestHooks:
    """What every request gets, whichever path serves it: the Flask hooks below and the decision
    fast path (`rolegate.api.fastpath`) call these same methods."""

    def __init__(self, core: Rolegate):
        self.core = core
        self.worker = str(os.getpid())  # the app is built in the worker process (after any fork)
        self.flask_hooks: tuple[Any, ...] = ()  # the registered (before, after, teardown)

    def begin(self, request_id_header: str | None, remote_addr: str | None) -> tuple:
        """Set the request id and audit context; start the timer. Returns the state `end` and
        `headers` need: (request id, id token, audit token, start)."""
        request_id = request_id_from(request_id_header)
        id_token = request_id_var.set(request_id)
        audit_token = REQUEST_CONTEXT.set({"client": remote_addr or ""})
        metrics.start_request()
        return request_id, id_token, audit_token, time.perf_counter()

    def headers(self, request_id: str | None) -> list[tuple[str, str]]:
        """The id, worker and revision headers of the answer (revision read after deciding)."""
        headers = [(REQUEST_ID_HEADER, request_id)] if request_id else []
        headers.append((WORKER_HEADER, self.worker))
        headers.append((REVISION_HEADER, str(self.core.engine.revision)))
        return headers

    def record(
        self,
        method: str,
        path: str,
        endpoint: str | None,
        status: int,
        challenge: str,
        seconds: float | None,
    ) -> None:
        """The access line and the request metrics, from the one measured duration."""
        if seconds is not None:
            _log_access(method, path, status, seconds)
        _record_metrics(self.core, endpoint, status, challenge, seconds)

    @staticmethod
    def end(id_token: Token[Any] | None, audit_token: Token[Any] | None) -> None:
        metrics.end_request()
        _reset(request_id_var, id_token)
        _reset(REQUEST_CONTEXT, audit_token)


def init_app(app: Flask, core: Rolegate) -> RequestHooks:
    """Register the request hooks of `app`, serving `core`."""
    metrics.get()  # create the metrics in this process now (post-fork under a pre-forking server)
    if metrics.count_decision not in core.decision_listeners:
        core.decision_listeners.append(metrics.count_decision)
    hooks = RequestHooks(core)

    @app.before_request
    def _begin() -> None:
        state = hooks.begin(request.headers.get(REQUEST_ID_HEADER), request.remote_addr)
        g.rolegate_request_id, g.rolegate_request_token = state[0], state[1]
        g.rolegate_audit_context, g.rolegate_request_started = state[2], state[3]

    @app.after_request
    def _finish(response: Response) -> Response:
        started = g.get("rolegate_request_started")
        seconds = None if started is None else time.perf_counter() - started
        for name, value in hooks.headers(g.get("rolegate_request_id")):
            response.headers[name] = value
        hooks.record(
            request.method,
            request.path,
            request.endpoint,
            response.status_code,
            response.headers.get("WWW-Authenticate", ""),
            seconds,
        )
        return response

    @app.teardown_request
    def _end(_error: BaseException | None) -> None:
        hooks.end(g.pop("rolegate_request_token", None), g.pop("rolegate_audit_context", None))

    hooks.flask_hooks = (_begin, _finish, _end)
    return hooks


def _log_access(method: str, path: str, status: int, seconds: float) -> None:
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "%s %s %s",
            method,
            path,
            status,
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
            },
        )


def _record_metrics(
    core: Rolegate, endpoint: str | None, status: int, challenge: str, seconds: float | None
) -> None:
    try:
        metrics.record_response(endpoint, status, challenge, seconds)
        if core.decision_log is not None:
            metrics.get().sample_decision_log(core.decision_log)
    except Exception:  # metrics never break a response
        log.debug("request metrics not recorded", exc_info=True)


def _reset(var: ContextVar[Any], token: Token[Any] | None) -> None:
    if token is None:
        return
    try:
        var.reset(token)
    except ValueError:  # set in another context (should not happen): just clear
        var.set(None)
