"""Operational endpoints: liveness, readiness, the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint

from .context import get_core
from .openapi import json_response, openapi_document

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


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
        "last_reload_error": core.last_reload_error,
    }
    return body, 200 if ready else 503


@bp.get("/openapi.json")
def openapi():
    return openapi_document()


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
            "summary": "Readiness: policy loaded, revision, rule count, engine mode",
            "security": [],
            "responses": {
                "200": json_response("ready", _STATUS),
                "503": json_response("not ready", _STATUS),
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
