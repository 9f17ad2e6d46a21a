"""Operational endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

import dataclasses
import os

from flask import Blueprint, Response, current_app

from .. import metrics
from ..core import STORE_RELOAD_FAILED as STORE_RELOAD_FAILED  # its former home
from .context import get_core
from .openapi import json_response, openapi_document

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    readiness = get_core().readiness()
    body = {**dataclasses.asdict(readiness), "worker": os.getpid()}
    return body, 200 if readiness.ready else 503


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
