"""The read API over a `Snapshot`: what the rules mean, asked by admin, audit and policy tools.

Every reading of Casbin's domain, role and pattern semantics outside a decision lives here, so
the admin guards, the audit views and the impact report cannot drift from what `/v1/check`
answers (decisions themselves: `Engine.check`, or `decide` below).

Names: a name is a *role* when it is the target of a role link (`g, x, <role>, d`) in any
domain, the subject of a template rule (`p, <role>, *, ...`), the built-in `owner` or
`platform-admin`, or the default role. Any other name with links or rules of its own is a
*subject* (a user or an API key). Casbin does not tell the two apart (`g(x, x, d)` is true), so
a principal named like a role is refused before it reaches a decision (see `is_role_name`).

Rules are tuples (memory); `grant_of` and `link_of` give their fields names.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from ..rules import TEMPLATE_DOMAIN, Rule
from . import coverage
from .model import OWNER_ROLE
from .patterns import PatternError, compile_matcher, domain_applies
from .snapshot import MAX_LINKS_FOLLOWED, DomainIndex, RolePaths, Snapshot
from .types import CheckRequest, Decision

if TYPE_CHECKING:
    from . import Engine

PLATFORM_ADMIN_ROLE = "platform-admin"
BUILTIN_ROLES = frozenset({OWNER_ROLE, PLATFORM_ADMIN_ROLE})
HINT_NAMES = 20  # names listed in a query hint


# --------------------------------------------------------------------------- named rule fields


class Grant(NamedTuple):
    """A `p` rule by name."""

    subject: str
    org: str
    resource: str
    action: str
    effect: str


class Link(NamedTuple):
    """A `g` rule by name: `member` holds `role` in `org`."""

    member: str
    role: str
    org: str


def grant_of(rule: Rule) -> Grant | None:
    """The named fields of a well-formed `p` rule; None for anything else."""
    return Grant(*rule[1:]) if rule[0] == "p" and len(rule) == 6 else None


def link_of(rule: Rule) -> Link | None:
    """The named fields of a well-formed `g` rule; None for anything else."""
    return Link(*rule[1:]) if rule[0] == "g" and len(rule) == 4 else None


def grant_rule(grant: Grant) -> Rule:
    return ("p", *grant)


def link_rule(link: Link) -> Rule:
    return ("g", *link)


def grants(rules: Iterable[Rule]) -> list[Grant]:
    return [grant for grant in map(grant_of, rules) if grant is not None]


def links(rules: Iterable[Rule]) -> list[Link]:
    return [link for link in map(link_of, rules) if link is not None]


# --------------------------------------------------------------------------- domains of an org


def link_domains(snapshot: Snapshot, org: str) -> tuple[str, ...]:
    """Domains whose role links apply in `org`: the org and every pattern domain (Casbin's
    keyMatch, `*` included) that matches it."""
    names = [org] if org in snapshot.domains else []
    names += sorted(
        name
        for name in snapshot.domains
        if name != org and "*" in name and domain_applies(org, name)
    )
    return tuple(names)


def grant_domains(snapshot: Snapshot, org: str) -> tuple[str, ...]:
    """Domains whose `p` rules apply in `org`: the org and, with templates, `*`."""
    if snapshot.shape.template_domain and org != TEMPLATE_DOMAIN:
        return (org, TEMPLATE_DOMAIN)
    return (org,)


def grants_in(snapshot: Snapshot, org: str) -> list[Grant]:
    """Every `p` rule that applies in `org` (its own, then the templates)."""
    return [g for domain in grant_domains(snapshot, org) for g in grants(snapshot.rules(domain))]


def links_in(snapshot: Snapshot, org: str) -> list[Link]:
    """Every role link that applies in `org`."""
    return [k for domain in link_domains(snapshot, org) for k in links(snapshot.rules(domain))]


def path_links(snapshot: Snapshot, org: str, path: Iterable[str]) -> list[Link]:
    """The role links a decision's role path (`bob -> editor -> member`) followed in `org`:
    for each step, the links from one name to the next in the domains that apply there."""
    names = tuple(path)
    steps = set(zip(names, names[1:], strict=False))
    return [link for link in links_in(snapshot, org) if (link.member, link.role) in steps]


def matches_resource(snapshot: Snapshot, pattern: str, resource: str) -> bool:
    """Whether the rule pattern `pattern` matches `resource` under the model's matching
    function (as a decision reads it); a pattern that cannot be evaluated counts as matching."""
    try:
        return bool(compile_matcher(snapshot.shape.resource_function, pattern)(resource))
    except PatternError:
        return True


def _listed(names: Iterable[str]) -> str:
    names = sorted(names)
    shown = ", ".join(names[:HINT_NAMES]) + (", …" if len(names) > HINT_NAMES else "")
    return shown or "none"


def query_hint(
    snapshot: Snapshot, org: str, *, action: str | None = None, resource: str | None = None
) -> str | None:
    """Why no rule applying in `org` can match `action` (and `resource`) at all, naming what the
    rules do mention (a typo hint for who-can and permissions); None when some rule can."""
    found = grants_in(snapshot, org)
    if action is not None and action not in {grant.action for grant in found}:
        known = _listed({grant.action for grant in found})
        return f"no rule mentions action {action!r}; known actions: {known}"
    if resource is None:
        return None
    patterns = {grant.resource for grant in found if action is None or grant.action == action}
    if any(matches_resource(snapshot, pattern, resource) for pattern in patterns):
        return None
    scope = f"for action {action!r} " if action is not None else ""
    return f"no rule {scope}matches resource {resource!r}; rule patterns: {_listed(patterns)}"


def org_exists(snapshot: Snapshot, org: str) -> bool:
    """Known: the org has rules of its own, or a pattern domain's links name it."""
    if org == TEMPLATE_DOMAIN or "*" in org:
        return False
    return org in snapshot.domains or any(
        name != TEMPLATE_DOMAIN for name in link_domains(snapshot, org) if name != org
    )


# --------------------------------------------------------------------------- roles and subjects

_roles_by_snapshot: weakref.WeakKeyDictionary[Snapshot, frozenset[str]] = (
    weakref.WeakKeyDictionary()
)
# DomainIndex objects are shared by the snapshots that did not touch them: their role names are
# computed once per index (kept alive here while the latest snapshot uses them).
_roles_by_index: dict[int, tuple[DomainIndex, frozenset[str]]] = {}
_cache_lock = threading.Lock()


def _index_role_names(index: DomainIndex) -> frozenset[str]:
    names = {role for targets in index.links.values() for role in targets}
    if index.name == TEMPLATE_DOMAIN:
        names.update(subject for subject, _action in index.grants)
    return frozenset(names)


def role_names(snapshot: Snapshot) -> frozenset[str]:
    """Every name that is a role anywhere in the policy (see the module doc)."""
    cached = _roles_by_snapshot.get(snapshot)
    if cached is not None:
        return cached
    names = set(BUILTIN_ROLES)
    if snapshot.default_role:
        names.add(snapshot.default_role)
    seen: dict[int, tuple[DomainIndex, frozenset[str]]] = {}
    for index in snapshot.domains.values():
        entry = _roles_by_index.get(id(index))
        if entry is None or entry[0] is not index:
            entry = (index, _index_role_names(index))
        seen[id(index)] = entry
        names |= entry[1]
    result = frozenset(names)
    with _cache_lock:
        _roles_by_index.clear()
        _roles_by_index.update(seen)
        _roles_by_snapshot[snapshot] = result
    return result


def is_role_name(snapshot: Snapshot, name: str) -> bool:
    """Whether `name` is a role (so never a principal): Casbin would treat a subject of that
    name as holding the role."""
    return name == TEMPLATE_DOMAIN or name in role_names(snapshot)


def org_roles(snapshot: Snapshot, org: str) -> frozenset[str]:
    """Roles that mean something in `org`: link targets there, template subjects, built-ins."""
    names = {link.role for link in links_in(snapshot, org)}
    if snapshot.shape.template_domain:
        names.update(grant.subject for grant in grants(snapshot.rules(TEMPLATE_DOMAIN)))
    if snapshot.shape.owner_role:
        names.add(OWNER_ROLE)
    if snapshot.default_role:
        names.add(snapshot.default_role)
    return frozenset(names)


def direct_memberships(snapshot: Snapshot, org: str) -> dict[str, list[str]]:
    """Subject -> its direct roles in `org`: links of the org itself from names that are no
    role and not the subject of an org rule (such a name reads as an org-local role)."""
    roles = role_names(snapshot) | {grant.subject for grant in grants(snapshot.rules(org))}
    members: dict[str, list[str]] = {}
    for link in links(snapshot.rules(org)):
        if link.member not in roles:
            members.setdefault(link.member, []).append(link.role)
    return members


def assignable_roles(snapshot: Snapshot, org: str) -> frozenset[str]:
    """Roles a member or a role link may point to in `org`: the org's roles and the subjects of
    the org's own rules (an org-local role, perhaps without members yet)."""
    local = {grant.subject for grant in grants(snapshot.rules(org))}
    return org_roles(snapshot, org) | local


def names_in(snapshot: Snapshot, org: str) -> frozenset[str]:
    """Members of the links that apply in `org` and subjects of its own rules."""
    names = {link.member for link in links_in(snapshot, org)}
    names.update(grant.subject for grant in grants(snapshot.rules(org)))
    return frozenset(names)


def subjects_in(snapshot: Snapshot, org: str) -> tuple[str, ...]:
    """Users and API keys of `org`, sorted: `names_in` minus every role name."""
    roles = role_names(snapshot) | org_roles(snapshot, org)
    return tuple(sorted(names_in(snapshot, org) - roles))


def member_links(snapshot: Snapshot, org: str, member: str) -> list[Link]:
    """The org's own links from `member`."""
    return [link for link in links(snapshot.rules(org)) if link.member == member]


def roles_of(
    snapshot: Snapshot,
    subject: str,
    org: str,
    *,
    extra_roles: tuple[str, ...] = (),
    owner: bool = False,
) -> RolePaths:
    """The roles `subject` holds in a check in `org` (with the shortest path to each), exactly
    as a decision computes them: links, default role, `extra_roles` (trusted token roles) and,
    when `owner`, the built-in owner role."""
    request = CheckRequest(
        subject, org, "", "", owner=subject if owner else "", extra_roles=extra_roles
    )
    return snapshot.request_roles(request)


def role_reach(snapshot: Snapshot, role: str, org: str) -> RolePaths:
    """Roles reachable from `role` in `org` through links (itself included)."""
    return snapshot.role_paths(role, org)


def held_grants(
    snapshot: Snapshot, org: str, roles: RolePaths
) -> list[tuple[Grant, tuple[str, ...]]]:
    """Every rule applying in `org` whose subject is one of `roles`, with the role path."""
    return [
        (grant, roles[grant.subject])
        for grant in grants_in(snapshot, org)
        if grant.subject in roles
    ]


def role_grants(snapshot: Snapshot, org: str, role: str) -> list[Grant]:
    """What `role` grants in `org`: every rule it reaches (deny rules included)."""
    return [grant for grant, _ in held_grants(snapshot, org, role_reach(snapshot, role, org))]


# --------------------------------------------------------------------------- access as sets


def access_by_action(
    snapshot: Snapshot, org: str, roles: RolePaths, *, fail_closed: bool = True
) -> dict[str, coverage.Access]:
    """action -> the resources `roles` are allowed in `org` (allow and deny patterns).

    `fail_closed`: an action whose every check fails (`evaluation_fails`) allows nothing, as
    decisions answer; False reads what the rules say regardless.
    """
    allow: dict[str, set[str]] = {}
    deny: dict[str, set[str]] = {}
    for grant, _path in held_grants(snapshot, org, roles):
        if grant.effect in ("allow", "deny"):
            target = allow if grant.effect == "allow" else deny
            target.setdefault(grant.action, set()).add(grant.resource)
    override = snapshot.shape.deny_override
    return {
        action: coverage.Access(
            tuple(sorted(allow.get(action, ()))), tuple(sorted(deny.get(action, ()))), override
        )
        if not (fail_closed and evaluation_fails(snapshot, org, roles, action))
        else coverage.Access(deny_override=override)  # every such check denies
        for action in set(allow) | set(deny)
    }


def evaluation_fails(snapshot: Snapshot, org: str, roles: RolePaths, action: str) -> bool:
    """Whether every check of `action` in `org` with `roles` fails closed (a rule Casbin would
    evaluate has a pattern it cannot compile), asked of the decision itself."""
    probe = CheckRequest("", org, "\x00", action)
    return snapshot.decide(probe, roles).error is not None


def exact_patterns(snapshot: Snapshot) -> bool:
    """Whether the model's resource function is one whose patterns compare exactly."""
    return snapshot.shape.resource_function in coverage.EXACT_FUNCTIONS


def uncovered(snapshot: Snapshot, patterns: Iterable[str], held: coverage.Access) -> str | None:
    """A resource one of `patterns` matches that `held` does not allow (None: all covered).

    Raises coverage.Undecided when that cannot be decided exactly (the caller fails closed).
    """
    return coverage.uncovered(snapshot.shape.resource_function, tuple(patterns), held)


def gained(
    snapshot: Snapshot,
    before: coverage.Access,
    after: coverage.Access,
    held: coverage.Access,
) -> str | None:
    """A resource `after` allows that neither `before` nor `held` does (None: no such gain).

    Raises coverage.Undecided when that cannot be decided exactly (the caller fails closed).
    """
    return coverage.gained(snapshot.shape.resource_function, before, after, held)


def decide(engine: Engine, request: CheckRequest, snapshot: Snapshot | None = None) -> Decision:
    """The decision itself: `engine.check` (fast path or Casbin), here for one import site."""
    return engine.check(request, snapshot)


__all__ = [
    "BUILTIN_ROLES",
    "MAX_LINKS_FOLLOWED",
    "PLATFORM_ADMIN_ROLE",
    "Grant",
    "Link",
    "access_by_action",
    "assignable_roles",
    "decide",
    "direct_memberships",
    "evaluation_fails",
    "exact_patterns",
    "gained",
    "grant_domains",
    "grant_of",
    "grant_rule",
    "grants",
    "grants_in",
    "held_grants",
    "is_role_name",
    "link_domains",
    "link_of",
    "link_rule",
    "links",
    "links_in",
    "matches_resource",
    "member_links",
    "names_in",
    "org_exists",
    "org_roles",
    "path_links",
    "query_hint",
    "role_grants",
    "role_names",
    "role_reach",
    "roles_of",
    "subjects_in",
    "uncovered",
]
