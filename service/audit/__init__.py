"""Audit: who can do what (reverse queries over a policy snapshot) and what happened (decision log).

Nothing here imports flask: the API, the console and the CLI call these functions.
"""

from .access import PLATFORM_ADMIN_ROLE, ensure_can_audit, is_platform_admin
from .cursor import CursorCodec, cursor_secret
from .decision_log import REQUEST_CONTEXT, DecisionLog, decision_record
from .pages import Page, change_page, who_can_page
from .queries import (
    ANY_SUBJECT,
    OWNER_SUBJECT,
    AccessMatrix,
    OrgNames,
    Permission,
    WhoCanEntry,
    access_matrix,
    effective_permissions,
    org_exists,
    org_names,
    require_org,
    require_subject,
    who_can,
)

__all__ = [
    "ANY_SUBJECT",
    "OWNER_SUBJECT",
    "PLATFORM_ADMIN_ROLE",
    "REQUEST_CONTEXT",
    "AccessMatrix",
    "CursorCodec",
    "DecisionLog",
    "OrgNames",
    "Page",
    "Permission",
    "WhoCanEntry",
    "access_matrix",
    "change_page",
    "cursor_secret",
    "decision_record",
    "effective_permissions",
    "ensure_can_audit",
    "is_platform_admin",
    "org_exists",
    "org_names",
    "require_org",
    "require_subject",
    "who_can",
    "who_can_page",
]
