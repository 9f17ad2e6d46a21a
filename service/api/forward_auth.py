"""Forward-auth for gateways: `/v1/forward-auth` (nginx, Caddy, Traefik) and Envoy's ext_authz.

The gateway asks before it forwards a request. The original method and URI come from
`X-Forwarded-Method` + `X-Forwarded-Uri` (Traefik, Caddy) or `X-Original-Method` +
`X-Original-URI` (nginx); under `/v1/forward-auth/envoy/...` (Envoy's HTTP ext_authz with
`path_prefix`) they are this request's own method and path. The credential is the forwarded
`Authorization` (or `X-API-Key`) header. 200 allows, with the `X-Rolegate-*` headers for the
upstream; 401 asks for credentials; 403 denies; 503 means no decision could be made.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import quote

from flask import Blueprint, request
from flask.blueprints import BlueprintSetupState
from werkzeug.datastructures import Headers
from werkzeug.routing import BaseConverter

from ..core import CheckInput, parse_check_input
from ..errors import InvalidRequest, RolegateError, ServiceUnavailable
from ..forwarding import action_for, header_value, method_actions, mounted, request_path
from ..identity import Principal
from .context import caller, get_core
from .errors import error_response
from .openapi import error_responses, json_response

log = logging.getLogger("rolegate.api")

bp = Blueprint("forward_auth", __name__)

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
ENVOY_PREFIX = "/v1/forward-auth/envoy"
HEADER_PAIRS = (
    ("X-Forwarded-Method", "X-Forwarded-Uri"),
    ("X-Original-Method", "X-Original-URI"),
)


class AnyTailConverter(BaseConverter):
    """The rest of the path, empty or starting with '/' (Envoy's `//x` must reach us as is)."""

    regex = ".*"
    part_isolating = False


# Recorded before the routes: the converter must exist when the rules are added.
@bp.record_once
def _register_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters.setdefault("anytail", AnyTailConverter)


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    subject: str
    org: str
    decision_id: str


def decide(principal: Principal, check: CheckInput) -> Verdict:
    """The decision, through the core exactly as `/v1/check` makes it (the one use of its result).

    Anything but a typed error means no decision could be made: 503, never an allow.
    """
    try:
        result = get_core().check(principal, check)
    except RolegateError:
        raise
    except Exception:
        log.exception("forward-auth: the decision failed")
        raise ServiceUnavailable(
            "the decision could not be made", code="decision_unavailable"
        ) from None
    return Verdict(result.allowed, result.subject, result.org, result.decision_id)


def forwarded_request(headers: Headers) -> tuple[str, str]:
    """(method, URI) of the original request from the gateway's header pair.

    Both pairs present and different: a spoofed or misconfigured hop (400).
    """
    found = []
    for method_header, uri_header in HEADER_PAIRS:
        method, uri = headers.get(method_header), headers.get(uri_header)
        if method is None and uri is None:
            continue
        if method is None or uri is None:
            raise InvalidRequest(f"{method_header} and {uri_header} must be sent together")
        found.append((method.strip().upper(), uri.strip()))
    if not found:
        names = " or ".join(" + ".join(pair) for pair in HEADER_PAIRS)
        raise InvalidRequest(f"no original request: send {names}")
    if len(set(found)) > 1:
        raise InvalidRequest(
            "X-Forwarded-Method/-Uri and X-Original-Method/-URI disagree: "
            "the gateway must overwrite or strip client-sent copies"
        )
    return found[0]


def envoy_original_uri() -> str:
    """The original request target Envoy appended to its `path_prefix` (raw, not decoded)."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw is None:
        # granian passes no raw target. Its PATH_INFO is the path percent-decoded once (as
        # latin-1 code points of the bytes, PEP 3333); quoting it again lets `request_path`
        # decode it exactly once, and an encoded `?` or `%` stays part of the path.
        try:
            raw = quote(request.environ.get("PATH_INFO", "").encode("latin-1"), safe="/")
        except UnicodeEncodeError:
            raise InvalidRequest("the request path is not a WSGI (latin-1) string") from None
    original = raw[len(ENVOY_PREFIX) :] if raw.startswith(ENVOY_PREFIX + "/") else None
    if original is None:
        raise InvalidRequest(f"the request target must start with {ENVOY_PREFIX}/")
    return original


def check_for(method: str, uri: str, org: str | None) -> CheckInput:
    settings = get_core().settings
    resource = mounted(
        request_path(uri), settings.forward_auth_strip_prefix, settings.forward_auth_mount
    )
    action = action_for(method, method_actions(settings.forward_auth_actions))
    return parse_check_input({"resource": resource, "action": action, "org": org})


def answer(method: str, uri: str, org: str | None):
    check = check_for(method, uri, org)
    verdict = decide(caller(), check)
    headers = {
        "X-Rolegate-Subject": header_value(verdict.subject),
        "X-Rolegate-Org": header_value(verdict.org),
        "X-Rolegate-Decision-Id": verdict.decision_id,
    }
    if not verdict.allowed:
        response = error_response(
            403, "denied", f"{verdict.subject} may not {check.action} {check.resource}"
        )
        response.headers.extend(headers)
        return response
    body = {
        "allowed": True,
        "subject": verdict.subject,
        "org": verdict.org,
        "resource": check.resource,
        "action": check.action,
        "decision_id": verdict.decision_id,
    }
    return body, 200, headers


@bp.route("/v1/forward-auth", methods=METHODS)
def forward_auth():
    method, uri = forwarded_request(request.headers)
    return answer(method, uri, request.args.get("org"))


@bp.route(ENVOY_PREFIX + "/<anytail:path>", methods=METHODS, merge_slashes=False)
def envoy(path: str):
    # The client's query string reaches us here, so it never names the org.
    return answer(request.method, envoy_original_uri(), None)


_ANSWERS = {
    "200": {
        "description": "allowed; the `X-Rolegate-Subject`, `X-Rolegate-Org` and "
        "`X-Rolegate-Decision-Id` headers are for the upstream (non-ASCII percent-encoded)",
        **json_response("the decision", {"type": "object"}),
    },
    **error_responses(400, 401, 403, 503),
}
_ANSWERS["403"]["description"] = "denied (`denied`), or no action for the method"


def _operations(summary: str, parameters: list) -> dict:
    operation = {"summary": summary, "parameters": parameters, "responses": _ANSWERS}
    # HEAD is GET's (OpenAPI has no head of its own here); OPTIONS is forwarded like any method.
    return {method.lower(): operation for method in METHODS if method != "HEAD"}


def _header(name: str, description: str) -> dict:
    return {"name": name, "in": "header", "schema": {"type": "string"}, "description": description}


OPENAPI_PATHS = {
    "/v1/forward-auth": _operations(
        "Gateway forward-auth: decide the original request (any method)",
        [
            _header("X-Forwarded-Method", "original method (Traefik, Caddy)"),
            _header("X-Forwarded-Uri", "original URI (Traefik, Caddy)"),
            _header("X-Original-Method", "original method (nginx)"),
            _header("X-Original-URI", "original URI (nginx)"),
            {
                "name": "org",
                "in": "query",
                "schema": {"type": "string"},
                "description": "the organisation, only for tokens that name none",
            },
        ],
    ),
    ENVOY_PREFIX + "/{path}": _operations(
        "Envoy HTTP ext_authz: decide this request's own method and path",
        [
            {
                "name": "path",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": "the original path (Envoy's `path_prefix` is this route)",
            }
        ],
    ),
}
