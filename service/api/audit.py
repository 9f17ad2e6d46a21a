"""Audit endpoints: effective permissions, who can, access matrix, change history, decisions.

Every endpoint is authorised by the engine itself (`audit` on `/audit` in the org; see
`rolegate.audit.access`), before the org's existence is revealed. (The client address the decision
log records is set by the request hooks, `rolegate.api.hooks`.)
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, request

from ..audit import (
    CursorCodec,
    access_matrix,
    cursor_secret,
    effective_permissions,
    ensure_can_audit,
    org_names,
    require_org,
    require_subject,
    who_can,
)
from ..audit.decision_log import MAX_SEARCH_LIMIT
from ..audit.queries import page_after, subject_kind
from ..core import MAX_RESOURCE_CHARS, Rolegate, validate_org, validate_text
from ..engine import Snapshot, reads
from ..errors import InvalidRequest, NotFound
from .context import caller, get_core
from .openapi import (
    ORG_PARAM,
    RESOURCE_SCHEMA,
    error_responses,
    json_response,
    path_param,
    query_param,
    text_schema,
)

bp = Blueprint("audit", __name__)

DEFAULT_PAGE = 100
MAX_PAGE = 500
MAX_CHANGES_PAGE = 1000
MAX_REVISION_ENTRIES = 100_000
RECENT_SHADOW_LIMIT = 200  # the shadow keeps this many recent disagreements per worker
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# --------------------------------------------------------------------------- helpers


def _audit_scope(org: str) -> tuple[Rolegate, Snapshot, str]:
    """Authenticate, authorise `audit` on `/audit` in `org`, then require the org to exist."""
    principal = caller()
    org = validate_org(org)
    core = get_core()
    snapshot = core.engine.snapshot
    ensure_can_audit(core, snapshot, principal, org)
    require_org(snapshot, org)
    return core, snapshot, org


def _limit(default: int, maximum: int) -> int:
    raw = request.args.get("limit")
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest("limit: expected a whole number") from None
    if value < 1:
        raise InvalidRequest("limit: must be at least 1")
    return min(value, maximum)


def _text_arg(name: str, *, max_length: int = 256) -> str | None:
    value = request.args.get(name)
    if value is None or value == "":
        return None
    return validate_text(value, name, max_length=max_length)


def _required_text_arg(name: str, *, max_length: int = 256) -> str:
    value = _text_arg(name, max_length=max_length)
    if value is None:
        raise InvalidRequest(f"{name}: required")
    return value


def _time_arg(name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(
            f"{name}: expected an ISO 8601 date or time, e.g. 2025-01-31T12:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _bool_arg(name: str) -> bool | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise InvalidRequest(f"{name}: expected true or false")


def _int_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name}: expected a whole number") from None
    if value < 0:
        raise InvalidRequest(f"{name}: must not be negative")
    return value


def _cursor_codec() -> CursorCodec:
    codec = current_app.extensions.get("rolegate.audit_cursor")
    if codec is None:
        codec = CursorCodec(cursor_secret(get_core().settings))
        current_app.extensions["rolegate.audit_cursor"] = codec
    return codec


def spreadsheet_safe(value: str) -> str:
    """Neutralise cells a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _csv(header: list[str], rows: list[list[str]], filename: str) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([spreadsheet_safe(cell) for cell in header])
    for row in rows:
        writer.writerow([spreadsheet_safe(cell) for cell in row])
    safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
    return Response(
        buffer.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{safe_name}"'},
    )


# --------------------------------------------------------------------------- endpoints


@bp.get("/v1/orgs/<org>/subjects/<path:subject>/permissions")
def permissions(org: str, subject: str):
    _core, snapshot, org = _audit_scope(org)
    subject = validate_text(subject, "subject")
    action = _text_arg("action")
    resource = _text_arg("resource", max_length=MAX_RESOURCE_CHARS)
    require_subject(snapshot, org, subject)
    held = [
        permission
        for permission in effective_permissions(snapshot, subject, org)
        if (action is None or permission.action == action)
        and (resource is None or reads.matches_resource(snapshot, permission.resource, resource))
    ]
    roles = reads.roles_of(snapshot, subject, org)
    return {
        "org": org,
        "subject": subject,
        "kind": "role" if subject in org_names(snapshot, org).roles else subject_kind(subject),
        "revision": snapshot.revision,
        "roles": [
            {"role": role, "path": " -> ".join(path)}
            for role, path in roles.items()
            if role != subject
        ],
        "permissions": [permission.to_dict() for permission in held],
        "hint": reads.query_hint(snapshot, org, action=action, resource=resource),
    }


@bp.get("/v1/orgs/<org>/who-can")
def who_can_endpoint(org: str):
    core, snapshot, org = _audit_scope(org)
    resource = _required_text_arg("resource", max_length=MAX_RESOURCE_CHARS)
    action = _required_text_arg("action")
    limit = _limit(DEFAULT_PAGE, MAX_PAGE)
    query = (org, resource, action)
    cursor = request.args.get("cursor") or None
    after = _cursor_codec().decode(cursor, query) if cursor else None
    entries = who_can(core.engine, snapshot, org, resource, action)
    page, last = page_after(entries, after, limit)
    return {
        "org": org,
        "resource": resource,
        "action": action,
        "revision": snapshot.revision,
        "limit": limit,
        "subjects": [entry.to_dict() for entry in page],
        "next_cursor": _cursor_codec().encode(query, last) if last is not None else None,
        "hint": reads.query_hint(snapshot, org, action=action, resource=resource),
    }


@bp.get("/v1/orgs/<org>/matrix")
def matrix(org: str):
    core, snapshot, org = _audit_scope(org)
    output = request.args.get("format", "json")
    if output not in ("json", "csv"):
        raise InvalidRequest("format: expected json or csv")
    result = access_matrix(core.engine, snapshot, org)
    if output == "csv":
        header, rows = result.to_table()
        return _csv(header, rows, f"{org}-access-matrix-r{snapshot.revision}.csv")
    return result.to_dict()


@bp.get("/v1/orgs/<org>/changes")
def changes(org: str):
    core, snapshot, org = _audit_scope(org)
    since, until = _time_arg("since"), _time_arg("until")
    since_revision = _int_arg("since_revision")
    limit = _limit(DEFAULT_PAGE, MAX_CHANGES_PAGE)
    entries = core.store.changes(
        org=org, since=since, since_revision=since_revision, limit=limit + 1
    )
    more = len(entries) > limit
    if until is not None:
        kept = [entry for entry in entries if entry.at <= until]
        more = more and len(kept) == len(entries)
        entries = kept
    next_since_revision = None
    if more:
        # Pages end on a revision boundary so that `since_revision` continues without a gap.
        boundary = entries[limit].revision
        page = [entry for entry in entries[:limit] if entry.revision != boundary]
        if not page:  # one revision larger than a page: return it whole
            whole = core.store.changes(
                org=org, since_revision=boundary - 1, limit=MAX_REVISION_ENTRIES
            )
            page = [entry for entry in whole if entry.revision == boundary]
        entries = page
        next_since_revision = page[-1].revision
    return {
        "org": org,
        "revision": snapshot.revision,
        "changes": [entry.to_dict() for entry in entries],
        "next_since_revision": next_since_revision,
    }


@bp.get("/v1/orgs/<org>/decisions")
def decisions(org: str):
    core, snapshot, org = _audit_scope(org)
    filters = {
        "subject": _text_arg("subject"),
        "resource": _text_arg("resource", max_length=MAX_RESOURCE_CHARS),
        "action": _text_arg("action"),
        "allowed": _bool_arg("allowed"),
        "since": _time_arg("since"),
        "until": _time_arg("until"),
        "limit": _limit(DEFAULT_PAGE, MAX_SEARCH_LIMIT),
    }
    decision_log = core.decision_log
    if decision_log is None or decision_log.searchable is None:
        raise NotFound(
            "the decision log is not searchable: set ROLEGATE_DECISION_LOG_DB=1 or "
            "ROLEGATE_DECISION_LOG=<file>",
            code="decision_log_disabled",
        )
    found = decision_log.search(org=org, **filters)
    return {
        "org": org,
        "revision": snapshot.revision,
        "source": decision_log.searchable.name,
        "decisions": found,
    }


@bp.get("/v1/orgs/<org>/shadow/disagreements")
def shadow_disagreements(org: str):
    """This worker's latest disagreements of the shadow policy (ROLEGATE_SHADOW_POLICY_DIR)."""
    core, snapshot, org = _audit_scope(org)
    limit = _limit(DEFAULT_PAGE, RECENT_SHADOW_LIMIT)
    shadow = core.shadow
    if shadow is None:
        raise NotFound("no shadow policy: set ROLEGATE_SHADOW_POLICY_DIR", code="shadow_disabled")
    return {
        "org": org,
        "revision": snapshot.revision,
        "shadow": shadow.status(),
        "disagreements": shadow.recent(org, limit),
    }


# --------------------------------------------------------------------------- OpenAPI


_ORG = ORG_PARAM
_LIMIT = query_param(
    "limit",
    f"Page size (default {DEFAULT_PAGE}; larger values are clamped)",
    {"type": "integer", "minimum": 1},
)
_TIME = {"type": "string", "format": "date-time"}
_ERRORS = error_responses(400, 401, 403, 404, 503)
_OBJECT = {"type": "object"}
_AUDIT_NOTE = " Requires `audit` on `/audit` in the org."

OPENAPI_PATHS = {
    "/v1/orgs/{org}/subjects/{subject}/permissions": {
        "get": {
            "summary": "Effective permissions of a subject, with role paths" + _AUDIT_NOTE,
            "parameters": [
                _ORG,
                path_param("subject", "User, API key (`apikey:<id>`) or role"),
                query_param("action", "Only rules of this action"),
                query_param(
                    "resource", "Only rules whose pattern matches this resource", RESOURCE_SCHEMA
                ),
            ],
            "responses": {"200": json_response("rules held", _OBJECT), **_ERRORS},
        }
    },
    "/v1/orgs/{org}/who-can": {
        "get": {
            "summary": "Every subject allowed an action on a resource (paginated)" + _AUDIT_NOTE,
            "parameters": [
                _ORG,
                query_param("resource", "Concrete resource or pattern", RESOURCE_SCHEMA, True),
                query_param("action", "Action", text_schema(), True),
                _LIMIT,
                query_param("cursor", "`next_cursor` of the previous page (opaque)"),
            ],
            "responses": {"200": json_response("allowed subjects", _OBJECT), **_ERRORS},
        }
    },
    "/v1/orgs/{org}/matrix": {
        "get": {
            "summary": "Access matrix: subjects x (resource, action)" + _AUDIT_NOTE,
            "parameters": [
                _ORG,
                query_param("format", "json or csv", {"enum": ["json", "csv"]}),
            ],
            "responses": {
                "200": {
                    "description": "the matrix",
                    "content": {
                        "application/json": {"schema": _OBJECT},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                **_ERRORS,
            },
        }
    },
    "/v1/orgs/{org}/changes": {
        "get": {
            "summary": "Change history of the org's rules, oldest first" + _AUDIT_NOTE,
            "parameters": [
                _ORG,
                query_param("since", "At or after this ISO 8601 time", _TIME),
                query_param("until", "At or before this ISO 8601 time", _TIME),
                query_param(
                    "since_revision",
                    "Revisions after this one (next page)",
                    {"type": "integer", "minimum": 0},
                ),
                _LIMIT,
            ],
            "responses": {"200": json_response("change-log entries", _OBJECT), **_ERRORS},
        }
    },
    "/v1/orgs/{org}/shadow/disagreements": {
        "get": {
            "summary": "Latest disagreements of the shadow policy in this worker, newest first"
            + _AUDIT_NOTE,
            "parameters": [_ORG, _LIMIT],
            "responses": {"200": json_response("disagreements", _OBJECT), **_ERRORS},
        }
    },
    "/v1/orgs/{org}/decisions": {
        "get": {
            "summary": "Search the decision log, newest first" + _AUDIT_NOTE,
            "parameters": [
                _ORG,
                query_param("subject", "Exact subject"),
                query_param("resource", "Exact resource or a prefix ending in *", RESOURCE_SCHEMA),
                query_param("action", "Exact action"),
                query_param("allowed", "true or false", {"type": "boolean"}),
                query_param("since", "At or after this ISO 8601 time", _TIME),
                query_param("until", "At or before this ISO 8601 time", _TIME),
                _LIMIT,
            ],
            "responses": {"200": json_response("decision records", _OBJECT), **_ERRORS},
        }
    },
}
