"""The web console (`/console`): server-rendered page shells, data fetched from the audit API.

The pages hold no data of their own: browser navigation cannot carry the bearer token, so the
plain JavaScript in `static/console.js` reads the token from session storage, calls the JSON API
with an `Authorization` header and fills the tables with DOM text nodes (never HTML). Jinja
escapes the names echoed from the URL. A strict Content-Security-Policy allows only this
server's own script and stylesheet: no inline script, no external assets.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template

from ..core import validate_org, validate_text
from .context import caller
from .openapi import ORG_PARAM, error_responses, json_response, path_param

bp = Blueprint("console", __name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _page(template: str, **context) -> Response:
    response = Response(render_template(template, **context), mimetype="text/html")
    response.headers.update(SECURITY_HEADERS)
    return response


@bp.get("/console")
def index():
    return _page("console/index.html", page="index", org=None, subject=None)


@bp.get("/console/orgs/<org>")
def org_page(org: str):
    return _page("console/org.html", page="org", org=validate_org(org), subject=None)


@bp.get("/console/orgs/<org>/subjects/<subject>")
def subject_page(org: str, subject: str):
    return _page(
        "console/subject.html",
        page="subject",
        org=validate_org(org),
        subject=validate_text(subject, "subject"),
    )


@bp.get("/v1/whoami")
def whoami():
    """The caller as the server authenticated it: the console validates a pasted token here."""
    principal = caller()
    return {
        "subject": principal.subject,
        "org": principal.org,
        "kind": principal.kind,
        "roles": list(principal.roles),
        "issuer": principal.issuer,
    }


def _html_page(summary: str, parameters: list) -> dict:
    return {
        "get": {
            "summary": summary,
            "security": [],
            "parameters": parameters,
            "responses": {
                "200": {
                    "description": "HTML page (data is loaded by the page with the token)",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                # an org id or subject the API would refuse: the one JSON error shape
                **(error_responses(400) if parameters else {}),
            },
        }
    }


_SUBJECT = path_param("subject", "A subject (user, API key `apikey:<id>`) or role")


_WHOAMI = {
    "type": "object",
    "required": ["subject", "org", "kind", "roles", "issuer"],
    "properties": {
        "subject": {"type": "string"},
        "org": {"type": ["string", "null"]},
        "kind": {"type": "string"},
        "roles": {"type": "array", "items": {"type": "string"}},
        "issuer": {"type": ["string", "null"]},
    },
}

OPENAPI_PATHS = {
    "/v1/whoami": {
        "get": {
            "summary": "The authenticated caller (subject, org, kind, token roles)",
            "responses": {
                "200": json_response("the caller", _WHOAMI),
                **error_responses(400, 401, 403, 503),
            },
        }
    },
    "/console": _html_page("Web console: sign in and pick an org", []),
    "/console/orgs/{org}": _html_page(
        "Web console: members, API keys, org rules, access matrix, who can, changes, decisions",
        [ORG_PARAM],
    ),
    "/console/orgs/{org}/subjects/{subject}": _html_page(
        "Web console: a subject's effective permissions", [ORG_PARAM, _SUBJECT]
    ),
}
