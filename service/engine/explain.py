"""Deny explanations: why a check was denied and the nearest ways it would be allowed.

Every answer here is asked of the engine (`reads.decide` on hypothetical requests, the read
API for names), never re-derived, so an explanation cannot disagree with a decision. Stable
reason codes (docs/audit.md):

- `evaluation_error`: the policy could not be evaluated for this check (fail closed);
- `denied_by_rule`: a deny rule decided (`deny_rule`: the rule and the role path to it);
- `unknown_org`: the org has no rules or links of its own;
- `owner_required`: the subject would be allowed if it owned the resource;
- `no_grant`: no rule grants the subject this action on this resource.

`would_allow.roles`: the nearest roles of the org that would allow the check if the subject
held them (each with the rule it would be allowed by), i.e. the granting roles that do not
already reach another granting role. Deterministic: sorted, the same for the same snapshot.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..rules import format_rule
from . import reads
from .model import OWNER_ROLE
from .snapshot import Snapshot
from .types import CheckRequest, Decision

if TYPE_CHECKING:
    from . import Engine

CODES = ("evaluation_error", "denied_by_rule", "unknown_org", "owner_required", "no_grant")
MAX_ROLES_TRIED = 256  # an org with more roles gets the first ones, by name (`roles_truncated`)
MAX_ROLES_LISTED = 10


def _allowed_with(
    engine: Engine, snapshot: Snapshot, request: CheckRequest, **change: Any
) -> Decision:
    return reads.decide(engine, replace(request, **change), snapshot)


def granting_roles(
    engine: Engine, snapshot: Snapshot, request: CheckRequest
) -> tuple[list[tuple[str, Decision]], bool]:
    """(role, the decision it would get) for the nearest granting roles; True when truncated."""
    held = reads.roles_of(
        snapshot,
        request.subject,
        request.org,
        extra_roles=request.extra_roles,
        owner=bool(request.owner) and request.owner == request.subject,
    )
    names = sorted(reads.assignable_roles(snapshot, request.org) - {OWNER_ROLE} - set(held))
    truncated = len(names) > MAX_ROLES_TRIED
    granting: dict[str, Decision] = {}
    for role in names[:MAX_ROLES_TRIED]:
        decision = _allowed_with(
            engine, snapshot, request, extra_roles=(*request.extra_roles, role)
        )
        if decision.allowed:
            granting[role] = decision
    nearest = [
        (role, decision)
        for role, decision in granting.items()
        if not any(
            other != role and other in granting
            for other in reads.role_reach(snapshot, role, request.org)
        )
    ]
    return nearest, truncated


def explain_denial(
    engine: Engine,
    request: CheckRequest,
    decision: Decision,
    snapshot: Snapshot | None = None,
    *,
    nearest: bool = True,
) -> dict[str, Any]:
    """`code`, `codes`, `deny_rule`, `would_allow` for a denied check ({} for an allow).

    `nearest=False` leaves out the granting roles (`would_allow.roles` is None): they cost one
    decision per role of the org, so a batch lists them for its first denials only.
    """
    if decision.allowed:
        return {}
    snapshot = snapshot or engine.snapshot
    codes: list[str] = []
    explanation: dict[str, Any] = {}
    if decision.error:
        codes.append("evaluation_error")
    elif decision.rule is not None and reads.grant_of(decision.rule) is not None:
        codes.append("denied_by_rule")
        explanation["deny_rule"] = {
            "rule": format_rule(decision.rule),
            "path": " -> ".join(decision.path),
        }
    known = reads.org_exists(snapshot, request.org)
    if not known:
        codes.append("unknown_org")
    would_allow: dict[str, Any] = {"roles": [], "as_owner": None}
    if known and not decision.error:
        if snapshot.shape.owner_role and request.owner != request.subject:
            as_owner = _allowed_with(engine, snapshot, request, owner=request.subject)
            if as_owner.allowed:
                codes.append("owner_required")
                would_allow["as_owner"] = {
                    "owner": request.subject,
                    "rule": format_rule(as_owner.rule) if as_owner.rule else None,
                }
        if nearest:
            found, truncated = granting_roles(engine, snapshot, request)
            would_allow["roles"] = [
                {"role": role, "rule": format_rule(granted.rule) if granted.rule else None}
                for role, granted in found[:MAX_ROLES_LISTED]
            ]
            if truncated or len(found) > MAX_ROLES_LISTED:
                would_allow["roles_truncated"] = True
        else:
            would_allow["roles"] = None
    if "denied_by_rule" not in codes and "evaluation_error" not in codes:
        codes.append("no_grant")
    codes.sort(key=CODES.index)
    return {"code": codes[0], "codes": codes, **explanation, "would_allow": would_allow}


__all__ = ["CODES", "explain_denial", "granting_roles"]
