"""The OpenAPI 3.1 document, assembled from the `OPENAPI_PATHS` of every blueprint module.

Each blueprint module describes its own routes next to the code; a test checks that the document
and the application's URL map name the same (path, method) pairs.
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Iterable
from functools import cache
from typing import Any

from flask.sansio.blueprints import Blueprint

from ..core import MAX_RESOURCE_CHARS
from ..identifiers import (
    ORG_ID_MAX_LENGTH,
    ORG_ID_PATTERN,
    SUBJECT_FORBIDDEN_CHARACTERS,
    SUBJECT_MAX_LENGTH,
)
from ..validation import MAX_NAME_CHARS

ERROR_REF = {"$ref": "#/components/schemas/Error"}
# Lone surrogates (Cs, also refused) cannot be sent as UTF-8, so the patterns leave them out.
_TEXT_REFUSED = ("Cc",)  # core.validate_text
_NAME_REFUSED = ("Cc", "Cf", "Zl", "Zp")  # store.rule_problem (values kept in rules)


def _class_ranges(code_points: list[int]) -> str:
    """Regex character-class content for the code points (ranges, `\\uXXXX` escapes)."""
    parts, start = [], None
    for index, point in enumerate(code_points):
        if start is None:
            start = point
        if index + 1 == len(code_points) or code_points[index + 1] != point + 1:
            parts.append(f"\\u{start:04x}" if start == point else f"\\u{start:04x}-\\u{point:04x}")
            start = None
    return "".join(parts)


@cache
def _refused_class(categories: tuple[str, ...]) -> str:
    # Basic Multilingual Plane only: ECMA-262 patterns without the `u` flag see UTF-16 units.
    points = [point for point in range(0x10000) if unicodedata.category(chr(point)) in categories]
    return _class_ranges(points)


@cache
def _spaces() -> str:
    points = [
        point
        for point in range(0x10000)
        if chr(point).isspace() and unicodedata.category(chr(point)) not in _NAME_REFUSED
    ]
    return _class_ranges(points)


def text_schema(max_length: int = MAX_NAME_CHARS, **extra: Any) -> dict[str, Any]:
    """A string `core.validate_text` accepts: 1..max_length characters, no control characters."""
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": max_length,
        "pattern": f"^[^{_refused_class(_TEXT_REFUSED)}]+$",
        **extra,
    }


def name_schema(max_length: int = SUBJECT_MAX_LENGTH, **extra: Any) -> dict[str, Any]:
    """A value a rule can hold (`store.rule_problem`): no control or invisible characters, none
    of Casbin's tokenizer characters, no leading/trailing spaces, no `#` after a space."""
    refused = _refused_class(_NAME_REFUSED) + "".join(
        "\\" + char for char in SUBJECT_FORBIDDEN_CHARACTERS
    )
    spaces = _spaces()
    first = f"[^{refused}{spaces}#]"
    inner = f"(?:[^{refused}{spaces}]|[{spaces}]+{first})"
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": max_length,
        "pattern": f"^{first}{inner}*$",
        **extra,
    }


def subject_schema(**extra: Any) -> dict[str, Any]:
    """A member subject: a rule value that is not `*` and names no API key."""
    schema = name_schema(**extra)
    schema["pattern"] = "^(?!\\*$)(?!apikey:)" + schema["pattern"][1:]
    return schema


# `roles` is reserved (the template file is roles.csv).
ORG_SCHEMA = {
    "type": "string",
    "pattern": "^(?!roles$)" + ORG_ID_PATTERN.removeprefix("^"),
    "maxLength": ORG_ID_MAX_LENGTH,
}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or null (the server reads a null optional field as absent)."""
    return {**schema, "type": [schema["type"], "null"]}


RESOURCE_SCHEMA = text_schema(MAX_RESOURCE_CHARS)


def path_param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict:
    return {**query_param(name, description, schema, required=True), "in": "path"}


def query_param(
    name: str, description: str, schema: dict[str, Any] | None = None, required: bool = False
) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema or text_schema(),
    }


ORG_PARAM = path_param("org", "Organisation id", ORG_SCHEMA)

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
            "resource": RESOURCE_SCHEMA,
            "action": text_schema(),
            "org": nullable({**ORG_SCHEMA, "description": "Only when the token names no org."}),
            "owner": nullable(text_schema(description="Subject id owning the resource.")),
            "explain": {"type": "boolean", "default": False},
            "subject": nullable(
                text_schema(
                    description="Decide for this subject instead of the caller's own: needs "
                    "`evaluate` on `/authzen` in the org (a PEP, a background job).",
                )
            ),
            "min_revision": {
                "type": ["integer", "null"],
                "minimum": 0,
                "maximum": 2**63 - 1,
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
                "apikey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "An API key `rgk_<id>_<secret>`; send one credential only.",
                },
                "ApiKey": {
                    "type": "http",
                    "scheme": "ApiKey",
                    "description": "`Authorization: ApiKey rgk_<id>_<secret>` (an API key).",
                },
            },
        },
        "security": [{"bearer": []}, {"ApiKey": []}, {"apikey": []}],
        "paths": dict(sorted(paths.items())),
    }
