"""Who may audit an org: decided by the engine itself.

The caller must be allowed the action `audit` on the resource `/audit` in the org. A token bound
to another org is refused (`org_mismatch`) unless its subject holds `platform-admin` through role
links of the template domain `*` (`g, <subject>, platform-admin, *`).
"""

from __future__ import annotations

from ..engine import CheckRequest, Engine, Snapshot
from ..errors import Forbidden
from ..identity import Principal
from ..rules import TEMPLATE_DOMAIN

AUDIT_RESOURCE = "/audit"
AUDIT_ACTION = "audit"
PLATFORM_ADMIN_ROLE = "platform-admin"


def is_platform_admin(snapshot: Snapshot, subject: str) -> bool:
    """Whether `subject` holds `platform-admin` through links of the `*` domain."""
    index = snapshot.domains.get(TEMPLATE_DOMAIN)
    if index is None:
        return False
    seen, frontier = {subject}, [subject]
    while frontier:
        reached = []
        for name in frontier:
            for role in index.links.get(name, ()):
                if role == PLATFORM_ADMIN_ROLE:
                    return True
                if role not in seen:
                    seen.add(role)
                    reached.append(role)
        frontier = reached
    return False


def ensure_can_audit(
    engine: Engine,
    snapshot: Snapshot,
    principal: Principal,
    org: str,
    *,
    trust_token_roles: bool = False,
) -> None:
    """Raise Forbidden unless `principal` may audit `org` (see the module doc)."""
    cross_org = principal.org is not None and principal.org != org
    if cross_org and not is_platform_admin(snapshot, principal.subject):
        raise Forbidden(f"the token is for org {principal.org!r}, not {org!r}", code="org_mismatch")
    extra = tuple(principal.roles) if trust_token_roles and principal.org == org else ()
    request = CheckRequest(principal.subject, org, AUDIT_RESOURCE, AUDIT_ACTION, extra_roles=extra)
    if not engine.check(request, snapshot).allowed:
        raise Forbidden(
            f"{principal.subject!r} may not audit org {org!r}: the policy must allow "
            f"`{AUDIT_ACTION}` on `{AUDIT_RESOURCE}`",
            code="forbidden",
        )
