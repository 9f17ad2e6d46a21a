"""Immutable, indexed views of one policy revision, and the fast evaluation over them.

A snapshot groups rules by domain (org, or `*` for templates). Within a domain, `p` rules are
indexed by (subject-or-role, action) and `g` rules by member. A decision therefore reads only the
request's org and the template domain, whatever the number of orgs.

Meaning (equal to Casbin with the shipped model and `key_match` domain matching for `g`, proven by
tests/test_engine_differential.py):
- the roles of `s` in org `o` are the names reachable from `s` in at most 9 links, following links
  of domain `o` and of every pattern domain (containing `*`) that Casbin's keyMatch maps onto `o`;
  `s` itself is one of its roles;
- a `p` rule applies when its domain is `o` (or `*`), its action equals the request's, its
  resource pattern matches and its subject is one of the roles;
- with deny-override any applicable deny rule denies, otherwise any applicable allow allows;
- a granted role (default role, trusted token roles) counts as the link `g, s, role, o`, so it
  uses one of the 9 links; the owner role has its own budget (Casbin's separate `g("owner", ..)`);
- a resource with control characters or lone surrogates matches no pattern (the API refuses
  them; Casbin's `re` would read them);
- a resource pattern Casbin cannot compile, or whose meaning only a backtracking matcher
  reproduces (see patterns.py), fails every check that Casbin would evaluate it for
  (same org or `*`, same action; with the subject term first, only the subject's roles): deny
  with an error. Under allow-override Casbin's answer then depends on rule order; we deny.
"""

from __future__ import annotations

import heapq
import sys
from array import array
from collections import defaultdict
from collections.abc import Iterable, Mapping

from ..rules import TEMPLATE_DOMAIN, Rule, rule_domain
from .model import OWNER_ROLE, ModelShape
from .patterns import (
    Matcher,
    MatcherCache,
    PatternError,
    domain_applies,
    has_unmatchable,
    resource_segment,
)
from .types import CheckRequest, Decision

MAX_LINKS_FOLLOWED = 9  # Casbin's role manager: max_hierarchy_level 10 counts the subject itself

RolePaths = Mapping[str, tuple[str, ...]]
Grant = tuple[Matcher, Rule]
# The grants of one (subject, action): by the resource's first path segment, and the grants
# whose pattern may match any first segment.
FiledGrants = tuple[dict[str, tuple[Grant, ...]], tuple[Grant, ...]]


class DomainIndex:
    """The rules of one domain, indexed. Never mutated after construction."""

    __slots__ = ("name", "rules", "grants", "links", "broken", "positions")

    def __init__(
        self,
        name: str,
        rules: tuple[Rule, ...],
        matchers: MatcherCache,
        positions: array | None = None,
    ):
        # (subject, action) -> first resource segment (None: any) -> [(matcher, rule)]
        grants: dict[tuple[str, str], dict[str | None, list[Grant]]] = {}
        links: dict[str, list[str]] = defaultdict(list)
        broken: dict[str, Rule] = {}
        problems = matchers.problems
        for rule in rules:
            if rule[0] == "p" and len(rule) == 6:
                by_segment = grants.get((rule[1], rule[4]))
                if by_segment is None:
                    by_segment = grants[(rule[1], rule[4])] = {}
                segment = matchers.segment(rule[3])
                filed = by_segment.get(segment)
                if filed is None:
                    filed = by_segment[segment] = []
                filed.append((matchers.get(rule[3]), rule))
                if rule[3] in problems:
                    broken.setdefault(rule[4], rule)
            elif rule[0] == "g" and len(rule) == 4:
                links[rule[1]].append(rule[2])
        self.name = name
        self.rules = rules
        # Each rule's place in the whole policy's order (kept for models served by Casbin,
        # whose priority effects depend on it); None for the fast path.
        self.positions = positions
        self.grants: dict[tuple[str, str], FiledGrants] = {
            key: (
                {segment: tuple(value) for segment, value in filed.items() if segment is not None},
                tuple(filed.get(None, ())),
            )
            for key, filed in grants.items()
        }
        self.links = {key: tuple(value) for key, value in links.items()}
        self.broken = broken  # action -> a rule whose pattern Casbin cannot evaluate


def _intern_rule(rule: Iterable[str]) -> Rule:
    return tuple(map(sys.intern, rule))


class Snapshot:
    """One policy revision, ready to decide. Safe to share between threads.

    The only state that changes after construction is the role-path cache, whose entries are
    computed from immutable data (a race computes the same value twice) and which only holds
    subjects that appear in the policy of a known org, so unknown names cannot grow it.
    """

    def __init__(
        self,
        revision: int,
        shape: ModelShape,
        domains: dict[str, DomainIndex],
        matchers: MatcherCache,
        default_role: str | None = None,
        next_position: int = 0,
    ):
        self.revision = revision
        self.next_position = next_position
        self.shape = shape
        self.domains = domains
        self.default_role = default_role
        self._matchers = matchers
        self._pattern_domains = tuple(
            name for name, index in domains.items() if "*" in name and index.links
        )
        self._role_cache: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {}

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        revision: int,
        rules: Iterable[Rule],
        shape: ModelShape,
        default_role: str | None = None,
    ) -> Snapshot:
        by_domain: dict[str, list[Rule]] = defaultdict(list)
        positions: dict[str, array] = defaultdict(lambda: array("q"))
        count = 0
        for rule in rules:
            rule = _intern_rule(rule)
            domain = rule_domain(rule)
            by_domain[domain].append(rule)
            if not shape.fast:
                positions[domain].append(count)
            count += 1
        matchers = MatcherCache(shape.resource_function)
        domains = {
            name: DomainIndex(name, tuple(domain_rules), matchers, positions.get(name))
            for name, domain_rules in by_domain.items()
        }
        return cls(revision, shape, domains, matchers, default_role, count)

    def with_changes(
        self, revision: int, added: Iterable[Rule], removed: Iterable[Rule]
    ) -> Snapshot:
        """A new snapshot with the change applied; only the touched domains are re-indexed.

        Added rules come after every rule already there, in the order given (Casbin appends)."""
        added_by_domain: dict[str, list[tuple[Rule, int]]] = defaultdict(list)
        removed_by_domain: dict[str, set[Rule]] = defaultdict(set)
        next_position = self.next_position
        for rule in added:
            rule = _intern_rule(rule)
            added_by_domain[rule_domain(rule)].append((rule, next_position))
            next_position += 1
        for rule in removed:
            removed_by_domain[rule_domain(rule)].add(tuple(rule))
        domains = dict(self.domains)
        ordered = not self.shape.fast
        for name in set(added_by_domain) | set(removed_by_domain):
            old = domains.get(name)
            gone = removed_by_domain.get(name, set())
            old_rules = old.rules if old else ()
            old_positions = old.positions if old is not None and old.positions else ()
            pairs = [
                (rule, position)
                for rule, position in zip(
                    old_rules, old_positions or range(len(old_rules)), strict=True
                )
                if rule not in gone
            ]
            present = {rule for rule, _position in pairs}
            for rule, position in added_by_domain.get(name, ()):
                if rule not in present:
                    present.add(rule)
                    pairs.append((rule, position))
            if pairs:
                positions = array("q", (position for _rule, position in pairs))
                domains[name] = DomainIndex(
                    name,
                    tuple(rule for rule, _position in pairs),
                    self._matchers,
                    positions if ordered else None,
                )
            else:
                domains.pop(name, None)
        return Snapshot(
            revision, self.shape, domains, self._matchers, self.default_role, next_position
        )

    # -- reading ------------------------------------------------------------------------------

    @property
    def rule_count(self) -> int:
        return sum(len(index.rules) for index in self.domains.values())

    def rules(self, org: str | None = None) -> tuple[Rule, ...]:
        """Every rule, or the rules of one domain (`*` for the templates)."""
        if org is not None:
            index = self.domains.get(org)
            return index.rules if index else ()
        return tuple(rule for index in self.domains.values() for rule in index.rules)

    def ordered_rules(self, domains: Iterable[str] | None = None) -> list[Rule]:
        """The rules of `domains` (default: all) in policy order: load order, then changes in
        the order they were applied (models served by Casbin; the fast path keeps no order)."""
        names = self.domains if domains is None else dict.fromkeys(domains)
        indexes = [self.domains[name] for name in names if name in self.domains]
        runs = []
        for index in indexes:
            if index.positions is None:
                return [rule for index in indexes for rule in index.rules]
            runs.append(zip(index.positions, index.rules, strict=True))
        return [rule for _position, rule in heapq.merge(*runs)]

    def orgs(self) -> list[str]:
        return sorted(name for name in self.domains if name != TEMPLATE_DOMAIN)

    def _link_maps(self, org: str) -> list[Mapping[str, tuple[str, ...]]]:
        maps: list[Mapping[str, tuple[str, ...]]] = []
        if not self.shape.has_roles:
            return maps  # no role definition: Casbin reads no `g` rule
        index = self.domains.get(org)
        if index is not None and index.links:
            maps.append(index.links)
        for pattern in self._pattern_domains:
            if pattern != org and domain_applies(org, pattern):
                maps.append(self.domains[pattern].links)
        return maps

    def is_member(self, subject: str, org: str) -> bool:
        """Whether `subject` has a role link of its own in `org` (not via a template domain)."""
        index = self.domains.get(org)
        return index is not None and subject in index.links

    def role_paths(self, subject: str, org: str) -> RolePaths:
        """Every role `subject` holds in `org` through policy links, with the shortest path."""
        key = (subject, org)
        cached = self._role_cache.get(key)
        if cached is not None:
            return cached
        maps = self._link_maps(org)
        paths: dict[str, tuple[str, ...]] = {subject: (subject,)}
        frontier = [subject]
        for _ in range(MAX_LINKS_FOLLOWED):
            reached = []
            for name in frontier:
                for links in maps:
                    for role in links.get(name, ()):
                        if role not in paths:
                            paths[role] = paths[name] + (role,)
                            reached.append(role)
            if not reached:
                break
            frontier = reached
        if org in self.domains and any(subject in links for links in maps):
            self._role_cache[key] = paths
        return paths

    def request_roles(self, request: CheckRequest) -> RolePaths:
        """Roles for one check: policy roles plus default role, trusted token roles and owner."""
        subject, org = request.subject, request.org
        paths = self.role_paths(subject, org)
        granted: list[str] = list(request.extra_roles)
        if self.default_role and not self.is_member(subject, org):
            granted.append(self.default_role)
        owner = self.shape.owner_role and request.owner == subject
        if not granted and not owner:
            return paths
        merged = dict(paths)
        # A granted role counts as a link `g, subject, role, org`: one of the links followed.
        for role in granted:
            for name, path in self.role_paths(role, org).items():
                if len(path) <= MAX_LINKS_FOLLOWED:
                    known = merged.get(name)
                    if known is None or len(known) > len(path) + 1:
                        merged[name] = (subject, *path)
        # Casbin's owner term is a separate g("owner", p.sub, dom) with its own depth budget.
        if owner:
            for name, path in self.role_paths(OWNER_ROLE, org).items():
                if name not in merged:
                    merged[name] = (subject, *path)
        return merged

    # -- deciding -----------------------------------------------------------------------------

    def decide(self, request: CheckRequest, roles: RolePaths | None = None) -> Decision:
        """Evaluate one request. An evaluation error denies (fail closed) and says why."""
        try:
            return self._decide(request, roles)
        except PatternError as exc:
            return Decision(False, self.revision, error=str(exc))
        except Exception as exc:  # fail closed: whatever broke, the answer is deny
            return Decision(False, self.revision, error=f"evaluation failed: {exc!r}")

    def _decide(self, request: CheckRequest, roles: RolePaths | None) -> Decision:
        if roles is None:
            roles = self.request_roles(request)
        org, action = request.org, request.action
        domains = self.domains
        index = domains.get(org)
        template = None
        if self.shape.template_domain and org != TEMPLATE_DOMAIN:
            template = domains.get(TEMPLATE_DOMAIN)
        if not self.shape.subject_before_resource:
            # Casbin evaluates the pattern of every rule of the org (or `*`) and action before
            # looking at the subject, so one unusable pattern fails every such check.
            for candidate in (index, template):
                rule = candidate.broken.get(action) if candidate is not None else None
                if rule is not None:
                    problem = self._matchers.problems.get(rule[3], "unusable pattern")
                    return Decision(False, self.revision, rule, error=problem)
        resource = request.resource
        # Control characters or lone surrogates: no pattern matches (a plain deny), but a pattern
        # that cannot be evaluated still fails the check as it would for any resource.
        unmatchable = has_unmatchable(resource)
        problems = self._matchers.problems
        segment = resource_segment(resource)
        deny_override = self.shape.deny_override
        allow_rule: Rule | None = None
        allow_path: tuple[str, ...] = ()
        for candidate in (index, template):
            if candidate is None:
                continue
            grants = candidate.grants
            for role, path in roles.items():
                filed = grants.get((role, action))
                if filed is None:
                    continue
                by_segment, anywhere = filed
                for entries in (by_segment.get(segment, ()), anywhere):
                    for matches, rule in entries:
                        if unmatchable:
                            if rule[3] in problems:
                                matches(resource)  # raises PatternError
                            continue
                        if not matches(resource):
                            continue
                        effect = rule[5]
                        if effect == "deny":
                            if deny_override:
                                return Decision(False, self.revision, rule, path)
                        elif effect == "allow" and (
                            allow_rule is None or len(path) < len(allow_path)
                        ):
                            allow_rule, allow_path = rule, path
        if allow_rule is None:
            return Decision(False, self.revision)
        return Decision(True, self.revision, allow_rule, allow_path)
