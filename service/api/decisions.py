"""Decision endpoints: `POST /v1/check` and `POST /v1/check/batch`."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from ..core import MAX_BATCH, Rolegate, parse_check_input, validate_min_revision
from ..errors import InvalidRequest, PayloadTooLarge
from ..identity import Principal
from ..results import BatchResult, DecisionResult
from .context import caller, get_core, json_body
from .openapi import error_responses, json_request, json_response

bp = Blueprint("decisions", __name__)


def decision_json(result: DecisionResult) -> dict[str, Any]:
    """The answer of `/v1/check` (and of each batch item): `reason` only when asked for."""
    answer: dict[str, Any] = {
        "allowed": result.allowed,
        "subject": result.subject,
        "org": result.org,
        "resource": result.resource,
        "action": result.action,
        "decision_id": result.decision_id,
        "revision": result.revision,
    }
    if result.explain:
        answer["reason"] = result.reason
    return answer


def batch_json(batch: BatchResult) -> dict[str, Any]:
    return {
        "results": [decision_json(result) for result in batch.results],
        "revision": batch.revision,
    }


@bp.post("/v1/check")
def check():
    principal = caller()
    return check_answer(get_core(), principal, json_body())


@bp.post("/v1/check/batch")
def check_batch():
    principal = caller()
    return batch_answer(get_core(), principal, json_body())


def check_answer(core: Rolegate, principal: Principal, body: Any) -> dict[str, Any]:
    """The answer of `/v1/check` to `body` (errors raise); shared with the fast path."""
    return decision_json(core.check(principal, parse_check_input(body)))


def batch_answer(core: Rolegate, principal: Principal, body: Any) -> dict[str, Any]:
    """The answer of `/v1/check/batch` to `body` (errors raise); shared with the fast path."""
    if not isinstance(body, dict):
        raise InvalidRequest("body: expected a JSON object with a `checks` list")
    unknown = sorted(set(body) - {"checks", "min_revision"})
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: unknown field")
    checks = body.get("checks")
    if not isinstance(checks, list):
        raise InvalidRequest("checks: expected a list of check objects")
    if not checks:
        raise InvalidRequest("checks: must hold at least one check")
    if len(checks) > MAX_BATCH:
        raise PayloadTooLarge(f"checks: at most {MAX_BATCH} per batch, got {len(checks)}")
    inputs = [parse_check_input(item, f"checks[{i}].") for i, item in enumerate(checks)]
    core.ensure_revision(validate_min_revision(body.get("min_revision")))
    return batch_json(core.check_batch(principal, inputs))


_AUTH_ERRORS = error_responses(400, 401, 403, 413, 415, 503)
_MIN_REVISION = {
    "type": ["integer", "null"],
    "minimum": 0,
    "maximum": 2**63 - 1,
    "description": "Read-your-writes: decide with at least this policy revision (a write's "
    "response gives it); one catch-up with the store, then 400 `revision_ahead` (the store has "
    "no such revision) or 503 `revision_unavailable` (the store could not be read in time).",
}
OPENAPI_PATHS = {
    "/v1/check": {
        "post": {
            "summary": "Decide one check for the token's subject",
            "requestBody": json_request({"$ref": "#/components/schemas/Check"}),
            "responses": {
                "200": json_response("the decision", {"$ref": "#/components/schemas/Decision"}),
                **_AUTH_ERRORS,
            },
        }
    },
    "/v1/check/batch": {
        "post": {
            "summary": "Decide 1 to 1,000 checks against one policy revision",
            "requestBody": json_request(
                {
                    "type": "object",
                    "required": ["checks"],
                    "additionalProperties": False,
                    "properties": {
                        "min_revision": _MIN_REVISION,
                        "checks": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_BATCH,
                            "items": {"$ref": "#/components/schemas/Check"},
                        },
                    },
                }
            ),
            "responses": {
                "200": json_response(
                    "decisions in request order",
                    {
                        "type": "object",
                        "properties": {
                            "results": {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/Decision"},
                            },
                            "revision": {"type": "integer"},
                        },
                    },
                ),
                **_AUTH_ERRORS,
            },
        }
    },
}
