"""Reverse queries over one policy snapshot: effective permissions, who can, the access matrix.

Every answer is computed from one `Snapshot` and every allow/deny in it is the engine's own
decision (`Engine.check` against that snapshot), so the audit views cannot drift from what
`/v1/check` answers. Only the rules of the org, of the template domain `*` and the role links of
pattern domains that match the org are read: other orgs' subjects and rules never appear.

Names in an org are split in two by the engine's read API (`rolegate.engine.reads`):
- roles: names that some link points to (`g, x, <role>, ...`), subjects of template rules
  (`p, <role>, *, ...`), the built-ins `owner` and `platform-admin` and the default role;
- subjects (users and API keys, `apikey:<id>`): members of relevant links and subjects of the
  org's own rules that are not roles anywhere (a role name is never a principal).
Who-can and the matrix list subjects; a role name is not a subject even though Casbin would
answer for it. The owner rule appears as the pseudo-subject `(owner)` ("whoever owns the
resource"), and a default role that grants to every non-member as `(any other subject)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..engine import CheckRequest, Decision, Engine, Snapshot, reads
from ..engine.model import OWNER_ROLE
from ..engine.reads import Grant, grant_rule
from ..errors import NotFound
from ..rules import TEMPLATE_DOMAIN, Rule, format_rule

OWNER_SUBJECT = "(owner)"
ANY_SUBJECT = "(any other subject)"
API_KEY_PREFIX = "apikey:"
PATH_SEPARATOR = " -> "


# --------------------------------------------------------------------------- names of an org

link_domains = reads.link_domains
grant_domains = reads.grant_domains
org_exists = reads.org_exists


def require_org(snapshot: Snapshot, org: str) -> None:
    if not org_exists(snapshot, org):
        raise NotFound(f"unknown org {org!r}: it has no rules in this policy", code="unknown_org")


@dataclass(frozen=True)
class OrgNames:
    """The names relevant to one org, split into subjects and roles (see the module doc)."""

    subjects: tuple[str, ...]
    roles: frozenset[str]

    @property
    def known(self) -> frozenset[str]:
        return self.roles | frozenset(self.subjects)


def org_names(snapshot: Snapshot, org: str) -> OrgNames:
    subjects = reads.subjects_in(snapshot, org)
    others = reads.names_in(snapshot, org) - frozenset(subjects)
    return OrgNames(subjects, reads.org_roles(snapshot, org) | others)


def require_subject(snapshot: Snapshot, org: str, subject: str) -> None:
    if subject not in org_names(snapshot, org).known:
        raise NotFound(
            f"unknown subject {subject!r} in org {org!r}: no rule or role link names it",
            code="unknown_subject",
        )


def subject_kind(subject: str) -> str:
    if subject == OWNER_SUBJECT:
        return "owner"
    if subject == ANY_SUBJECT:
        return "anyone"
    return "apikey" if subject.startswith(API_KEY_PREFIX) else "user"


# --------------------------------------------------------------------------- effective permissions


@dataclass(frozen=True)
class Permission:
    """One rule a subject holds in an org, and the role path that gives it to the subject."""

    grant: Grant
    path: tuple[str, ...]
    condition: str | None = None  # "owner": only when the subject owns the resource

    @property
    def rule(self) -> Rule:
        return grant_rule(self.grant)

    @property
    def resource(self) -> str:
        return self.grant.resource

    @property
    def action(self) -> str:
        return self.grant.action

    @property
    def effect(self) -> str:
        return self.grant.effect

    def to_dict(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "action": self.action,
            "effect": self.effect,
            "rule": format_rule(self.rule),
            "from": "template" if self.grant.org == TEMPLATE_DOMAIN else "org",
            "path": PATH_SEPARATOR.join(self.path),
            "roles": list(self.path[1:]),
            "condition": self.condition,
        }


def _held_rules(
    snapshot: Snapshot, org: str, roles: dict[str, tuple[str, ...]], condition: str | None
) -> list[Permission]:
    return [
        Permission(grant, path, condition)
        for grant, path in reads.held_grants(snapshot, org, roles)
    ]


def effective_permissions(snapshot: Snapshot, subject: str, org: str) -> list[Permission]:
    """Every rule `subject` holds in `org` with its role path (deny rules included).

    Rules held only while owning a resource (through the `owner` role) carry the condition
    `owner`. Roles come from the snapshot exactly as a check computes them (links of the org, of
    `*` and of matching pattern domains; the default role for non-members); token roles are
    per-request and not included.
    """
    roles = dict(reads.roles_of(snapshot, subject, org))
    held = _held_rules(snapshot, org, roles, None)
    if snapshot.shape.owner_role:
        as_owner = reads.roles_of(snapshot, subject, org, owner=True)
        extra = {name: path for name, path in as_owner.items() if name not in roles}
        held += _held_rules(snapshot, org, extra, "owner")
    held.sort(key=lambda p: (p.resource, p.action, p.effect, p.condition or "", p.path))
    return held


# --------------------------------------------------------------------------- who can


@dataclass(frozen=True)
class WhoCanEntry:
    subject: str
    via: str  # direct | role | default_role | owner
    decision: Decision = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        rule = self.decision.rule
        return {
            "subject": self.subject,
            "kind": subject_kind(self.subject),
            "via": self.via,
            "path": PATH_SEPARATOR.join(self.decision.path),
            "roles": list(self.decision.path[1:]),
            "rule": format_rule(rule) if rule else None,
        }


def _via(snapshot: Snapshot, org: str, subject: str, decision: Decision) -> str:
    path = decision.path
    if len(path) < 2:
        return "direct"
    default = snapshot.default_role
    if (
        default
        and path[1] == default
        and not snapshot.is_member(subject, org)
        and default not in snapshot.role_paths(subject, org)
    ):
        return "default_role"
    return "role"


def who_can(
    engine: Engine, snapshot: Snapshot, org: str, resource: str, action: str
) -> list[WhoCanEntry]:
    """Every subject of `org` allowed `action` on `resource`, sorted by subject, complete.

    `resource` may be concrete (`/projects/42`) or a pattern, which is decided as a resource
    named like the pattern. Adds `(owner)` when owning the resource is what grants it and
    `(any other subject)` when the default role grants it to every non-member.
    """
    entries = []
    for subject in org_names(snapshot, org).subjects:
        decision = engine.check(CheckRequest(subject, org, resource, action), snapshot)
        if decision.allowed:
            entries.append(WhoCanEntry(subject, _via(snapshot, org, subject, decision), decision))
    # A name the policy cannot contain (rules may not hold parentheses) stands for "anyone else".
    anyone = engine.check(CheckRequest(ANY_SUBJECT, org, resource, action), snapshot)
    if anyone.allowed:
        entries.append(WhoCanEntry(ANY_SUBJECT, "default_role", anyone))
    elif snapshot.shape.owner_role:
        owner = engine.check(
            CheckRequest(OWNER_SUBJECT, org, resource, action, owner=OWNER_SUBJECT), snapshot
        )
        if owner.allowed:
            entries.append(WhoCanEntry(OWNER_SUBJECT, "owner", owner))
    entries.sort(key=lambda entry: entry.subject)
    return entries


def page_after(
    entries: Sequence[WhoCanEntry], after: str | None, limit: int
) -> tuple[list[WhoCanEntry], str | None]:
    """Keyset page: the first `limit` entries whose subject sorts after `after`, and the last
    subject of the page when more follow (else None)."""
    remaining = [entry for entry in entries if after is None or entry.subject > after]
    page = remaining[:limit]
    more = len(remaining) > limit
    return page, (page[-1].subject if more and page else None)


# --------------------------------------------------------------------------- access matrix


def cell_value(decision: Decision) -> str:
    """`allow`, `deny` (a deny rule matched or evaluation failed) or `none` (nothing grants it)."""
    if decision.allowed:
        return "allow"
    if decision.rule is not None or decision.error:
        return "deny"
    return "none"


@dataclass(frozen=True)
class AccessMatrix:
    org: str
    revision: int
    columns: tuple[tuple[str, str], ...]  # (resource pattern, action)
    rows: tuple[tuple[str, tuple[str, ...]], ...]  # (subject, cell per column)
    roles: dict[str, dict[str, str]]  # subject -> role -> path

    def to_dict(self) -> dict[str, Any]:
        return {
            "org": self.org,
            "revision": self.revision,
            "columns": [{"resource": r, "action": a} for r, a in self.columns],
            "rows": [
                {
                    "subject": subject,
                    "kind": subject_kind(subject),
                    "roles": [
                        {"role": role, "path": path}
                        for role, path in self.roles.get(subject, {}).items()
                    ],
                    "cells": list(cells),
                }
                for subject, cells in self.rows
            ],
        }

    def to_table(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows for CSV and text tables: `subject`, then `<action> <resource>`."""
        header = ["subject", *(f"{action} {resource}" for resource, action in self.columns)]
        return header, [[subject, *cells] for subject, cells in self.rows]


def access_matrix(engine: Engine, snapshot: Snapshot, org: str) -> AccessMatrix:
    """Subjects x (resource pattern, action) of every rule that applies in `org`.

    Each cell is the engine's decision for a resource named exactly like the pattern, so a more
    specific deny (`/documents/finance/*`) shows in its own column. The `(owner)` row is what an
    owner of such a resource gets through the owner rule.
    """
    grants = reads.grants_in(snapshot, org)
    columns = tuple(sorted({(grant.resource, grant.action) for grant in grants}))
    names = org_names(snapshot, org)
    rows = []
    roles: dict[str, dict[str, str]] = {}
    for subject in names.subjects:
        cells = tuple(
            cell_value(engine.check(CheckRequest(subject, org, resource, action), snapshot))
            for resource, action in columns
        )
        rows.append((subject, cells))
        held = reads.roles_of(snapshot, subject, org)
        roles[subject] = {
            role: PATH_SEPARATOR.join(path) for role, path in held.items() if role != subject
        }
    if snapshot.shape.owner_role and any(grant.subject == OWNER_ROLE for grant in grants):
        cells = tuple(
            cell_value(
                engine.check(
                    CheckRequest(OWNER_SUBJECT, org, resource, action, owner=OWNER_SUBJECT),
                    snapshot,
                )
            )
            for resource, action in columns
        )
        rows.append((OWNER_SUBJECT, cells))
    rows.sort(key=lambda row: row[0])
    return AccessMatrix(org, snapshot.revision, columns, tuple(rows), roles)
