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
- with deny-override any applicable deny rule denies, otherwise any applicable allow allows.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping

from casbin.util import key_match

from ..rules import TEMPLATE_DOMAIN, Rule, rule_domain
from .model import OWNER_ROLE, ModelShape
from .patterns import Matcher, MatcherCache, PatternError
from .types import CheckRequest, Decision

MAX_LINKS_FOLLOWED = 9  # Casbin's role manager: max_hierarchy_level 10 counts the subject itself

RolePaths = Mapping[str, tuple[str, ...]]


class DomainIndex:
    """The rules of one domain, indexed. Never mutated after construction."""

    __slots__ = ("name", "rules", "grants", "links")

    def __init__(self, name: str, rules: tuple[Rule, ...], matchers: MatcherCache):
        grants: dict[tuple[str, str], list[tuple[Matcher, Rule]]] = defaultdict(list)
        links: dict[str, list[str]] = defaultdict(list)
        for rule in rules:
            if rule[0] == "p" and len(rule) == 6:
                grants[(rule[1], rule[4])].append((matchers.get(rule[3]), rule))
            elif rule[0] == "g" and len(rule) == 4:
                links[rule[1]].append(rule[2])
        self.name = name
        self.rules = rules
        self.grants = {key: tuple(value) for key, value in grants.items()}
        self.links = {key: tuple(value) for key, value in links.items()}


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
    ):
        self.revision = revision
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
        for rule in rules:
            rule = _intern_rule(rule)
            by_domain[rule_domain(rule)].append(rule)
        matchers = MatcherCache(shape.resource_function)
        domains = {
            name: DomainIndex(name, tuple(domain_rules), matchers)
            for name, domain_rules in by_domain.items()
        }
        return cls(revision, shape, domains, matchers, default_role)

    def with_changes(
        self, revision: int, added: Iterable[Rule], removed: Iterable[Rule]
    ) -> Snapshot:
        """A new snapshot with the change applied; only the touched domains are re-indexed."""
        added_by_domain: dict[str, list[Rule]] = defaultdict(list)
        removed_by_domain: dict[str, set[Rule]] = defaultdict(set)
        for rule in added:
            rule = _intern_rule(rule)
            added_by_domain[rule_domain(rule)].append(rule)
        for rule in removed:
            removed_by_domain[rule_domain(rule)].add(tuple(rule))
        domains = dict(self.domains)
        for name in set(added_by_domain) | set(removed_by_domain):
            old = domains.get(name)
            gone = removed_by_domain.get(name, set())
            kept = [rule for rule in (old.rules if old else ()) if rule not in gone]
            present = set(kept)
            kept.extend(rule for rule in added_by_domain.get(name, ()) if rule not in present)
            if kept:
                domains[name] = DomainIndex(name, tuple(kept), self._matchers)
            else:
                domains.pop(name, None)
        return Snapshot(revision, self.shape, domains, self._matchers, self.default_role)

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

    def orgs(self) -> list[str]:
        return sorted(name for name in self.domains if name != TEMPLATE_DOMAIN)

    def _link_maps(self, org: str) -> list[Mapping[str, tuple[str, ...]]]:
        maps = []
        index = self.domains.get(org)
        if index is not None and index.links:
            maps.append(index.links)
        for pattern in self._pattern_domains:
            if pattern != org and key_match(org, pattern):
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
        paths = self.role_paths(request.subject, request.org)
        granted: list[str] = list(request.extra_roles)
        if self.default_role and not self.is_member(request.subject, request.org):
            granted.append(self.default_role)
        if self.shape.owner_role and request.owner and request.owner == request.subject:
            granted.append(OWNER_ROLE)
        if not granted:
            return paths
        merged = dict(paths)
        for role in granted:
            for name, path in self.role_paths(role, request.org).items():
                if name not in merged:
                    merged[name] = (request.subject, *path)
        return merged

    # -- deciding -----------------------------------------------------------------------------

    def decide(self, request: CheckRequest, roles: RolePaths | None = None) -> Decision:
        """Evaluate one request. An evaluation error denies (fail closed) and says why."""
        if roles is None:
            roles = self.request_roles(request)
        grant_maps = []
        index = self.domains.get(request.org)
        if index is not None:
            grant_maps.append(index.grants)
        if self.shape.template_domain and request.org != TEMPLATE_DOMAIN:
            template = self.domains.get(TEMPLATE_DOMAIN)
            if template is not None:
                grant_maps.append(template.grants)
        action, resource = request.action, request.resource
        deny_override = self.shape.deny_override
        allow: tuple[Rule, tuple[str, ...]] | None = None
        try:
            for grants in grant_maps:
                for role, path in roles.items():
                    entries = grants.get((role, action))
                    if entries is None:
                        continue
                    for matches, rule in entries:
                        if not matches(resource):
                            continue
                        effect = rule[5]
                        if effect == "deny" and deny_override:
                            return Decision(False, self.revision, rule, path)
                        if effect == "allow" and (allow is None or len(path) < len(allow[1])):
                            allow = (rule, path)
        except PatternError as exc:
            return Decision(False, self.revision, error=str(exc))
        except Exception as exc:  # fail closed: whatever broke, the answer is deny
            return Decision(False, self.revision, error=f"evaluation failed: {exc!r}")
        if allow is None:
            return Decision(False, self.revision)
        return Decision(True, self.revision, allow[0], allow[1])
