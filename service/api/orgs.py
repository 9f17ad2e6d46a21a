"""Organisation administration endpoints: orgs, members, org rules, API keys.

Thin HTTP layer over `rolegate.admin.OrgAdmin`: parse the body, name the caller, shape the
answer. Authorisation, escalation and last-admin checks all live in the core module.
"""

from __future__ import annotations

from flask import Blueprint, request
from werkzeug.routing import PathConverter

from ..admin import Caller, OrgAdmin, page_limit, validate_fields
from ..core import validate_text
from ..errors import InvalidRequest
from .context import caller, get_core, json_body
from .openapi import (
    ORG_PARAM,
    ORG_SCHEMA,
    error_responses,
    json_request,
    json_response,
    name_schema,
    path_param,
    query_param,
    subject_schema,
    text_schema,
)

bp = Blueprint("orgs", __name__)
BULK = "bulk"


class MemberConverter(PathConverter):
    """The subject of `/members/<member:subject>`: the rest of the path (a subject may hold
    `/`, sent percent-encoded), except exactly `bulk`, so that `/members/bulk` is only the bulk
    endpoint (its OPTIONS and 405 `Allow` list POST alone)."""

    regex = f"(?!{BULK}$)[^/].*?"


@bp.record_once
def _register_converter(state) -> None:
    state.app.url_map.converters["member"] = MemberConverter


def _admin() -> tuple[OrgAdmin, Caller]:
    principal = caller()
    return OrgAdmin(get_core()), Caller.of(principal)


def _query(allowed: set[str]) -> None:
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: unknown query parameter")


@bp.post("/v1/orgs")
def create_org():
    admin, who = _admin()
    body = validate_fields(json_body(), ("id", "admin"), ("name",))
    return admin.create_org(who, body["id"], body["admin"], body.get("name")), 201


@bp.delete("/v1/orgs/<org>")
def delete_org(org: str):
    admin, who = _admin()
    return admin.delete_org(who, org)


@bp.get("/v1/orgs/<org>/members")
def list_members(org: str):
    admin, who = _admin()
    _query({"limit", "after"})
    after = request.args.get("after")
    if after is not None:
        after = validate_text(after, "after")
    return admin.list_members(who, org, limit=page_limit(request.args.get("limit")), after=after)


@bp.put("/v1/orgs/<org>/members/<member:subject>")
def set_member(org: str, subject: str):
    admin, who = _admin()
    body = validate_fields(json_body(), ("roles",))
    return admin.set_member_roles(who, org, subject, body["roles"])


@bp.delete("/v1/orgs/<org>/members/<member:subject>")
def remove_member(org: str, subject: str):
    admin, who = _admin()
    return admin.remove_member(who, org, subject)


@bp.post("/v1/orgs/<org>/members/bulk")
def bulk_members(org: str):
    admin, who = _admin()
    body = validate_fields(json_body(), ("items",))
    return admin.bulk_set_roles(who, org, body["items"])


@bp.get("/v1/orgs/<org>/rules")
def list_rules(org: str):
    admin, who = _admin()
    return admin.list_rules(who, org)


@bp.post("/v1/orgs/<org>/rules")
def add_rules(org: str):
    admin, who = _admin()
    body = validate_fields(json_body(), ("rules",))
    return admin.change_rules(who, org, body["rules"]), 201


@bp.delete("/v1/orgs/<org>/rules")
def remove_rules(org: str):
    admin, who = _admin()
    body = validate_fields(json_body(), ("rules",))
    return admin.change_rules(who, org, body["rules"], remove=True)


@bp.post("/v1/orgs/<org>/api-keys")
def create_api_key(org: str):
    admin, who = _admin()
    body = validate_fields(json_body(), ("name", "roles"), ("expires_at",))
    result = admin.create_api_key(who, org, body["name"], body["roles"], body.get("expires_at"))
    return result, 201, {"Cache-Control": "no-store"}


@bp.get("/v1/orgs/<org>/api-keys")
def list_api_keys(org: str):
    admin, who = _admin()
    return admin.list_api_keys(who, org)


@bp.delete("/v1/orgs/<org>/api-keys/<key_id>")
def revoke_api_key(org: str, key_id: str):
    admin, who = _admin()
    return admin.revoke_api_key(who, org, key_id)


# --------------------------------------------------------------------------- OpenAPI


_ORG = ORG_PARAM
_SUBJECT = path_param(
    "subject", "Member subject (user id); `bulk` is the bulk endpoint", subject_schema()
)
_KEY_ID = path_param("key_id", "API key id.", text_schema(64))
_OBJECT = {"type": "object"}
_ROLES = {
    "type": "array",
    "items": name_schema(),
    "minItems": 1,
    "maxItems": 50,
    "uniqueItems": True,
}
_WRITE_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 415, 503)
_READ_ERRORS = error_responses(400, 401, 403, 503)
_RULE = {
    "oneOf": [
        {
            "type": "object",
            "required": ["type", "subject", "resource", "action", "effect"],
            "additionalProperties": False,
            "properties": {
                "type": {"const": "p"},
                "subject": name_schema(description="A role of the org (not a member)."),
                "resource": name_schema(),
                "action": name_schema(),
                "effect": {"enum": ["allow", "deny"]},
            },
        },
        {
            "type": "object",
            "required": ["type", "member", "role"],
            "additionalProperties": False,
            "properties": {
                "type": {"const": "g"},
                "member": name_schema(description="A role of the org."),
                "role": name_schema(description="The role it inherits."),
            },
        },
    ]
}
_RULES_BODY = json_request(
    {
        "type": "object",
        "required": ["rules"],
        "additionalProperties": False,
        "properties": {
            "rules": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "uniqueItems": True,
                "items": _RULE,
            }
        },
    }
)

OPENAPI_PATHS = {
    "/v1/orgs": {
        "post": {
            "summary": "Create an org with its first admin (platform admins: manage /orgs in *)",
            "requestBody": json_request(
                {
                    "type": "object",
                    "required": ["id", "admin"],
                    "additionalProperties": False,
                    "properties": {
                        "id": ORG_SCHEMA,
                        "name": text_schema(),
                        "admin": subject_schema(),
                    },
                }
            ),
            "responses": {"201": json_response("created", _OBJECT), **_WRITE_ERRORS},
        }
    },
    "/v1/orgs/{org}": {
        "delete": {
            "summary": "Offboard an org: revoke its API keys, remove all its rules at once",
            "parameters": [_ORG],
            "responses": {"200": json_response("offboarded", _OBJECT), **_WRITE_ERRORS},
        }
    },
    "/v1/orgs/{org}/members": {
        "get": {
            "summary": "Members with direct and inherited roles (read /members or audit /audit)",
            "parameters": [
                _ORG,
                query_param(
                    "limit",
                    "Page size, 1-1000 (default 100).",
                    {"type": "integer", "minimum": 1, "maximum": 1000},
                ),
                query_param("after", "Cursor: the `next` of the previous page."),
            ],
            "responses": {"200": json_response("one page", _OBJECT), **_READ_ERRORS},
        }
    },
    "/v1/orgs/{org}/members/{subject}": {
        "put": {
            "summary": "Set a member's roles (adds the member when new)",
            "parameters": [_ORG, _SUBJECT],
            "requestBody": json_request(
                {
                    "type": "object",
                    "required": ["roles"],
                    "additionalProperties": False,
                    "properties": {"roles": _ROLES},
                }
            ),
            "responses": {"200": json_response("the member", _OBJECT), **_WRITE_ERRORS},
        },
        "delete": {
            "summary": "Remove a member from the org",
            "parameters": [_ORG, _SUBJECT],
            "responses": {"200": json_response("removed", _OBJECT), **_WRITE_ERRORS},
        },
    },
    "/v1/orgs/{org}/members/bulk": {
        "post": {
            "summary": "Set many members' roles; per-item results, valid items applied together",
            "parameters": [_ORG],
            "requestBody": json_request(
                {
                    "type": "object",
                    "required": ["items"],
                    "additionalProperties": False,
                    "properties": {
                        "items": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 1000,
                            # Items are checked one by one: an invalid item gets its own
                            # error in the 200 answer, so the schema cannot refuse it.
                            "items": {
                                "description": '`{"subject": ..., "roles": [...]}`; an '
                                "invalid item is reported in its result, the valid ones apply",
                                "examples": [{"subject": "bob", "roles": ["editor"]}],
                            },
                        }
                    },
                }
            ),
            "responses": {"200": json_response("per-item results", _OBJECT), **_WRITE_ERRORS},
        }
    },
    "/v1/orgs/{org}/rules": {
        "get": {
            "summary": "The org's own p rules and role links (manage /rules)",
            "parameters": [_ORG],
            "responses": {"200": json_response("rules", _OBJECT), **_READ_ERRORS},
        },
        "post": {
            "summary": "Add org rules (one change set)",
            "parameters": [_ORG],
            "requestBody": _RULES_BODY,
            "responses": {"201": json_response("added", _OBJECT), **_WRITE_ERRORS},
        },
        "delete": {
            "summary": "Remove org rules (one change set)",
            "parameters": [_ORG],
            "requestBody": _RULES_BODY,
            "responses": {"200": json_response("removed", _OBJECT), **_WRITE_ERRORS},
        },
    },
    "/v1/orgs/{org}/api-keys": {
        "get": {
            "summary": "The org's API keys (never the secret)",
            "parameters": [_ORG],
            "responses": {"200": json_response("keys", _OBJECT), **_READ_ERRORS},
        },
        "post": {
            "summary": "Create an API key holding roles in the org; the key is shown once",
            "parameters": [_ORG],
            "requestBody": json_request(
                {
                    "type": "object",
                    "required": ["name", "roles"],
                    "additionalProperties": False,
                    "properties": {
                        "name": text_schema(),
                        "roles": _ROLES,
                        "expires_at": {
                            "type": "string",
                            "format": "date-time",
                            "maxLength": 64,
                            "description": "A future instant with a UTC offset.",
                        },
                    },
                }
            ),
            "responses": {"201": json_response("the key", _OBJECT), **_WRITE_ERRORS},
        },
    },
    "/v1/orgs/{org}/api-keys/{key_id}": {
        "delete": {
            "summary": "Revoke an API key (refused at once)",
            "parameters": [_ORG, _KEY_ID],
            "responses": {"200": json_response("revoked", _OBJECT), **_WRITE_ERRORS},
        }
    },
}
