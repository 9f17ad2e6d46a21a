"""Casbin's own enforcer, for models the fast path does not understand.

Each request is answered by a `casbin.Enforcer` holding only the candidate rules of the request's
org, the template domain and the pattern domains that match it, so cost still follows the org's
size. Enforcers are built per org on first use and kept in a small LRU per snapshot. Casbin's
enforcer is not thread-safe (and threaded `enforce` can hit CPython gh-106905 on 3.11), so all
fallback evaluation is serialised by one lock. An enforcer is dropped after serving many unknown
subjects, because Casbin's role manager keeps an entry for every name it was asked about.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import casbin
from casbin.util import key_match

from ..rules import TEMPLATE_DOMAIN
from .snapshot import Snapshot
from .types import CheckRequest, Decision

_CASBIN_LOCK = threading.Lock()
MAX_ENFORCERS = 128
MAX_UNKNOWN_NAMES = 10_000


class _OrgEnforcer:
    def __init__(self, enforcer: casbin.Enforcer, known: frozenset[str]):
        self.enforcer = enforcer
        self.known = known
        self.unknown_seen = 0


class CasbinFallback:
    """Decides with Casbin for one snapshot."""

    def __init__(self, model_path: Path, snapshot: Snapshot):
        self.model_path = str(model_path)
        self.snapshot = snapshot
        self._enforcers: OrderedDict[str, _OrgEnforcer] = OrderedDict()

    def _candidate_rules(self, org: str) -> list[tuple[str, ...]]:
        names = [org, TEMPLATE_DOMAIN]
        names += [name for name in self.snapshot.domains if "*" in name and key_match(org, name)]
        rules: list[tuple[str, ...]] = []
        for name in dict.fromkeys(names):
            rules.extend(self.snapshot.rules(name))
        return rules

    def _enforcer_for(self, org: str) -> _OrgEnforcer:
        cached = self._enforcers.get(org)
        if cached is not None and cached.unknown_seen < MAX_UNKNOWN_NAMES:
            self._enforcers.move_to_end(org)
            return cached
        enforcer = casbin.Enforcer(self.model_path)
        enforcer.add_named_domain_matching_func("g", key_match)
        model = enforcer.get_model()
        known: set[str] = set()
        for rule in self._candidate_rules(org):
            model.add_policy(rule[0], rule[0], list(rule[1:]))
            known.update(rule[1:2] if rule[0] == "p" else rule[1:3])
        enforcer.build_role_links()
        entry = _OrgEnforcer(enforcer, frozenset(known))
        self._enforcers[org] = entry
        if len(self._enforcers) > MAX_ENFORCERS:
            self._enforcers.popitem(last=False)
        return entry

    def decide(self, request: CheckRequest) -> Decision:
        revision = self.snapshot.revision
        extra = list(request.extra_roles)
        if self.snapshot.default_role and not self.snapshot.is_member(request.subject, request.org):
            extra.append(self.snapshot.default_role)
        try:
            with _CASBIN_LOCK:
                entry = self._enforcer_for(request.org)
                if request.subject not in entry.known:
                    entry.unknown_seen += 1
                enforcer = entry.enforcer
                fields = len(enforcer.get_model()["r"]["r"].tokens)
                values: tuple[str, ...] = (
                    request.subject,
                    request.org,
                    request.resource,
                    request.action,
                    *(request.owner,) * (fields - 4),
                )
                # Granted roles act as links for this check only; links already in the policy
                # are left alone (removing them afterwards would delete policy).
                added = [
                    role
                    for role in dict.fromkeys(extra)
                    if enforcer.add_grouping_policy(request.subject, role, request.org)
                ]
                try:
                    allowed, explain = enforcer.enforce_ex(*values)
                finally:
                    for role in added:
                        enforcer.remove_grouping_policy(request.subject, role, request.org)
        except Exception as exc:  # Casbin raises bare exceptions; fail closed
            return Decision(False, revision, error=f"evaluation failed: {exc!r}")
        rule = ("p", *explain) if explain else None
        return Decision(bool(allowed), revision, rule, (request.subject,) if rule else ())
