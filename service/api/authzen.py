"""AuthZEN Authorization API 1.0 endpoints: each org is a PDP of its own.

- `/orgs/<org>/access/v1/{evaluation,evaluations,search/subject,search/resource,search/action}`:
  the PDP of one org (base URL `/orgs/<org>`), metadata at
  `/.well-known/authzen-configuration/orgs/<org>` (the spec's well-known URI of that base URL);
- `/access/v1/...` and `/.well-known/authzen-configuration`: the PDP of the credential's own org
  (an API key or a token bound to one org).

Thin HTTP layer over `rolegate.authzen.AuthzenService`; the PIP endpoints (subject attributes,
`/v1/orgs/<org>/subjects/<subject>/attributes`) live here too.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request

from ..admin import validate_fields
from ..audit import CursorCodec, cursor_secret
from ..authzen import API_PREFIX, ENDPOINTS, AuthzenMapping, AuthzenService, metadata
from ..core import CheckInput, validate_org, validate_text
from ..errors import Forbidden, InvalidRequest, UnsupportedMediaType
from ..subject_attributes import validate_attributes
from .context import caller, get_core, json_body
from .openapi import ORG_PARAM, error_responses, json_request, json_response, path_param

bp = Blueprint("authzen", __name__)

WELL_KNOWN = "/.well-known/authzen-configuration"
ORG_BASE = "/orgs/<org>"
ATTRIBUTES = "/v1/orgs/<org>/subjects/<path:subject>/attributes"
# Who may read and set subject attributes: the members permissions.
READ_ATTRIBUTES = ("/members", "read")
MANAGE_ATTRIBUTES = ("/members", "manage")


@bp.record_once
def _check_mapping(state) -> None:
    """A mapping that cannot work (ROLEGATE_AUTHZEN_*) stops start-up, not the first request."""
    core = state.app.extensions.get("rolegate")
    if core is not None:
        AuthzenMapping.from_settings(core.settings)


def _service() -> AuthzenService:
    service = current_app.extensions.get("rolegate.authzen")
    if service is None:
        core = get_core()
        service = AuthzenService(core, CursorCodec(cursor_secret(core.settings)))
        current_app.extensions["rolegate.authzen"] = service
    return service


def _body() -> dict:
    """The JSON object of the request; AuthZEN answers 400 for anything else (also non-JSON)."""
    try:
        body = json_body()
    except UnsupportedMediaType as exc:
        raise InvalidRequest(exc.message) from None
    if not isinstance(body, dict):
        raise InvalidRequest("body: expected a JSON object")
    return body


def _org(org: str | None) -> str | None:
    return None if org is None else validate_org(org)


def _operation(name: str):
    def view(org: str | None = None):
        principal = caller()
        body = _body()
        return getattr(_service(), name)(principal, _org(org), body)

    view.__name__ = name
    return view


OPERATIONS = {
    "/evaluation": "evaluate",
    "/evaluations": "evaluations",
    "/search/subject": "search_subject",
    "/search/resource": "search_resource",
    "/search/action": "search_action",
}
for _path, _name in OPERATIONS.items():
    _view = _operation(_name)
    bp.add_url_rule(f"{API_PREFIX}{_path}", f"{_name}", _view, methods=["POST"])
    bp.add_url_rule(f"{ORG_BASE}{API_PREFIX}{_path}", f"org_{_name}", _view, methods=["POST"])


def _public_base() -> str:
    configured = get_core().settings.authzen_public_url
    return (configured or request.host_url).rstrip("/")


@bp.get(WELL_KNOWN)
def configuration():
    return metadata(_public_base())


@bp.get(f"{WELL_KNOWN}/orgs/<org>")
def org_configuration(org: str):
    return metadata(f"{_public_base()}/orgs/{validate_org(org)}")


# --------------------------------------------------------------------------- subject attributes


def _authorize_attributes(org: str, permission: tuple[str, str]) -> None:
    principal = caller()
    core = get_core()
    resource, action = permission
    own = core.request_for(principal, CheckInput(resource, action, org=validate_org(org)))
    if not core.engine.check(own).allowed:
        raise Forbidden(f"{principal.subject} may not {action} {resource} in org {org!r}")


@bp.get(ATTRIBUTES)
def get_attributes(org: str, subject: str):
    _authorize_attributes(org, READ_ATTRIBUTES)
    subject = validate_text(subject, "subject")
    attributes = get_core().subject_attributes.get(org, subject)
    return {"org": org, "subject": subject, "attributes": attributes}


@bp.put(ATTRIBUTES)
def set_attributes(org: str, subject: str):
    _authorize_attributes(org, MANAGE_ATTRIBUTES)
    subject = validate_text(subject, "subject")
    body = validate_fields(json_body(), ("attributes",))
    attributes = validate_attributes(body["attributes"])
    get_core().subject_attributes.set(org, subject, attributes)
    return {"org": org, "subject": subject, "attributes": attributes}


# --------------------------------------------------------------------------- OpenAPI

_ENTITY = {
    "type": "object",
    "required": ["type", "id"],
    "properties": {
        "type": {"type": "string"},
        "id": {"type": "string"},
        "properties": {"type": "object"},
    },
}
_ACTION = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "properties": {"type": "object"}},
}
_EVALUATION: dict[str, Any] = {
    "type": "object",
    "required": ["subject", "action", "resource"],
    "properties": {
        "subject": _ENTITY,
        "action": _ACTION,
        "resource": _ENTITY,
        "context": {"type": "object"},
        "options": {
            "type": "object",
            "properties": {"explain": {"type": "boolean", "description": "add reasons"}},
        },
    },
}
_DECISION = {
    "type": "object",
    "required": ["decision"],
    "properties": {"decision": {"type": "boolean"}, "context": {"type": "object"}},
}
_EVALUATIONS = {
    "type": "object",
    "properties": {
        **_EVALUATION["properties"],
        # Items are checked one by one: an invalid one gets its own error in the 200 answer.
        "evaluations": {
            "type": "array",
            "maxItems": 1000,
            "items": {"description": "an evaluation (fields default to the request's)"},
        },
        "options": {
            "type": "object",
            "properties": {
                "evaluations_semantic": {
                    "enum": ["execute_all", "deny_on_first_deny", "permit_on_first_permit"]
                },
                "explain": {"type": "boolean"},
            },
        },
    },
}
_SEARCH = {
    "type": "object",
    "properties": {
        "subject": {"type": "object"},
        "action": _ACTION,
        "resource": {"type": "object"},
        "context": {"type": "object"},
        "page": {
            "type": "object",
            "properties": {
                "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
                "token": {"type": "string"},
            },
        },
    },
}
_RESULTS = {
    "type": "object",
    "required": ["results", "page"],
    "properties": {
        "results": {"type": "array", "items": {"type": "object"}},
        "page": {
            "type": "object",
            "properties": {
                "next_token": {"type": "string", "description": "empty at the end"},
                "count": {"type": "integer"},
                "total": {"type": "integer"},
            },
        },
    },
}
_ERRORS = error_responses(400, 401, 403, 413)
_DOCS = {
    "/evaluation": ("AuthZEN: one access evaluation", _EVALUATION, _DECISION),
    "/evaluations": (
        "AuthZEN: access evaluations (defaults merged into items, results in request order)",
        _EVALUATIONS,
        {"type": "object", "properties": {"evaluations": {"type": "array"}}},
    ),
    "/search/subject": ("AuthZEN: subjects allowed the action on the resource", _SEARCH, _RESULTS),
    "/search/resource": ("AuthZEN: resources the subject may act on", _SEARCH, _RESULTS),
    "/search/action": ("AuthZEN: actions the subject may do on the resource", _SEARCH, _RESULTS),
}
_METADATA = {
    "type": "object",
    "required": ["policy_decision_point", "access_evaluation_endpoint"],
    "properties": {
        "policy_decision_point": {"type": "string"},
        **{name: {"type": "string"} for name in ENDPOINTS},
    },
}
_ORG_PARAM = ORG_PARAM


def _operation_doc(summary: str, body: dict, answer: dict, *, per_org: bool) -> dict:
    operation: dict[str, Any] = {
        "summary": summary + (" (the org's PDP)" if per_org else " (the credential's org)"),
        "requestBody": json_request(body),
        "responses": {"200": json_response("the answer", answer), **_ERRORS},
    }
    if per_org:
        operation["parameters"] = [_ORG_PARAM]
    return {"post": operation}


OPENAPI_PATHS = {
    **{f"{API_PREFIX}{path}": _operation_doc(*doc, per_org=False) for path, doc in _DOCS.items()},
    **{
        f"/orgs/{{org}}{API_PREFIX}{path}": _operation_doc(*doc, per_org=True)
        for path, doc in _DOCS.items()
    },
    WELL_KNOWN: {
        "get": {
            "summary": "AuthZEN PDP metadata of the credential-bound PDP (no credential needed)",
            "security": [],
            "responses": {"200": json_response("PDP metadata", _METADATA)},
        }
    },
    f"{WELL_KNOWN}/orgs/{{org}}": {
        "get": {
            "summary": "AuthZEN PDP metadata of one org's PDP (no credential needed)",
            "security": [],
            "parameters": [_ORG_PARAM],
            "responses": {"200": json_response("PDP metadata", _METADATA), **error_responses(400)},
        }
    },
    "/v1/orgs/{org}/subjects/{subject}/attributes": {
        "get": {
            "summary": "A subject's attributes (the AuthZEN PIP); `read` on `/members`",
            "parameters": [
                _ORG_PARAM,
                path_param("subject", "The subject"),
            ],
            "responses": {
                "200": json_response("the attributes", {"type": "object"}),
                **error_responses(400, 401, 403),
            },
        },
        "put": {
            "summary": "Replace a subject's attributes; `manage` on `/members`",
            "parameters": [
                _ORG_PARAM,
                path_param("subject", "The subject"),
            ],
            "requestBody": json_request(
                {
                    "type": "object",
                    "required": ["attributes"],
                    "properties": {
                        "attributes": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                }
            ),
            "responses": {
                "200": json_response("the attributes", {"type": "object"}),
                **error_responses(400, 401, 403, 415),
            },
        },
    },
}
