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


def init_app(app: Flask, core: Rolegate) -> None:
    """Register the request hooks of `app`, serving `core`."""
    metrics.get()  # create the metrics in this process now (post-fork under a pre-forking server)
    if metrics.count_decision not in core.decision_listeners:
        core.decision_listeners.append(metrics.count_decision)
    worker = str(os.getpid())  # the app is built in the worker process (after any fork)

    @app.before_request
    def _begin() -> None:
        request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        g.rolegate_request_id = request_id
        g.rolegate_request_token = request_id_var.set(request_id)
        g.rolegate_audit_context = REQUEST_CONTEXT.set({"client": request.remote_addr or ""})
        metrics.start_request()
        g.rolegate_request_started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        started = g.get("rolegate_request_started")
        seconds = None if started is None else time.perf_counter() - started
        request_id = g.get("rolegate_request_id")
        if request_id:
            response.headers[REQUEST_ID_HEADER] = request_id
        response.headers[WORKER_HEADER] = worker
        response.headers[REVISION_HEADER] = str(core.engine.revision)
        if seconds is not None:
            _log_access(response, seconds)
        _record_metrics(core, response, seconds)
        return response

    @app.teardown_request
    def _end(_error: BaseException | None) -> None:
        _reset(request_id_var, g.pop("rolegate_request_token", None))
        _reset(REQUEST_CONTEXT, g.pop("rolegate_audit_context", None))


def _log_access(response: Response, seconds: float) -> None:
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 3),
            },
        )


def _record_metrics(core: Rolegate, response: Response, seconds: float | None) -> None:
    try:
        metrics.record_response(
            request.endpoint,
            response.status_code,
            response.headers.get("WWW-Authenticate", ""),
            seconds,
        )
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
