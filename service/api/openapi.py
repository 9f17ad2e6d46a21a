"""The OpenAPI 3.1 document, assembled from the `OPENAPI_PATHS` of every blueprint module.

Each blueprint module describes its own routes next to the code; a test checks that the document
and the application's URL map name the same (path, method) pairs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from flask.sansio.blueprints import Blueprint

ERROR_REF = {"$ref": "#/components/schemas/Error"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "Check": {
        "type": "object",
        "required": ["resource", "action"],
        "additionalProperties": False,
        "properties": {
            "resource": {"type": "string", "minLength": 1, "maxLength": 2048},
            "action": {"type": "string", "minLength": 1, "maxLength": 256},
            "org": {"type": "string", "description": "Only when the token names no org."},
            "owner": {"type": "string", "description": "Subject id owning the resource."},
            "explain": {"type": "boolean", "default": False},
            "subject": {
                "type": "string",
                "description": "Decide for this subject instead of the caller's own: needs "
                "`evaluate` on `/authzen` in the org (a PEP, a background job).",
            },
            "min_revision": {
                "type": "integer",
                "minimum": 0,
                "description": "Decide with at least this policy revision (read-your-writes); "
                "503 `revision_unavailable` when this worker cannot reach it in time.",
            },
        },
    },
    "Decision": {
        "type": "object",
        "required": ["allowed", "subject", "org", "resource", "action", "decision_id", "revision"],
        "properties": {
            "allowed": {"type": "boolean"},
            "subject": {"type": "string"},
            "org": {"type": "string"},
            "resource": {"type": "string"},
            "action": {"type": "string"},
            "decision_id": {"type": "string"},
            "revision": {"type": "integer"},
            "reason": {
                "type": "object",
                "properties": {
                    "summary": {"type": "string"},
                    "rule": {"type": "string"},
                    "effect": {"type": ["string", "null"]},
                    "path": {"type": "string"},
                    "error": {"type": "string"},
                },
            },
        },
    },
}


def error_responses(*statuses: int) -> dict[str, Any]:
    """Response objects for error statuses, all with the one error shape."""
    return {
        str(status): {
            "description": "error",
            "content": {"application/json": {"schema": ERROR_REF}},
        }
        for status in statuses
    }


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def json_request(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def openapi_document(blueprints: Iterable[Blueprint]) -> dict[str, Any]:
    """The OpenAPI document of `blueprints` (each module's `OPENAPI_PATHS`, merged)."""
    paths: dict[str, Any] = {}
    for blueprint in blueprints:
        module = sys.modules[blueprint.import_name]
        for path, operations in getattr(module, "OPENAPI_PATHS", {}).items():
            paths.setdefault(path, {}).update(operations)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Rolegate",
            "version": "1",
            "description": "Authorization decisions over Casbin RBAC with domains.",
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apikey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{"bearer": []}, {"apikey": []}],
        "paths": dict(sorted(paths.items())),
    }
