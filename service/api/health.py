"""Operational endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

import os

from flask import Blueprint, Response, current_app

from .. import metrics
from ..policy.watch import read_reload_error
from .context import get_core
from .openapi import json_response, openapi_document

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


STORE_RELOAD_FAILED = "the last reload from the policy store failed (details in the log)"


def public_reload_error(core) -> str | None:
    """The reload error an unauthenticated prober may see: the watcher's policy file error, or
    that the store failed, never the database's host, port or driver message."""
    if core.last_reload_error:
        return STORE_RELOAD_FAILED
    return read_reload_error(core.settings.data_path)


@bp.get("/readyz")
def readyz():
    core = get_core()
    snapshot = core.engine.snapshot
    ready = core.loaded
    body = {
        "ready": ready,
        "revision": snapshot.revision,
        "rules": snapshot.rule_count,
        "engine_mode": core.engine.mode,
        "engine_mode_reason": core.engine.shape.reason,
        "last_reload_error": public_reload_error(core),
        # Decisions go on from memory while the store is unreachable: still ready, but stale.
        "stale": core.stale,
        "store_revision": core.store_revision,
        "lag": core.lag,
        "revision_applied_at": core.revision_applied_at,
        "listening": bool(core.sync and core.sync.listening),
        "worker": os.getpid(),
        # ROLEGATE_SHADOW_POLICY_DIR: the candidate's revision, load error and counters.
        "shadow": core.shadow.status() if core.shadow is not None else None,
    }
    return body, 200 if ready else 503


@bp.get("/metrics")
def metrics_text():
    body, content_type = metrics.get().render()
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi():
    return openapi_document(current_app.iter_blueprints())


_STATUS = {"type": "object"}
OPENAPI_PATHS = {
    "/healthz": {
        "get": {
            "summary": "Liveness",
            "security": [],
            "responses": {"200": json_response("alive", _STATUS)},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: policy loaded, revision, lag behind the store, staleness",
            "description": "Ready (200) once the policy is loaded, also while the database is "
            "down (`stale: true`: decisions are served from memory). `lag` is the number of "
            "revisions the store is ahead of this worker as last seen; `worker` the process id; "
            "`shadow` the shadow policy's revision, load error and counters (null without one).",
            "security": [],
            "responses": {
                "200": json_response("ready", _STATUS),
                "503": json_response("not ready", _STATUS),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics, aggregated across the workers of this instance",
            "security": [],
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "security": [],
            "responses": {"200": json_response("OpenAPI 3.1", _STATUS)},
        }
    },
}
