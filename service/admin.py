"""Organisation administration on the core: orgs, members, org rules and API keys. No flask.

Every operation is authorised by the engine itself (dogfooding), as a (resource, action) in the
caller's org:

- `manage` on `/members` (set roles, remove, bulk), `/rules`, `/api-keys`;
- `read` on `/members` or `audit` on `/audit` to list members;
- `manage` on `/orgs` in the `*` domain to create or offboard an org (platform admins).

Guards on every write:

- the caller is asked with the core's one principal -> request rule
  (`Rolegate.principal_request`; a role-named caller is refused, `subject_is_role`);
- nobody touches another org (`org_mismatch`), except platform admins creating/offboarding;
- no privilege escalation: whatever a write gives anyone (a granted role, a new rule or link,
  and also a removed deny, link or member role) must be access the caller holds in that org,
  decided exactly on the patterns by the engine (`_check_escalation`, `privilege_escalation`);
- resource patterns use the safe grammar unless the deployment allows regex (`unsafe_pattern`);
- role names are never members (`subject_is_role`);
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
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from .apikeys import SUBJECT_PREFIX, format_instant, key_subject
from .core import Rolegate, validate_org, validate_text
from .engine import CheckRequest, Snapshot, coverage, patterns, reads
from .engine.coverage import Access
from .engine.reads import Link, link_rule
from .errors import Conflict, Forbidden, InvalidRequest, NotFound, RolegateError
from .identifiers import check_org_id, check_subject_id
from .identity import Principal
from .rules import TEMPLATE_DOMAIN, Rule
from .store import ChangeSet, rule_problem
from .store.db import MANAGED_BY_API
from .store.source import StoreTransaction

MEMBERS, RULES, API_KEYS, ORGS, AUDIT = "/members", "/rules", "/api-keys", "/orgs", "/audit"
MAX_ROLES = 50
MAX_BULK = 1000
MAX_RULES = 1000
MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_ATTEMPTS = 12
NON_MEMBER = "(any other subject)"  # rules cannot name it: stands for the default role


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
        """The local operator `cli:<os user>` (or `cli:<name>`)."""
        return cls(operator_actor(name))


def operator_actor(name: str | None = None) -> str:
    """`cli:<os user>` (`cli:uid<n>` when the user has no name), the CLI's change-log actor."""
    if name is None:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = f"uid{os.getuid()}"
    return f"cli:{name}"


# --------------------------------------------------------------------------- input checks


def validate_fields(
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


def validate_value(value: Any, field_name: str) -> str:
    """A name that can be stored in a rule as is (what `PolicyStore` would accept)."""
    value = validate_text(value, field_name)
    problem = rule_problem(("g", value, "x", "x"))
    if problem is not None and problem[2] == 1:
        message = problem[1].replace("the member", "the value")
        raise InvalidRequest(f"{field_name}: {message}")
    return value


def validate_org_value(value: Any, field_name: str = "org") -> str:
    """An org id of the one grammar (`rolegate.identifiers`): 400 `invalid_org_id` otherwise."""
    return check_org_id(validate_value(validate_org(value, field_name), field_name), field_name)


def validate_subject(value: Any, field_name: str = "subject") -> str:
    subject = check_subject_id(validate_value(value, field_name), field_name)
    if subject.startswith(SUBJECT_PREFIX):
        raise InvalidRequest(f"{field_name}: {subject!r} is an API key: use the api-keys endpoints")
    return subject


def validate_roles(
    value: Any, field_name: str = "roles", *, allow_empty: bool = False
) -> tuple[str, ...]:
    """1 (0 with `allow_empty`: a bulk item removing a member) to MAX_ROLES distinct role names."""
    if not isinstance(value, list):
        raise InvalidRequest(f"{field_name}: expected a list of role names")
    if not value and not allow_empty:
        raise InvalidRequest(f"{field_name}: give at least one role (remove a member instead)")
    if len(value) > MAX_ROLES:
        raise InvalidRequest(f"{field_name}: at most {MAX_ROLES} roles")
    roles = tuple(validate_value(role, f"{field_name}[{i}]") for i, role in enumerate(value))
    if len(set(roles)) != len(roles):
        raise InvalidRequest(f"{field_name}: a role is listed twice")
    return roles


def parse_expiry(value: Any, now: datetime | None = None) -> str | None:
    """An ISO 8601 instant with a UTC offset, in the future; stored as UTC text."""
    if value is None:
        return None
    text = validate_text(value, "expires_at", max_length=64)
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


def _pattern_problem(core: Rolegate, pattern: str) -> str | None:
    """Why a resource pattern may not be written through the API (None: it may): the engine's
    rule (safe grammar unless ROLEGATE_ALLOW_REGEX_PATTERNS, always linear-time matchable)."""
    return patterns.validate_pattern(
        pattern,
        allow_regex=core.settings.allow_regex_patterns,
        function=core.engine.shape.resource_function,
    )


def member_rules(snapshot: Snapshot, org: str, subject: str) -> list[Rule]:
    return [link_rule(link) for link in reads.member_links(snapshot, org, subject)]


def _is_member_name_refused(snapshot: Snapshot, org: str, name: str) -> bool:
    """Role names are never members: a member named like a role would hold it (`g(x, x)`)."""
    return reads.is_role_name(snapshot, name) or name in reads.org_roles(snapshot, org)


class _AccessReader:
    """What subjects may do in one org of one snapshot, computed once per set of roles."""

    def __init__(self, snapshot: Snapshot, org: str, *, fail_closed: bool = True):
        self.snapshot, self.org, self.fail_closed = snapshot, org, fail_closed
        self.role_names = reads.role_names(snapshot) | reads.org_roles(snapshot, org)
        self._by_roles: dict[frozenset[str], dict[str, Access]] = {}

    def access(
        self, subject: str, owner: bool, extra_roles: tuple[str, ...] = ()
    ) -> dict[str, Access]:
        """action -> what `subject` may do; nothing for a role name (refused as a principal)."""
        if subject in self.role_names:
            return {}
        roles = reads.roles_of(
            self.snapshot, subject, self.org, extra_roles=extra_roles, owner=owner
        )
        key = frozenset(roles)
        found = self._by_roles.get(key)
        if found is None:
            found = self._by_roles[key] = reads.access_by_action(
                self.snapshot, self.org, roles, fail_closed=self.fail_closed
            )
        return found


def _literal_gain(before: Access, after: Access, held: Access) -> bool:
    """Whether `after` may give something `held` lacks, judged by pattern identity only.

    Sound without reading patterns: access is the allow patterns minus the deny patterns, so a
    gain needs a new allow pattern or a removed deny; it is held when every allow pattern that
    can give it is one of the held allow patterns and every held deny is still there.
    """
    new_allows = set(after.allow) - set(before.allow)
    lifted = set(before.deny) - set(after.deny) if before.deny_override else set()
    if not new_allows and not lifted:
        return False
    needed = set(after.allow) if lifted else new_allows
    keeps_denies = not after.deny_override or set(held.deny) <= set(after.deny)
    return not (needed <= set(held.allow) and keeps_denies)


# --------------------------------------------------------------------------- the service


@dataclass
class _Plan:
    """What one write changes, and what it answers (rebuilt on every attempt)."""

    changes: ChangeSet
    result: dict[str, Any] = field(default_factory=dict)
    # Other rows written in the same transaction as the rules (API key rows).
    also: Callable[[StoreTransaction], None] | None = None
    # Written as the admin API (file-managed rules may not be removed); revoking a key is not.
    managed_by: str | None = MANAGED_BY_API


class OrgAdmin:
    """The administration operations; one instance per request is fine (no state of its own)."""

    def __init__(self, core: Rolegate):
        self.core = core

    # -- authorisation ------------------------------------------------------------------------

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
        snapshot = snapshot or self.core.engine.snapshot
        base = self.core.principal_request(principal, org, "", "", snapshot=snapshot)
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
        request = self.core.principal_request(principal, TEMPLATE_DOMAIN, ORGS, "manage")
        if not self.core.engine.check(request).allowed:
            raise Forbidden(f"{principal.subject} may not manage {ORGS}: platform admins only")

    # -- no privilege escalation --------------------------------------------------------------

    def _check_escalation(
        self,
        base: CheckRequest | None,
        before: Snapshot,
        after: Snapshot,
        org: str,
        subjects: Iterable[str] | None = None,
        what: str = "make this change",
    ) -> None:
        """403 privilege_escalation unless everything the change gives anyone is held by the
        caller.

        For each subject (default: every subject of the org in either snapshot, a non-member
        standing for the default role and, when token roles are trusted, a holder of each single
        token role), owner or not, and action: a resource allowed after the change, not before,
        and not to the caller before, refuses the change. Decided exactly on the patterns
        (`engine.coverage`); patterns outside the safe grammar are judged by identity
        (`_literal_gain`), never by sampling.
        """
        if base is None:
            return
        if not before.shape.org_scoped:
            raise Forbidden(
                "this model lets rules of one org apply to others "
                f"({before.shape.reason}), so a change cannot be bounded to org {org!r}: "
                "admin API changes are refused; edit the policy files instead",
                code="guard_unsupported_model",
            )
        holders: list[tuple[str, tuple[str, ...]]]
        if subjects is None:
            names = reads.names_in(before, org) | reads.names_in(after, org)
            holders = [(name, ()) for name in sorted(names | {NON_MEMBER})]
            if self.core.settings.trust_token_roles:
                roles = reads.assignable_roles(before, org) | reads.assignable_roles(after, org)
                holders += [(NON_MEMBER, (role,)) for role in sorted(roles)]
        else:
            holders = [(subject, ()) for subject in subjects]
        variants = (False, True) if before.shape.owner_role else (False,)
        old_reader, new_reader = _AccessReader(before, org), _AccessReader(after, org)
        # What the caller holds by the rules (a pattern that fails every check of an action
        # must stay removable by whoever holds what its removal restores).
        by_rules = _AccessReader(before, org, fail_closed=False)
        held = {owner: by_rules.access(base.subject, owner, base.extra_roles) for owner in variants}
        override = before.shape.deny_override
        for subject, token_roles in holders:
            for owner in variants:
                old = old_reader.access(subject, owner, token_roles)
                new = new_reader.access(subject, owner, token_roles)
                for action, access in sorted(new.items()):
                    previous = old.get(action, Access(deny_override=override))
                    if access == previous:
                        continue
                    mine = held[owner].get(action, Access(deny_override=override))
                    example = self._gain(after, previous, access, mine)
                    if example is not None:
                        owning = " owning the resource" if owner else ""
                        who = "a non-member" if subject == NON_MEMBER else repr(subject)
                        if token_roles:
                            who = f"a token with role {token_roles[0]!r}"
                        raise Forbidden(
                            f"cannot {what}: it lets {who}{owning} {action} {example}, which "
                            f"you are not allowed in org {org!r}",
                            code="privilege_escalation",
                        )

    @staticmethod
    def _gain(snapshot: Snapshot, before: Access, after: Access, held: Access) -> str | None:
        """A resource gained and not held (quoted), or None. Exact when the patterns allow it."""
        if reads.exact_patterns(snapshot):
            try:
                witness = reads.gained(snapshot, before, after, held)
                return None if witness is None else repr(witness)
            except coverage.Undecided:
                pass
        if _literal_gain(before, after, held):
            return "resources matching " + ", ".join(
                sorted(set(after.allow) - set(held.allow)) or after.allow
            )
        return None

    # -- invariants ---------------------------------------------------------------------------

    def _is_admin(self, snapshot: Snapshot, org: str, subject: str) -> bool:
        request = CheckRequest(subject, org, MEMBERS, "manage")
        return self.core.engine.check(request, snapshot).allowed

    def _admins(self, snapshot: Snapshot, org: str, *, first_only: bool = False) -> set[str]:
        """Members allowed to manage members (API keys do not count)."""
        found = set()
        for member in sorted({link.member for link in reads.links(snapshot.rules(org))}):
            if member.startswith(SUBJECT_PREFIX) or _is_member_name_refused(snapshot, org, member):
                continue
            if self._is_admin(snapshot, org, member):
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
        after: Snapshot,
        org: str,
        subject: str,
        changes: ChangeSet,
        admins: set[str],
    ) -> set[str]:
        """The admin set after changing one member's own links (only that member can change)."""
        if subject not in admins or not changes.removed:
            return admins
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
        known = reads.assignable_roles(snapshot, org)
        for role in roles:
            if role not in known:
                raise NotFound(
                    f"role {role!r} does not exist in org {org!r} or the templates",
                    code="unknown_role",
                )

    def org_admin_role(self, snapshot: Snapshot, org: str) -> str:
        """The role an org's first admin gets: `ROLEGATE_ORG_ADMIN_ROLE`, else the one role on
        top (inherited by no other candidate) of the roles allowed `manage` on `/members`."""
        configured = getattr(self.core.settings, "org_admin_role", None)
        if configured:
            self._require_roles(snapshot, org, [configured])
            return configured
        candidates = sorted(
            role
            for role in reads.assignable_roles(snapshot, org) - reads.BUILTIN_ROLES
            if self._is_admin(snapshot, org, role)
        )
        tops = [
            role
            for role in candidates
            if not any(
                role in reads.role_reach(snapshot, other, org)
                for other in candidates
                if other != role
            )
        ]
        if len(tops) != 1:
            found = ", ".join(tops or candidates) or "none"
            raise Conflict(
                f"cannot tell which role administers org {org!r} (roles allowed manage on "
                f"{MEMBERS}: {found}): set ROLEGATE_ORG_ADMIN_ROLE",
                code="org_admin_role_unknown",
            )
        return tops[0]

    # -- ownership ----------------------------------------------------------------------------

    def _refuse_file_managed(self, removed: Sequence[Rule], what: str, org: str) -> None:
        """409 `managed_by_files` when a change would remove rules the policy files manage."""
        if not removed:
            return
        from_files = sorted(self.core.store.file_managed(removed))
        if not from_files:
            return
        shown = ", ".join(f"`{', '.join(rule)}`" for rule in from_files[:3])
        raise Conflict(
            f"cannot change {what} in org {org!r}: {shown} is managed by the policy files "
            f"({'roles' if org == TEMPLATE_DOMAIN else org}.csv), not the admin API; change the "
            "file and import it, or ask whoever owns the policy repository",
            code="managed_by_files",
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
                    managed_by=planned.managed_by,
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
        org = validate_org_value(org, "id")
        admin = validate_subject(admin, "admin")
        if name is not None:
            name = validate_text(name, "name")
        self._authorize_platform(caller)

        def plan(snapshot: Snapshot) -> _Plan:
            if org in snapshot.domains:
                raise Conflict(f"org {org!r} already exists", code="org_exists")
            if _is_member_name_refused(snapshot, org, admin):
                raise _role_as_member("admin", admin)
            role = self.org_admin_role(snapshot, org)
            rule = ("g", admin, role, org)
            result = {"org": org, "name": name, "admin": admin, "role": role}
            return _Plan(ChangeSet(added=[rule]), result)

        return self._commit(caller, plan)

    def delete_org(self, caller: Caller, org: str) -> dict[str, Any]:
        """Offboard: revoke the org's API keys, then remove every rule of the org at once."""
        org = validate_org_value(org)
        self._authorize_platform(caller)
        snapshot = self._snapshot()
        if org not in snapshot.domains:
            raise NotFound(f"org {org!r} does not exist", code="unknown_org")
        from_files = self.core.store.file_managed(snapshot.rules(org))
        if from_files:
            raise Conflict(
                f"org {org!r} has {len(from_files)} rule(s) managed by the policy files: delete "
                f"its policy file ({org}.csv) and import the files to offboard it",
                code="managed_by_files",
            )
        revoked = self.core.api_keys.revoke_org(org)
        self.core.subject_attributes.delete_org(org)
        changes, revision = self.core.store.replace_all([], actor=caller.actor, domains=[org])
        # (replace_all removes whoever manages a row: the check above found only API rules.)
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
        org = validate_org_value(org)
        snapshot = self._snapshot()
        self._authorize(caller, org, (MEMBERS, "read"), (AUDIT, "audit"), snapshot=snapshot)
        members = reads.direct_memberships(snapshot, org)
        subjects = sorted(s for s in members if not s.startswith(SUBJECT_PREFIX))
        if after is not None:
            subjects = [s for s in subjects if s > after]
        page = subjects[:limit]
        from_files = self.core.store.file_managed(
            ("g", subject, role, org) for subject in page for role in members[subject]
        )
        items = []
        for subject in page:
            direct = sorted(members[subject])
            inherited = sorted(set(reads.roles_of(snapshot, subject, org)) - {subject, *direct})
            owner = "files" if any(("g", subject, r, org) in from_files for r in direct) else "api"
            items.append(
                {"subject": subject, "roles": direct, "inherited": inherited, "managed_by": owner}
            )
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
    ) -> tuple[ChangeSet, Snapshot]:
        """Links turning `subject`'s direct roles into `roles`, and the snapshot after them
        (checks the roles and that the subject gains nothing the caller lacks)."""
        if _is_member_name_refused(snapshot, org, subject):
            raise _role_as_member("subject", subject)
        self._require_roles(snapshot, org, roles)
        current = member_rules(snapshot, org, subject)
        wanted = {("g", subject, role, org) for role in roles}
        changes = ChangeSet.between(current, wanted)
        after = snapshot.with_changes(snapshot.revision, changes.added, changes.removed)
        # Only the member's own links change, and a member is no role: only they can gain.
        what = f"give {subject!r} the roles {', '.join(sorted(roles))}"
        self._check_escalation(base, snapshot, after, org, [subject], what)
        self._refuse_file_managed(changes.removed, f"{subject!r}'s roles", org)
        return changes, after

    def set_member_roles(
        self, caller: Caller, org: str, subject: str, roles: Any
    ) -> dict[str, Any]:
        """Make `roles` the member's direct roles (adds the member when new)."""
        org = validate_org_value(org)
        subject = validate_subject(subject)
        roles = validate_roles(roles)

        def plan(snapshot: Snapshot) -> _Plan:
            base = self._authorize(caller, org, (MEMBERS, "manage"), snapshot=snapshot)
            changes, after = self._member_changes(base, snapshot, org, subject, roles)
            self._check_last_admin(snapshot, after, org, subject, changes)
            return _Plan(changes, {"org": org, "subject": subject, "roles": sorted(roles)})

        return self._commit(caller, plan)

    def remove_member(self, caller: Caller, org: str, subject: str) -> dict[str, Any]:
        org = validate_org_value(org)
        subject = validate_subject(subject)

        def plan(snapshot: Snapshot) -> _Plan:
            base = self._authorize(caller, org, (MEMBERS, "manage"), snapshot=snapshot)
            links = member_rules(snapshot, org, subject)
            if not links or _is_member_name_refused(snapshot, org, subject):
                raise NotFound(f"{subject!r} is not a member of org {org!r}")
            changes = ChangeSet(removed=links)
            after = snapshot.with_changes(snapshot.revision, (), links)
            # With a default role, a former member may gain what their roles denied.
            what = f"remove {subject!r}"
            self._check_escalation(base, snapshot, after, org, [subject], what)
            self._refuse_file_managed(links, f"{subject!r}'s roles", org)
            self._check_last_admin(snapshot, after, org, subject, changes)
            return _Plan(changes, {"org": org, "subject": subject, "removed": True})

        return self._commit(caller, plan)

    def _check_last_admin(
        self, snapshot: Snapshot, after: Snapshot, org: str, subject: str, changes: ChangeSet
    ) -> None:
        if changes.removed and self._is_admin(snapshot, org, subject):
            self._admins_after_member_change(
                snapshot, after, org, subject, changes, self._admins(snapshot, org)
            )

    def bulk_set_roles(self, caller: Caller, org: str, items: Any) -> dict[str, Any]:
        """Set many members' roles: per-item results; the valid items go in as one change set."""
        org = validate_org_value(org)
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
                validate_fields(item, ("subject", "roles"), where=where)
                parsed.append(
                    (
                        validate_subject(item["subject"], f"{where}subject"),
                        validate_roles(item["roles"], f"{where}roles", allow_empty=True),
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
                    changes, after = self._member_changes(base, snapshot, org, subject, roles)
                    if admins is None:
                        admins = self._admins(snapshot, org)
                    admins = self._admins_after_member_change(
                        snapshot, after, org, subject, changes, admins
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
        org = validate_org_value(org)
        snapshot = self._snapshot()
        self._authorize(caller, org, (RULES, "manage"), snapshot=snapshot)
        members = reads.direct_memberships(snapshot, org)
        rules = [
            rule_to_dict(rule)
            for rule in sorted(snapshot.rules(org))
            if (link := reads.link_of(rule)) is None or link.member not in members
        ]
        return {"org": org, "rules": rules, "revision": snapshot.revision}

    def change_rules(
        self, caller: Caller, org: str, rules: Any, *, remove: bool = False
    ) -> dict[str, Any]:
        """Add (or remove) org rules as one change set; all or nothing."""
        org = validate_org_value(org)
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
            self._refuse_file_managed(changes.removed, "these rules", org)
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
        """Role links join roles only, rules name no API key, new patterns are safe, and the
        change gives nobody anything the caller lacks (`_check_escalation`)."""
        members = reads.direct_memberships(before, org)
        roles_before = reads.assignable_roles(before, org)
        roles_after = reads.org_roles(after, org)
        for rule in changes.added:
            if (link := reads.link_of(rule)) is not None:
                _require_role_link(link, members)
                if link.role not in roles_before or link.role in members:
                    raise NotFound(
                        f"role {link.role!r} does not exist in org {org!r} or the templates",
                        code="unknown_role",
                    )
                if link.member == link.role or not (
                    link.member in roles_after
                    or link.member in {grant.subject for grant in reads.grants(after.rules(org))}
                ):
                    raise InvalidRequest(
                        f"{link.member!r} is not a role: give it rules first, or use the members "
                        "endpoints for a member"
                    )
            elif (grant := reads.grant_of(rule)) is not None:
                if grant.subject.startswith(SUBJECT_PREFIX):
                    raise InvalidRequest(
                        f"{grant.subject!r} is an API key: a key holds roles, not rules"
                    )
                problem = _pattern_problem(self.core, grant.resource)
                if problem is not None:
                    raise InvalidRequest(f"resource: {problem}", code="unsafe_pattern")
        for rule in changes.removed:
            if (link := reads.link_of(rule)) is not None:
                _require_role_link(link, members)
        self._check_escalation(base, before, after, org, what="change these rules")

    # -- API keys -----------------------------------------------------------------------------

    def create_api_key(
        self, caller: Caller, org: str, name: Any, roles: Any, expires_at: Any = None
    ) -> dict[str, Any]:
        """A key acting as `apikey:<id>` with exactly `roles` in `org`; the secret is shown once."""
        org = validate_org_value(org)
        name = validate_text(name, "name")
        roles = validate_roles(roles)
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
            links = ChangeSet(added=[("g", subject, role, org) for role in roles])
            after = snapshot.with_changes(snapshot.revision, links.added, ())
            what = f"give a key the roles {', '.join(sorted(roles))}"
            self._check_escalation(base, snapshot, after, org, [subject], what)
            return _Plan(links, also=lambda conn: keys.insert_row(conn, row))

        # The key row and its role links commit together, or neither does.
        result = self._commit(caller, plan)
        return {**key.to_dict(), "key": full_key, "revision": result["revision"]}

    def list_api_keys(self, caller: Caller, org: str) -> dict[str, Any]:
        org = validate_org_value(org)
        self._authorize(caller, org, (API_KEYS, "manage"), snapshot=self._snapshot())
        keys = [key.to_dict() for key in self.core.api_keys.list(org)]
        return {"org": org, "api_keys": keys}

    def revoke_api_key(self, caller: Caller, org: str, key_id: Any) -> dict[str, Any]:
        """Revoke at once (the row), then drop the key's role links (one change set)."""
        org = validate_org_value(org)
        key_id = validate_text(key_id, "id", max_length=64)
        self._authorize(caller, org, (API_KEYS, "manage"), snapshot=self._snapshot())
        key = self.core.api_keys.get(key_id)
        if key is None or key.org != org:
            raise NotFound(f"no API key {key_id!r} in org {org!r}")
        keys = self.core.api_keys

        def plan(snapshot: Snapshot) -> _Plan:
            links = ChangeSet(removed=member_rules(snapshot, org, key.subject))
            if links.is_empty():  # no links left: mark the row on its own
                keys.revoke(key_id)
            # Revocation always succeeds: even a key link some other tool marked as file-managed
            # goes with its key (a key and its links are never split apart).
            return _Plan(links, also=lambda conn: keys.revoke_row(conn, key_id), managed_by=None)

        # The row is marked revoked in the same transaction that drops the key's role links.
        result = self._commit(caller, plan)
        return {**(keys.get(key_id) or key).to_dict(), "revision": result["revision"]}


def _role_as_member(field_name: str, name: str) -> InvalidRequest:
    return InvalidRequest(
        f"{field_name}: {name!r} is a role name, not a subject (a member named like a role "
        "would hold that role)",
        code="subject_is_role",
    )


def _require_role_link(link: Link, members: Mapping[str, Any]) -> None:
    """The rules endpoint links roles to roles; memberships are the members endpoints'."""
    if link.member in members or link.member.startswith(SUBJECT_PREFIX):
        raise InvalidRequest(f"{link.member!r} is a member, not a role: use the members endpoints")


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
    if (grant := reads.grant_of(rule)) is not None:
        return {"type": "p", **{name: getattr(grant, name) for name in P_FIELDS}}
    link = reads.link_of(rule)
    if link is None:
        raise ValueError(f"not an org rule: {rule!r}")
    return {"type": "g", "member": link.member, "role": link.role}


def rule_from_dict(data: Any, org: str, where: str = "") -> Rule:
    """`{"type": "p", subject, resource, action, effect}` or `{"type": "g", member, role}`."""
    if not isinstance(data, Mapping):
        raise InvalidRequest(f"{where.rstrip('.') or 'rule'}: expected a JSON object")
    kind = data.get("type")
    if kind == "p":
        validate_fields(data, ("type", "subject", "resource", "action", "effect"), where=where)
        effect = data["effect"]
        if effect not in ("allow", "deny"):
            raise InvalidRequest(f"{where}effect: expected allow or deny")
        rule: Rule = (
            "p",
            validate_value(data["subject"], f"{where}subject"),
            org,
            validate_value(data["resource"], f"{where}resource"),
            validate_value(data["action"], f"{where}action"),
            effect,
        )
    elif kind == "g":
        validate_fields(data, ("type", "member", "role"), where=where)
        rule = (
            "g",
            validate_value(data["member"], f"{where}member"),
            validate_value(data["role"], f"{where}role"),
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
    "validate_fields",
    "operator_actor",
    "validate_fields",
    "rule_from_dict",
    "rule_to_dict",
]


# Former names (they validate, they do not decide), kept for one release.
check_fields = validate_fields
check_value = validate_value
check_org = validate_org_value
check_subject = validate_subject
check_roles = validate_roles
