"""Organisation administration on the core: orgs, members, org rules and API keys. No flask.

Every operation is authorised by the engine itself (dogfooding), as a (resource, action) in the
caller's org:

- `manage` on `/members` (set roles, remove, bulk), `/rules`, `/api-keys`;
- `read` on `/members` or `audit` on `/audit` to list members;
- `manage` on `/orgs` in the `*` domain to create or offboard an org (platform admins).

Guards on every write:

- nobody touches another org (`org_mismatch`), except platform admins creating/offboarding;
- no privilege escalation: a role (for a member or an API key), a new allow rule, a role link or
  the removal of a deny rule may only give what the caller is allowed in that org
  (`privilege_escalation`);
- an org keeps at least one admin, meaning a member allowed `manage` on `/members`
  (`last_admin`);
- role names must exist in the org or the `*` templates (`unknown_role`).

Each write is one `PolicyStore.apply` change set recorded with the caller as actor, computed on
the engine's snapshot and applied only at that snapshot's revision (optimistic concurrency,
retried on conflict), so checks are exact and concurrent writers never lose each other's
changes: the last writer wins. The engine takes the change at once (`Rolegate.catch_up`).

A local operator (`Caller.operator`, the CLI) is not authorised by policy and is not bound by
the escalation rule, but gets every other check.
"""

from __future__ import annotations

import getpass
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from casbin.util import key_match

from .apikeys import SUBJECT_PREFIX, format_instant, key_subject
from .core import Rolegate, validate_org, validate_text
from .engine import CheckRequest, Snapshot
from .errors import Conflict, Forbidden, InvalidRequest, NotFound, RolegateError
from .identity import Principal
from .rules import TEMPLATE_DOMAIN, Rule
from .store import ChangeSet, rule_problem

if TYPE_CHECKING:
    import sqlalchemy as sa

ADMIN_ROLE = "admin"
MEMBERS, RULES, API_KEYS, ORGS, AUDIT = "/members", "/rules", "/api-keys", "/orgs", "/audit"
MAX_ROLES = 50
MAX_BULK = 1000
MAX_RULES = 1000
MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_ATTEMPTS = 12
PROBE = "rolegate-probe"
_KEY_MATCH2_PARAM = re.compile(r":[^/]+")


# --------------------------------------------------------------------------- callers


@dataclass(frozen=True)
class Caller:
    """Who asks. `principal` None: a local operator, not authorised by policy (CLI)."""

    actor: str
    principal: Principal | None = None

    @classmethod
    def of(cls, principal: Principal) -> Caller:
        return cls(principal.subject, principal)

    @classmethod
    def operator(cls, name: str | None = None) -> Caller:
        """The local operator `cli:<os user>`."""
        if name is None:
            try:
                name = getpass.getuser()
            except (KeyError, OSError):
                name = "unknown"
        return cls(f"cli:{name}")


# --------------------------------------------------------------------------- input checks


def check_fields(
    data: Any, required: Iterable[str], optional: Iterable[str] = (), where: str = ""
) -> dict:
    """`data` must be an object with every required field and nothing unknown."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"{where.rstrip('.') or 'body'}: expected a JSON object")
    required = tuple(required)
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        raise InvalidRequest(f"{where}{unknown[0]}: unknown field")
    for name in required:
        if name not in data:
            raise InvalidRequest(f"{where}{name}: required")
    return data


def check_value(value: Any, field_name: str) -> str:
    """A name that can be stored in a rule as is (what `PolicyStore` would accept)."""
    value = validate_text(value, field_name)
    problem = rule_problem(("g", value, "x", "x"))
    if problem is not None and problem[2] == 1:
        message = problem[1].replace("the member", "the value")
        raise InvalidRequest(f"{field_name}: {message}")
    return value


def check_org(value: Any, field_name: str = "org") -> str:
    return check_value(validate_org(value, field_name), field_name)


def check_subject(value: Any, field_name: str = "subject") -> str:
    subject = check_value(value, field_name)
    if subject.startswith(SUBJECT_PREFIX):
        raise InvalidRequest(f"{field_name}: {subject!r} is an API key: use the api-keys endpoints")
    return subject


def check_roles(value: Any, field_name: str = "roles") -> tuple[str, ...]:
    """1 to MAX_ROLES distinct role names."""
    if not isinstance(value, list):
        raise InvalidRequest(f"{field_name}: expected a list of role names")
    if not value:
        raise InvalidRequest(f"{field_name}: give at least one role (remove a member instead)")
    if len(value) > MAX_ROLES:
        raise InvalidRequest(f"{field_name}: at most {MAX_ROLES} roles")
    roles = tuple(check_value(role, f"{field_name}[{i}]") for i, role in enumerate(value))
    if len(set(roles)) != len(roles):
        raise InvalidRequest(f"{field_name}: a role is listed twice")
    return roles


def parse_expiry(value: Any, now: datetime | None = None) -> str | None:
    """An ISO 8601 instant with a UTC offset, in the future; stored as UTC text."""
    if value is None:
        return None
    text = validate_text(value, "expires_at", max_bytes=64)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            "expires_at: expected an ISO 8601 instant such as 2030-01-31T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise InvalidRequest("expires_at: give a UTC offset (Z or +hh:mm)")
    if moment <= (now or datetime.now(UTC)):
        raise InvalidRequest("expires_at: must be in the future")
    return format_instant(moment)


def page_limit(value: Any) -> int:
    if value is None:
        return DEFAULT_PAGE
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"limit: expected an integer from 1 to {MAX_PAGE}") from None
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit: expected an integer from 1 to {MAX_PAGE}")
    return limit


# --------------------------------------------------------------------------- policy views


def _domains_of_org(snapshot: Snapshot, org: str) -> list[str]:
    """The domains whose rules apply in `org`: itself, `*` and pattern domains matching it."""
    names = [org]
    if snapshot.shape.template_domain:
        names.append(TEMPLATE_DOMAIN)
    names += [
        name
        for name in snapshot.domains
        if "*" in name and name not in names and key_match(org, name)
    ]
    return names


def known_roles(snapshot: Snapshot, org: str) -> set[str]:
    """Role names usable in `org`: targets of links and subjects of rules of the org or `*`."""
    names: set[str] = set()
    for domain in _domains_of_org(snapshot, org):
        for rule in snapshot.rules(domain):
            names.add(rule[2] if rule[0] == "g" else rule[1])
    return names


def direct_memberships(snapshot: Snapshot, org: str) -> dict[str, list[str]]:
    """Member -> its direct roles in `org` (links from names that are not roles themselves)."""
    roles = known_roles(snapshot, org)
    members: dict[str, list[str]] = {}
    for rule in snapshot.rules(org):
        if rule[0] == "g" and rule[1] not in roles:
            members.setdefault(rule[1], []).append(rule[2])
    return members


def member_links(snapshot: Snapshot, org: str, subject: str) -> list[Rule]:
    return [rule for rule in snapshot.rules(org) if rule[0] == "g" and rule[1] == subject]


def _grant_domains(snapshot: Snapshot, org: str) -> tuple[str, ...]:
    """The domains whose `p` rules apply in `org`."""
    return (org, TEMPLATE_DOMAIN) if snapshot.shape.template_domain else (org,)


def role_permissions(snapshot: Snapshot, org: str, role: str) -> set[tuple[str, str, str]]:
    """(resource pattern, action, effect) of every rule `role` reaches in `org`."""
    reachable = snapshot.role_paths(role, org)
    permissions = set()
    for domain in _grant_domains(snapshot, org):
        for rule in snapshot.rules(domain):
            if rule[0] == "p" and len(rule) == 6 and rule[1] in reachable:
                permissions.add((rule[3], rule[4], rule[5]))
    return permissions


def _literal_prefix(pattern: str) -> str:
    return re.split(r"[*:{(\[?]", pattern, maxsplit=1)[0]


def patterns_may_overlap(first: str, second: str) -> bool:
    """False only when no resource can match both (their literal prefixes diverge)."""
    a, b = _literal_prefix(first), _literal_prefix(second)
    return a.startswith(b) or b.startswith(a)


def probe_resource(pattern: str, function: str) -> str:
    """A concrete resource `pattern` matches that reaches into its wildcards."""
    if function == "keyMatch2":
        pattern = _KEY_MATCH2_PARAM.sub(PROBE, pattern)
    return pattern.replace("*", f"{PROBE}/{PROBE}")


# --------------------------------------------------------------------------- the service


@dataclass
class _Plan:
    """What one write changes, and what it answers (rebuilt on every attempt)."""

    changes: ChangeSet
    result: dict[str, Any] = field(default_factory=dict)
    # Other rows written in the same transaction as the rules (API key rows).
    also: Callable[[sa.Connection], None] | None = None


class OrgAdmin:
    """The administration operations; one instance per request is fine (no state of its own)."""

    def __init__(self, core: Rolegate):
        self.core = core

    # -- authorisation ------------------------------------------------------------------------

    def _base_request(self, principal: Principal, org: str) -> CheckRequest:
        trusted = self.core.settings.trust_token_roles and principal.org == org
        return CheckRequest(
            principal.subject, org, "", "", extra_roles=tuple(principal.roles) if trusted else ()
        )

    def _authorize(
        self,
        caller: Caller,
        org: str,
        *permissions: tuple[str, str],
        snapshot: Snapshot | None = None,
    ) -> CheckRequest | None:
        """The caller's base request in `org` when one of `permissions` is allowed; 403 if not."""
        principal = caller.principal
        if principal is None:
            return None
        if principal.org is not None and principal.org != org:
            raise Forbidden(
                f"your credentials are for org {principal.org!r}, not {org!r}", code="org_mismatch"
            )
        base = self._base_request(principal, org)
        snapshot = snapshot or self.core.engine.snapshot
        for resource, action in permissions:
            request = replace(base, resource=resource, action=action)
            if self.core.engine.check(request, snapshot).allowed:
                return base
        resource, action = permissions[0]
        raise Forbidden(f"{principal.subject} may not {action} {resource} in org {org!r}")

    def _authorize_platform(self, caller: Caller) -> None:
        principal = caller.principal
        if principal is None:
            return
        request = CheckRequest(principal.subject, TEMPLATE_DOMAIN, ORGS, "manage")
        if not self.core.engine.check(request).allowed:
            raise Forbidden(f"{principal.subject} may not manage {ORGS}: platform admins only")

    def _covers(
        self,
        base: CheckRequest,
        snapshot: Snapshot,
        pattern: str,
        action: str,
        granted: set[tuple[str, str, str]],
    ) -> bool:
        """Whether the caller is allowed `action` on everything `pattern` matches.

        keyMatch/keyMatch2 patterns: the caller must be allowed on the pattern itself and on a
        probe reaching into its wildcards, and no deny rule of the caller may cut into it unless
        `granted` carries the same deny. Other matching functions: the caller must hold an
        identical allow rule and no deny rule for that action.
        """
        caller_roles = snapshot.request_roles(replace(base, resource=pattern, action=action))
        caller_denies = [
            rule[3]
            for domain in _grant_domains(snapshot, base.org)
            for rule in snapshot.rules(domain)
            if rule[0] == "p"
            and len(rule) == 6
            and rule[5] == "deny"
            and rule[4] == action
            and rule[1] in caller_roles
            and (rule[3], action, "deny") not in granted
        ]
        function = snapshot.shape.resource_function
        if function not in ("keyMatch", "keyMatch2"):
            held = set()
            for role in caller_roles:
                held |= role_permissions(snapshot, base.org, role)
            return (pattern, action, "allow") in held and not caller_denies
        for resource in (pattern, probe_resource(pattern, function)):
            request = replace(base, resource=resource, action=action)
            if not self.core.engine.check(request, snapshot).allowed:
                return False
        return not any(patterns_may_overlap(deny, pattern) for deny in caller_denies)

    def _check_grant(
        self, base: CheckRequest | None, snapshot: Snapshot, org: str, roles: Iterable[str]
    ) -> None:
        """403 privilege_escalation unless the caller holds every permission of `roles`."""
        if base is None:
            return
        for role in roles:
            granted = role_permissions(snapshot, org, role)
            for pattern, action, effect in sorted(granted):
                if effect == "allow" and not self._covers(base, snapshot, pattern, action, granted):
                    raise Forbidden(
                        f"cannot grant role {role!r}: it allows {action} on {pattern}, which "
                        f"you are not allowed in org {org!r}",
                        code="privilege_escalation",
                    )

    def _check_permission_grant(
        self, base: CheckRequest | None, snapshot: Snapshot, pattern: str, action: str, what: str
    ) -> None:
        if base is not None and not self._covers(base, snapshot, pattern, action, set()):
            raise Forbidden(
                f"cannot {what}: you are not allowed {action} on {pattern} in org {base.org!r}",
                code="privilege_escalation",
            )

    # -- invariants ---------------------------------------------------------------------------

    def _is_admin(self, snapshot: Snapshot, org: str, subject: str) -> bool:
        request = CheckRequest(subject, org, MEMBERS, "manage")
        return self.core.engine.check(request, snapshot).allowed

    def _admins(self, snapshot: Snapshot, org: str, *, first_only: bool = False) -> set[str]:
        """Members allowed to manage members (API keys do not count)."""
        found = set()
        for member in direct_memberships(snapshot, org):
            if not member.startswith(SUBJECT_PREFIX) and self._is_admin(snapshot, org, member):
                found.add(member)
                if first_only:
                    break
        return found

    def _keeps_admin(self, before: Snapshot, after: Snapshot, org: str) -> bool:
        """False when the org had an admin before and has none after."""
        return bool(self._admins(after, org, first_only=True)) or not self._admins(
            before, org, first_only=True
        )

    def _admins_after_member_change(
        self,
        snapshot: Snapshot,
        org: str,
        subject: str,
        changes: ChangeSet,
        admins: set[str],
    ) -> set[str]:
        """The admin set after changing one member's own links (only that member can change)."""
        if subject not in admins or not changes.removed:
            return admins
        after = snapshot.with_changes(snapshot.revision, changes.added, changes.removed)
        if self._is_admin(after, org, subject):
            return admins
        remaining = admins - {subject}
        if not remaining:
            raise Conflict(
                f"org {org!r} would be left without an admin (a member allowed to manage "
                f"{MEMBERS}): make someone else admin first",
                code="last_admin",
            )
        return remaining

    @staticmethod
    def _require_roles(snapshot: Snapshot, org: str, roles: Iterable[str]) -> None:
        known = known_roles(snapshot, org)
        for role in roles:
            if role not in known:
                raise NotFound(
                    f"role {role!r} does not exist in org {org!r} or the templates",
                    code="unknown_role",
                )

    # -- writing ------------------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        self.core.refresh()
        return self.core.engine.snapshot

    def _commit(self, caller: Caller, plan: Callable[[Snapshot], _Plan]) -> dict[str, Any]:
        """Plan on the current snapshot, apply at exactly that revision, retry on conflict."""
        for attempt in range(MAX_ATTEMPTS):
            snapshot = self._snapshot()
            planned = plan(snapshot)
            if planned.changes.is_empty():
                return {**planned.result, "revision": snapshot.revision}
            try:
                revision = self.core.store.apply(
                    planned.changes,
                    actor=caller.actor,
                    expected_revision=snapshot.revision,
                    also=planned.also,
                )
            except Conflict as exc:
                if exc.code == "revision_conflict" and attempt + 1 < MAX_ATTEMPTS:
                    time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
                    continue
                raise
            self.core.catch_up(revision, planned.changes)
            return {**planned.result, "revision": revision}
        raise AssertionError("unreachable")  # pragma: no cover

    # -- organisations ------------------------------------------------------------------------

    def create_org(
        self, caller: Caller, org: str, admin: str, name: str | None = None
    ) -> dict[str, Any]:
        """A new org with `admin` as its first admin (platform admins only)."""
        org = check_org(org, "id")
        admin = check_subject(admin, "admin")
        if name is not None:
            name = validate_text(name, "name")
        self._authorize_platform(caller)

        def plan(snapshot: Snapshot) -> _Plan:
            if org in snapshot.domains:
                raise Conflict(f"org {org!r} already exists", code="org_exists")
            if admin in known_roles(snapshot, org):
                raise InvalidRequest(f"admin: {admin!r} is a role name, not a subject")
            self._require_roles(snapshot, org, [ADMIN_ROLE])
            rule = ("g", admin, ADMIN_ROLE, org)
            return _Plan(ChangeSet(added=[rule]), {"org": org, "name": name, "admin": admin})

        return self._commit(caller, plan)

    def delete_org(self, caller: Caller, org: str) -> dict[str, Any]:
        """Offboard: revoke the org's API keys, then remove every rule of the org at once."""
        org = check_org(org)
        self._authorize_platform(caller)
        if org not in self._snapshot().domains:
            raise NotFound(f"org {org!r} does not exist", code="unknown_org")
        revoked = self.core.api_keys.revoke_org(org)
        self.core.subject_attributes.delete_org(org)
        changes, revision = self.core.store.replace_all([], actor=caller.actor, domains=[org])
        if not changes.is_empty():
            self.core.catch_up(revision, changes)
        return {
            "org": org,
            "removed_rules": len(changes.removed),
            "revoked_api_keys": revoked,
            "revision": revision,
        }

    # -- members ------------------------------------------------------------------------------

    def list_members(
        self, caller: Caller, org: str, *, limit: int = DEFAULT_PAGE, after: str | None = None
    ) -> dict[str, Any]:
        """Members (API keys excluded) with direct and inherited roles, by subject, paginated."""
        org = check_org(org)
        snapshot = self._snapshot()
        self._authorize(caller, org, (MEMBERS, "read"), (AUDIT, "audit"), snapshot=snapshot)
        members = direct_memberships(snapshot, org)
        subjects = sorted(s for s in members if not s.startswith(SUBJECT_PREFIX))
        if after is not None:
            subjects = [s for s in subjects if s > after]
        page = subjects[:limit]
        items = []
        for subject in page:
            direct = sorted(members[subject])
            inherited = sorted(set(snapshot.role_paths(subject, org)) - {subject, *direct})
            items.append({"subject": subject, "roles": direct, "inherited": inherited})
        return {
            "org": org,
            "members": items,
            "next": page[-1] if len(subjects) > limit else None,
            "revision": snapshot.revision,
        }

    def _member_changes(
        self,
        base: CheckRequest | None,
        snapshot: Snapshot,
        org: str,
        subject: str,
        roles: Sequence[str],
    ) -> ChangeSet:
        """Links turning `subject`'s direct roles into `roles` (checks roles and escalation)."""
        if subject in known_roles(snapshot, org):
            raise InvalidRequest(
                f"subject: {subject!r} is a role name; link roles with the rules endpoint"
            )
        self._require_roles(snapshot, org, roles)
        current = member_links(snapshot, org, subject)
        held = {rule[2] for rule in current}
        self._check_grant(base, snapshot, org, [role for role in roles if role not in held])
        wanted = {("g", subject, role, org) for role in roles}
        return ChangeSet.between(current, wanted)

    def set_member_roles(
        self, caller: Caller, org: str, subject: str, roles: Any
    ) -> dict[str, Any]:
        """Make `roles` the member's direct roles (adds the member when new)."""
        org = check_org(org)
        subject = check_subject(subject)
        roles = check_roles(roles)

        def plan(snapshot: Snapshot) -> _Plan:
            base = self._authorize(caller, org, (MEMBERS, "manage"), snapshot=snapshot)
            changes = self._member_changes(base, snapshot, org, subject, roles)
            self._check_last_admin(snapshot, org, subject, changes)
            return _Plan(changes, {"org": org, "subject": subject, "roles": sorted(roles)})

        return self._commit(caller, plan)

    def remove_member(self, caller: Caller, org: str, subject: str) -> dict[str, Any]:
        org = check_org(org)
        subject = check_subject(subject)

        def plan(snapshot: Snapshot) -> _Plan:
            self._authorize(caller, org, (MEMBERS, "manage"), snapshot=snapshot)
            links = member_links(snapshot, org, subject)
            if not links or subject in known_roles(snapshot, org):
                raise NotFound(f"{subject!r} is not a member of org {org!r}")
            changes = ChangeSet(removed=links)
            self._check_last_admin(snapshot, org, subject, changes)
            return _Plan(changes, {"org": org, "subject": subject, "removed": True})

        return self._commit(caller, plan)

    def _check_last_admin(
        self, snapshot: Snapshot, org: str, subject: str, changes: ChangeSet
    ) -> None:
        if changes.removed and self._is_admin(snapshot, org, subject):
            self._admins_after_member_change(
                snapshot, org, subject, changes, self._admins(snapshot, org)
            )

    def bulk_set_roles(self, caller: Caller, org: str, items: Any) -> dict[str, Any]:
        """Set many members' roles: per-item results; the valid items go in as one change set."""
        org = check_org(org)
        if not isinstance(items, list):
            raise InvalidRequest("items: expected a list of {subject, roles} objects")
        if not items:
            raise InvalidRequest("items: give at least one item")
        if len(items) > MAX_BULK:
            raise InvalidRequest(f"items: at most {MAX_BULK} per call, got {len(items)}")
        parsed: list[tuple[str, tuple[str, ...]] | RolegateError] = []
        for index, item in enumerate(items):
            where = f"items[{index}]."
            try:
                check_fields(item, ("subject", "roles"), where=where)
                parsed.append(
                    (
                        check_subject(item["subject"], f"{where}subject"),
                        check_roles(item["roles"], f"{where}roles"),
                    )
                )
            except RolegateError as error:
                parsed.append(error)
        counts: dict[str, int] = {}
        for entry in parsed:
            if isinstance(entry, tuple):
                counts[entry[0]] = counts.get(entry[0], 0) + 1

        def plan(snapshot: Snapshot) -> _Plan:
            base = self._authorize(caller, org, (MEMBERS, "manage"), snapshot=snapshot)
            admins: set[str] | None = None
            added: list[Rule] = []
            removed: list[Rule] = []
            results = []
            for entry in parsed:
                if isinstance(entry, RolegateError):
                    results.append(_item_error(None, entry))
                    continue
                subject, roles = entry
                if counts[subject] > 1:
                    error = InvalidRequest(
                        f"{subject!r} appears more than once in this call",
                        code="duplicate_item",
                    )
                    results.append(_item_error(subject, error))
                    continue
                try:
                    changes = self._member_changes(base, snapshot, org, subject, roles)
                    if admins is None:
                        admins = self._admins(snapshot, org)
                    admins = self._admins_after_member_change(
                        snapshot, org, subject, changes, admins
                    )
                except RolegateError as error:
                    results.append(_item_error(subject, error))
                    continue
                added += changes.added
                removed += changes.removed
                results.append({"subject": subject, "status": "ok", "roles": sorted(roles)})
            applied = sum(1 for result in results if result["status"] == "ok")
            return _Plan(
                ChangeSet(added=added, removed=removed),
                {"org": org, "results": results, "applied": applied},
            )

        return self._commit(caller, plan)

    # -- org rules ----------------------------------------------------------------------------

    def list_rules(self, caller: Caller, org: str) -> dict[str, Any]:
        """The org's own `p` rules and role -> role links (memberships are the members API's)."""
        org = check_org(org)
        snapshot = self._snapshot()
        self._authorize(caller, org, (RULES, "manage"), snapshot=snapshot)
        roles = known_roles(snapshot, org)
        rules = [
            rule_to_dict(rule)
            for rule in sorted(snapshot.rules(org))
            if rule[0] == "p" or (rule[0] == "g" and rule[1] in roles)
        ]
        return {"org": org, "rules": rules, "revision": snapshot.revision}

    def change_rules(
        self, caller: Caller, org: str, rules: Any, *, remove: bool = False
    ) -> dict[str, Any]:
        """Add (or remove) org rules as one change set; all or nothing."""
        org = check_org(org)
        if not isinstance(rules, list) or not rules:
            raise InvalidRequest("rules: expected a non-empty list of rule objects")
        if len(rules) > MAX_RULES:
            raise InvalidRequest(f"rules: at most {MAX_RULES} per call")
        parsed = [rule_from_dict(item, org, f"rules[{i}].") for i, item in enumerate(rules)]
        if len(set(parsed)) != len(parsed):
            raise InvalidRequest("rules: a rule is listed twice")

        def plan(snapshot: Snapshot) -> _Plan:
            base = self._authorize(caller, org, (RULES, "manage"), snapshot=snapshot)
            present = set(snapshot.rules(org))
            if remove:
                missing = [rule for rule in parsed if rule not in present]
                if missing:
                    raise NotFound(f"rule not in org {org!r}: {', '.join(missing[0])}")
                changes = ChangeSet(removed=parsed)
            else:
                existing = [rule for rule in parsed if rule in present]
                if existing:
                    raise Conflict(
                        f"rule already in org {org!r}: {', '.join(existing[0])}",
                        code="rule_exists",
                    )
                changes = ChangeSet(added=parsed)
            after = snapshot.with_changes(snapshot.revision, changes.added, changes.removed)
            self._check_rule_changes(base, snapshot, after, org, changes)
            if not self._keeps_admin(snapshot, after, org):
                raise Conflict(f"org {org!r} would be left without an admin", code="last_admin")
            return _Plan(changes, {"org": org, "changed": len(parsed)})

        return self._commit(caller, plan)

    def _check_rule_changes(
        self,
        base: CheckRequest | None,
        before: Snapshot,
        after: Snapshot,
        org: str,
        changes: ChangeSet,
    ) -> None:
        roles_before, roles_after = known_roles(before, org), known_roles(after, org)
        members = direct_memberships(before, org)
        for rule in changes.added:
            if rule[0] == "g":
                member, role = rule[1], rule[2]
                if member in members or member.startswith(SUBJECT_PREFIX):
                    raise InvalidRequest(
                        f"{member!r} is a member, not a role: use the members endpoints"
                    )
                if role not in roles_before:
                    raise NotFound(
                        f"role {role!r} does not exist in org {org!r} or the templates",
                        code="unknown_role",
                    )
                if member not in roles_after - {role}:
                    raise InvalidRequest(
                        f"{member!r} is not a role: give it rules first, or use the members "
                        "endpoints for a member"
                    )
                self._check_grant(base, before, org, [role])
            elif rule[5] == "allow":
                self._check_permission_grant(
                    base, before, rule[3], rule[4], f"add an allow rule for {rule[4]} {rule[3]}"
                )
        for rule in changes.removed:
            if rule[0] == "g" and (rule[1] in members or rule[1].startswith(SUBJECT_PREFIX)):
                raise InvalidRequest(
                    f"{rule[1]!r} is a member, not a role: use the members endpoints"
                )
            if rule[0] == "p" and rule[5] == "deny":
                self._check_permission_grant(
                    base, before, rule[3], rule[4], f"lift a deny rule for {rule[4]} {rule[3]}"
                )

    # -- API keys -----------------------------------------------------------------------------

    def create_api_key(
        self, caller: Caller, org: str, name: Any, roles: Any, expires_at: Any = None
    ) -> dict[str, Any]:
        """A key acting as `apikey:<id>` with exactly `roles` in `org`; the secret is shown once."""
        org = check_org(org)
        name = validate_text(name, "name")
        roles = check_roles(roles)
        expiry = parse_expiry(expires_at)
        keys = self.core.api_keys
        key_id = keys.new_id()
        subject = key_subject(key_id)
        key, full_key, row = keys.new_key(
            key_id, org=org, name=name, roles=roles, created_by=caller.actor, expires_at=expiry
        )

        def plan(snapshot: Snapshot) -> _Plan:
            base = self._authorize(caller, org, (API_KEYS, "manage"), snapshot=snapshot)
            self._require_roles(snapshot, org, roles)
            self._check_grant(base, snapshot, org, roles)
            links = ChangeSet(added=[("g", subject, role, org) for role in roles])
            return _Plan(links, also=lambda conn: keys.insert_row(conn, row))

        # The key row and its role links commit together, or neither does.
        result = self._commit(caller, plan)
        return {**key.to_dict(), "key": full_key, "revision": result["revision"]}

    def list_api_keys(self, caller: Caller, org: str) -> dict[str, Any]:
        org = check_org(org)
        self._authorize(caller, org, (API_KEYS, "manage"), snapshot=self._snapshot())
        keys = [key.to_dict() for key in self.core.api_keys.list(org)]
        return {"org": org, "api_keys": keys}

    def revoke_api_key(self, caller: Caller, org: str, key_id: Any) -> dict[str, Any]:
        """Revoke at once (the row), then drop the key's role links (one change set)."""
        org = check_org(org)
        key_id = validate_text(key_id, "id", max_bytes=64)
        self._authorize(caller, org, (API_KEYS, "manage"), snapshot=self._snapshot())
        key = self.core.api_keys.get(key_id)
        if key is None or key.org != org:
            raise NotFound(f"no API key {key_id!r} in org {org!r}")
        keys = self.core.api_keys

        def plan(snapshot: Snapshot) -> _Plan:
            links = ChangeSet(removed=member_links(snapshot, org, key.subject))
            if links.is_empty():  # no links left: mark the row on its own
                keys.revoke(key_id)
            return _Plan(links, also=lambda conn: keys.revoke_row(conn, key_id))

        # The row is marked revoked in the same transaction that drops the key's role links.
        result = self._commit(caller, plan)
        return {**(keys.get(key_id) or key).to_dict(), "revision": result["revision"]}


def _item_error(subject: str | None, error: RolegateError) -> dict[str, Any]:
    return {
        "subject": subject,
        "status": "error",
        "error": {"code": error.code, "message": error.message},
    }


# --------------------------------------------------------------------------- rule objects

P_FIELDS = ("subject", "resource", "action", "effect")
G_FIELDS = ("member", "role")


def rule_to_dict(rule: Rule) -> dict[str, str]:
    if rule[0] == "p":
        return {
            "type": "p",
            **dict(zip(P_FIELDS, (rule[1], rule[3], rule[4], rule[5]), strict=True)),
        }
    return {"type": "g", "member": rule[1], "role": rule[2]}


def rule_from_dict(data: Any, org: str, where: str = "") -> Rule:
    """`{"type": "p", subject, resource, action, effect}` or `{"type": "g", member, role}`."""
    if not isinstance(data, Mapping):
        raise InvalidRequest(f"{where.rstrip('.') or 'rule'}: expected a JSON object")
    kind = data.get("type")
    if kind == "p":
        check_fields(data, ("type", "subject", "resource", "action", "effect"), where=where)
        effect = data["effect"]
        if effect not in ("allow", "deny"):
            raise InvalidRequest(f"{where}effect: expected allow or deny")
        rule: Rule = (
            "p",
            check_value(data["subject"], f"{where}subject"),
            org,
            check_value(data["resource"], f"{where}resource"),
            check_value(data["action"], f"{where}action"),
            effect,
        )
    elif kind == "g":
        check_fields(data, ("type", "member", "role"), where=where)
        rule = (
            "g",
            check_value(data["member"], f"{where}member"),
            check_value(data["role"], f"{where}role"),
            org,
        )
    else:
        raise InvalidRequest(f'{where}type: expected "p" (permission) or "g" (role link)')
    problem = rule_problem(rule)
    if problem is not None:
        raise InvalidRequest(f"{where.rstrip('.') or 'rule'}: {problem[1]}")
    return rule


__all__ = [
    "Caller",
    "OrgAdmin",
    "check_fields",
    "direct_memberships",
    "known_roles",
    "role_permissions",
    "rule_from_dict",
    "rule_to_dict",
]
