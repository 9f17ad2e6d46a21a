"""Casbin's own enforcer, for models the fast path does not understand.

Each request is answered by a `casbin.Enforcer` loaded exactly as Casbin loads a policy
(`load_policy`: rules in policy order, sorted by a `priority` field or by subject hierarchy when
the model asks for it, role links built with keyMatch domain matching for `g`). When the model
makes it provably the same answer (`ModelShape.org_scoped`), the enforcer holds only the rules of
the request's org, of `*` and of the pattern domains whose links apply there, so cost follows the
org's size; otherwise one enforcer holds every rule.

Casbin's pattern functions (keyMatch, keyMatch2, regexMatch) are replaced by the engine's
linear-time matchers, which answer the same (`patterns`); a pattern they cannot reproduce fails
the check. Request values go by the model's field names. Enforcers are built on first use and
kept in a small LRU per snapshot. Casbin's enforcer is not thread-safe (and threaded `enforce`
can hit CPython gh-106905 on 3.11), so all fallback evaluation is serialised by one lock. An
enforcer is dropped after serving many unknown subjects, because Casbin's role manager keeps an
entry for every name it was asked about.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import casbin
from casbin import persist

from ..rules import TEMPLATE_DOMAIN, Rule
from .patterns import Matcher, compile_matcher, domain_applies, has_unmatchable
from .snapshot import Snapshot
from .types import CheckRequest, Decision

_CASBIN_LOCK = threading.Lock()
MAX_ENFORCERS = 128
MAX_UNKNOWN_NAMES = 10_000
_EVERY_ORG = ""  # the cache key of the enforcer holding every rule


@lru_cache(maxsize=8192)
def _matcher(function: str, pattern: str) -> Matcher:
    return compile_matcher(function, pattern)


def _linear(function: str) -> Callable[[str, str], bool]:
    def matches(resource: str, pattern: str) -> bool:
        return bool(_matcher(function, pattern)(resource))

    return matches


LINEAR_FUNCTIONS = {name: _linear(name) for name in ("keyMatch", "keyMatch2", "regexMatch")}


class _RulesAdapter(persist.Adapter):
    """Hands Casbin a list of rules, in order, the way its file adapter would."""

    def __init__(self, rules: list[Rule]):
        self._rules = rules

    def load_policy(self, model: Any) -> None:
        sections = model.model
        for rule in self._rules:
            ptype = rule[0]
            section = sections.get(ptype[0])
            if section is not None and ptype in section:
                section[ptype].policy.append(list(rule[1:]))


MAX_EXPRESSIONS = 1024


def memoise_matcher(enforcer: casbin.Enforcer) -> None:
    """Parse the matcher once per enforcer instead of on every `enforce` (half its cost).

    Casbin builds a new evaluator from the same text and functions each call (the `g` function
    it passes is a fresh closure over the same role manager), so reusing the first is the same
    evaluation. Matchers with `eval()` give one text per rule: the cache is bounded.
    """
    parse = enforcer._get_expression
    parsed: dict[str, object] = {}

    def get_expression(expression: str, functions: Any = None) -> Any:
        found = parsed.get(expression)
        if found is None:
            if len(parsed) >= MAX_EXPRESSIONS:
                parsed.clear()
            found = parsed[expression] = parse(expression, functions)
        return found

    enforcer._get_expression = get_expression


class _OrgEnforcer:
    def __init__(self, enforcer: casbin.Enforcer, known: frozenset[str]):
        self.enforcer = enforcer
        self.known = known
        self.unknown_seen = 0


def request_values(fields: tuple[str, ...], request: CheckRequest) -> list[str]:
    """The request's values in the order of the model's request definition, by name."""
    by_name = {
        "sub": request.subject,
        "dom": request.org,
        "obj": request.resource,
        "act": request.action,
        "owner": request.owner,
    }
    return [by_name[name] for name in fields]


def _holds_link(enforcer: casbin.Enforcer, member: str, role: str) -> bool:
    """With `g = _, _` a policy link from any org is the same link (removing a temporary copy
    would remove it too)."""
    definition = enforcer.get_model()["g"]["g"]
    if definition.value.count("_") != 2:
        return False
    return any(link[:2] == [member, role] for link in definition.policy)


class CasbinFallback:
    """Decides with Casbin for one snapshot."""

    def __init__(self, model_path: Path, snapshot: Snapshot):
        self.model_path = str(model_path)
        self.snapshot = snapshot
        self.shape = snapshot.shape
        self._enforcers: OrderedDict[str, _OrgEnforcer] = OrderedDict()

    def candidate_rules(self, org: str) -> list[Rule]:
        """The rules Casbin evaluates for a request in `org`, in policy order."""
        if not self.shape.org_scoped:
            return self.snapshot.ordered_rules()
        names = [org, TEMPLATE_DOMAIN]
        names += [
            name for name in self.snapshot.domains if "*" in name and domain_applies(org, name)
        ]
        return self.snapshot.ordered_rules(dict.fromkeys(names))

    def _enforcer_for(self, org: str) -> _OrgEnforcer:
        key = org if self.shape.org_scoped else _EVERY_ORG
        cached = self._enforcers.get(key)
        if cached is not None and cached.unknown_seen < MAX_UNKNOWN_NAMES:
            self._enforcers.move_to_end(key)
            return cached
        rules = self.candidate_rules(org)
        enforcer = casbin.Enforcer(self.model_path)
        memoise_matcher(enforcer)
        for name, function in LINEAR_FUNCTIONS.items():
            enforcer.add_function(name, function)
        if self.shape.has_roles:
            enforcer.add_named_domain_matching_func("g", domain_applies)
        enforcer.set_adapter(_RulesAdapter(rules))
        enforcer.load_policy()
        known: set[str] = set()
        for rule in rules:
            known.update(rule[1:2] if rule[0] == "p" else rule[1:3])
        entry = _OrgEnforcer(enforcer, frozenset(known))
        self._enforcers[key] = entry
        if len(self._enforcers) > MAX_ENFORCERS:
            self._enforcers.popitem(last=False)
        return entry

    def _granted_roles(self, request: CheckRequest) -> list[str]:
        if not self.shape.has_roles:
            return []  # no role definition: nothing to hold a role with
        extra = list(request.extra_roles)
        if self.snapshot.default_role and not self.snapshot.is_member(request.subject, request.org):
            extra.append(self.snapshot.default_role)
        return list(dict.fromkeys(extra))

    def decide(self, request: CheckRequest) -> Decision:
        revision = self.snapshot.revision
        if has_unmatchable(request.resource):
            return Decision(False, revision)  # matches no pattern (see patterns.has_unmatchable)
        values = request_values(self.shape.request_fields, request)
        try:
            with _CASBIN_LOCK:
                entry = self._enforcer_for(request.org)
                if request.subject not in entry.known:
                    entry.unknown_seen += 1
                enforcer = entry.enforcer
                # Granted roles act as links for this check only; links already in the policy
                # are left alone (removing them afterwards would delete policy).
                added = [
                    role
                    for role in self._granted_roles(request)
                    if not _holds_link(enforcer, request.subject, role)
                    and enforcer.add_grouping_policy(request.subject, role, request.org)
                ]
                try:
                    allowed, explain = enforcer.enforce_ex(*values)
                finally:
                    for role in added:
                        enforcer.remove_grouping_policy(request.subject, role, request.org)
                    if added:
                        # Removing a link from Casbin's domain role manager also drops the copy
                        # a pattern domain (`*`) gave the org's graph: rebuild from the policy.
                        enforcer.build_role_links()
        except Exception as exc:  # Casbin raises bare exceptions; fail closed
            return Decision(False, revision, error=f"evaluation failed: {exc!r}")
        rule = ("p", *explain) if explain else None
        return Decision(bool(allowed), revision, rule, (request.subject,) if rule else ())
