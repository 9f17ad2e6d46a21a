"""Who may audit an org: decided by the engine itself.

The caller must be allowed the action `audit` on the resource `/audit` in the org, asked with the
core's one principal -> request rule (`Rolegate.principal_request`: a principal named like a
role is refused, trusted token roles count in the token's own org only). A token bound to another
org is refused (`org_mismatch`) unless its subject holds `platform-admin` through role links of
the template domain `*` (`g, <subject>, platform-admin, *`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..engine import Snapshot
from ..engine.reads import PLATFORM_ADMIN_ROLE
from ..errors import Forbidden
from ..identity import Principal
from ..rules import TEMPLATE_DOMAIN

if TYPE_CHECKING:
    from ..core import Rolegate

AUDIT_RESOURCE = "/audit"
AUDIT_ACTION = "audit"


def is_platform_admin(snapshot: Snapshot, subject: str) -> bool:
    """Whether `subject` holds `platform-admin` through links of the `*` domain."""
    if subject == PLATFORM_ADMIN_ROLE:  # Casbin's g(x, x): the role itself is no subject
        return False
    return PLATFORM_ADMIN_ROLE in snapshot.role_paths(subject, TEMPLATE_DOMAIN)


def ensure_can_audit(core: Rolegate, snapshot: Snapshot, principal: Principal, org: str) -> None:
    """Raise Forbidden unless `principal` may audit `org` (see the module doc)."""
    request = core.principal_request(
        principal, org, AUDIT_RESOURCE, AUDIT_ACTION, snapshot=snapshot
    )
    cross_org = principal.org is not None and principal.org != org
    if cross_org and not is_platform_admin(snapshot, principal.subject):
        raise Forbidden(f"the token is for org {principal.org!r}, not {org!r}", code="org_mismatch")
    if not core.engine.check(request, snapshot).allowed:
        raise Forbidden(
            f"{principal.subject!r} may not audit org {org!r}: the policy must allow "
            f"`{AUDIT_ACTION}` on `{AUDIT_RESOURCE}`",
            code="forbidden",
        )
