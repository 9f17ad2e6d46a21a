"""`POST /v1/plan`: the condition under which the caller may act on every row of a template."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from ..core import MAX_RESOURCE_CHARS, CheckInput, validate_org, validate_text
from ..engine.plan import (
    MAX_TEMPLATE_CHARS,
    PlanNotExpressible,
    PlanRequest,
    TemplateError,
    member_orgs,
    plan_condition,
)
from ..errors import InvalidRequest, RolegateError
from .context import caller, get_core, json_body
from .openapi import ORG_SCHEMA, error_responses, json_request, json_response, text_schema

bp = Blueprint("plan", __name__)

PLAN_FIELDS = {"action": True, "resource": True, "org": False}


class PlanUnavailable(RolegateError):
    """The policy cannot be stated as an exact condition (never an approximate plan)."""

    code = "plan_not_expressible"
    http_status = 422


def parse_plan_input(data: Any) -> CheckInput:
    """`{"action", "resource", "org"?}`, validated like a check's fields."""
    if not isinstance(data, dict):
        raise InvalidRequest("body: expected a JSON object")
    unknown = sorted(set(data) - set(PLAN_FIELDS))
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: unknown field")
    for field, required in PLAN_FIELDS.items():
        if required and field not in data:
            raise InvalidRequest(f"{field}: required")
    org = data.get("org")
    return CheckInput(
        resource=validate_text(data["resource"], "resource", max_length=MAX_RESOURCE_CHARS),
        action=validate_text(data["action"], "action"),
        org=None if org is None else validate_org(org),
    )


@bp.post("/v1/plan")
def plan():
    principal = caller()
    wanted = parse_plan_input(json_body())
    core = get_core()
    snapshot = core.engine.snapshot
    extra_roles: tuple[str, ...] = ()
    if principal.org is None and wanted.org is None:
        orgs = tuple(member_orgs(snapshot, principal.subject))
    else:
        request = core.request_for(principal, wanted)  # the token's org is authoritative
        orgs, extra_roles = (request.org,), request.extra_roles
    plan_request = PlanRequest(principal.subject, wanted.action, wanted.resource, orgs, extra_roles)
    try:
        condition = plan_condition(snapshot, plan_request)
    except TemplateError as exc:
        raise InvalidRequest(f"resource: {exc}", code=exc.code) from None
    except PlanNotExpressible as exc:
        raise PlanUnavailable(str(exc), code=exc.code) from None
    return {
        "subject": principal.subject,
        "action": wanted.action,
        "resource": wanted.resource,
        "orgs": list(orgs),
        "revision": snapshot.revision,
        "condition": condition,
    }


OPENAPI_PATHS = {
    "/v1/plan": {
        "post": {
            "summary": "The condition under which the token's subject may act on a template's "
            "rows (see docs/data-filtering.md)",
            "requestBody": json_request(
                {
                    "type": "object",
                    "required": ["action", "resource"],
                    "additionalProperties": False,
                    "properties": {
                        "action": text_schema(),
                        "resource": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_TEMPLATE_CHARS,
                            "description": "Collection template: literal segments and :name "
                            "parameters (not named org or owner), e.g. /documents/:id",
                        },
                        "org": {
                            **ORG_SCHEMA,
                            "type": ["string", "null"],
                            "description": "Only when the token names no org; without one, "
                            "every org the subject is a member of.",
                        },
                    },
                }
            ),
            "responses": {
                "200": json_response(
                    "the plan",
                    {
                        "type": "object",
                        "required": [
                            "subject", "action", "resource", "orgs", "revision", "condition",
                        ],
                        "properties": {
                            "subject": {"type": "string"},
                            "action": {"type": "string"},
                            "resource": {"type": "string"},
                            "orgs": {"type": "array", "items": {"type": "string"}},
                            "revision": {"type": "integer"},
                            "condition": {
                                "description": "true | false | {and|or: [C]} | {not: C} | "
                                "{eq: [F, v]} | {in: [F, [v]]} | {like: [F, glob]}"
                            },
                        },
                    },
                ),
                **error_responses(400, 401, 403, 415, 422, 503),
            },
        }
    },
}  # fmt: skip
