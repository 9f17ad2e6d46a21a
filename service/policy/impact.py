"""Rule diff and access impact: who gains or loses what, from effective permissions.

Both rule sets are loaded into real engines and evaluated, so the impact follows roles, templates,
deny-override and Casbin's link limit exactly as decisions do. For each org touched by the change
(every org when templates change):

- subjects: every name with a membership line (`g`) of its own in the org, in either rule set.
  Casbin cannot tell users from roles, so an org-local role that inherits another role appears too.
- (resource pattern, action) pairs: every pair of the `p` rules that apply to the org (its own and
  the templates), in either rule set.
- samples: each pattern is evaluated on concrete resources: its own samples (`/documents/:id` ->
  `/documents/{id}`, `/projects/*` -> `/projects/{any}` and `/projects/{any}/{more}`) plus the
  samples of every other pattern of the org it matches (so `/documents/*` is also tried on
  `/documents/finance/{any}`).
  The access to a pair is `all`, `some` or `none` of its samples.
- owner: when `owner` rules exist, the pairs are also evaluated with the subject owning the
  resource; that variant is reported only when it differs from the plain one.

A change is reported when a sample's decision flips: `gain` (only deny -> allow), `loss` (only
allow -> deny) or `mixed`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..engine import CheckRequest, Engine, ModelShape, reads
from ..engine.model import OWNER_ROLE
from ..rules import TEMPLATE_DOMAIN, Rule, format_rule, rule_domain
from ..store.policies import ChangeSet
from .resources import matches, sample_resources

MAX_EXAMPLES = 3
MAX_NAMES_SHOWN = 10


@dataclass(frozen=True, order=True)
class AccessChange:
    """One subject's access to one (pattern, action) before and after."""

    org: str
    subject: str
    resource: str
    action: str
    as_owner: bool
    change: str  # gain | loss | mixed
    before: str  # all | some | none
    after: str
    examples: tuple[str, ...]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["examples"] = list(self.examples)
        return data

    def describe(self) -> str:
        sign = {"gain": "+", "loss": "-"}.get(self.change, "~")
        owner = " (as owner)" if self.as_owner else ""
        return f"{sign} {self.action} {self.resource}{owner}  {self.before} -> {self.after}"


@dataclass(frozen=True)
class ImpactGroup:
    """Subjects of one org whose access changes identically: (pattern, action, as_owner,
    change, before, after, examples) per changed pair."""

    org: str
    subjects: tuple[str, ...]
    changes: tuple[tuple, ...]


@dataclass(frozen=True)
class PolicyDiff:
    """Rule changes between two rule sets and their access impact."""

    old_label: str
    new_label: str
    changes: ChangeSet
    groups: tuple[ImpactGroup, ...]  # subjects of one org with identical changes
    orgs: tuple[str, ...]  # the orgs evaluated

    @property
    def empty(self) -> bool:
        return self.changes.is_empty()

    @property
    def impact(self) -> list[AccessChange]:
        """Every (subject, pattern, action) whose access changes, by org and subject."""
        changes = [
            AccessChange(group.org, subject, *item)
            for group in self.groups
            for subject in group.subjects
            for item in group.changes
        ]
        changes.sort(key=_change_order)
        return changes

    def to_dict(self) -> dict:
        return {
            "old": self.old_label,
            "new": self.new_label,
            "added": [format_rule(rule) for rule in self.changes.added],
            "removed": [format_rule(rule) for rule in self.changes.removed],
            "orgs_evaluated": list(self.orgs),
            "impact": [change.to_dict() for change in self.impact],
        }

    # -- rendering ----------------------------------------------------------------------------

    def _rules_by_org(self) -> dict[str, list[tuple[str, Rule]]]:
        grouped: dict[str, list[tuple[str, Rule]]] = defaultdict(list)
        for sign, rules in (("-", self.changes.removed), ("+", self.changes.added)):
            for rule in rules:
                grouped[_domain(rule)].append((sign, rule))
        return dict(sorted(grouped.items(), key=lambda item: (item[0] != TEMPLATE_DOMAIN, item[0])))

    def _impact_by_org(self) -> dict[str, list[tuple[list[str], list[AccessChange]]]]:
        """org -> [(subjects, their identical changes)], subjects with equal changes grouped."""
        merged: dict[str, dict[tuple, list[str]]] = defaultdict(dict)
        for group in self.groups:
            merged[group.org].setdefault(group.changes, []).extend(group.subjects)
        result = {}
        for org in sorted(merged):
            entries = []
            for changes, subjects in merged[org].items():
                subjects = sorted(subjects)
                described = [AccessChange(org, subjects[0], *item) for item in changes]
                entries.append((subjects, described))
            result[org] = sorted(entries, key=lambda entry: entry[0][0])
        return result

    def render_text(self, max_rules: int = 200) -> str:
        out = [
            f"Rule changes ({self.old_label} -> {self.new_label}): "
            f"{len(self.changes.added)} added, {len(self.changes.removed)} removed"
        ]
        for org, rules in self._rules_by_org().items():
            out.append(f"  {_org_label(org)}")
            shown = rules if max_rules <= 0 else rules[:max_rules]
            out += [f"    {sign} {format_rule(rule)}" for sign, rule in shown]
            if len(rules) > len(shown):
                out.append(f"    ... and {len(rules) - len(shown)} more")
        if self.empty:
            return "No rule changes.\n"
        impact = self._impact_by_org()
        out.append("Access impact:")
        if not impact:
            out.append("  no subject gains or loses access")
        for org, entries in impact.items():
            out.append(f"  {org}")
            for subjects, changes in entries:
                out.append(f"    {_names(subjects)}")
                out += [f"      {change.describe()}" for change in changes]
                examples = sorted({e for change in changes for e in change.examples})
                if examples:
                    out.append(f"      e.g. {', '.join(examples[:MAX_EXAMPLES])}")
        return "\n".join(out) + "\n"

    def render_markdown(self, max_rules: int = 200) -> str:
        if self.empty:
            return "**No rule changes.**\n"
        out = [
            f"### Rule changes: {len(self.changes.added)} added, "
            f"{len(self.changes.removed)} removed",
            "",
            "| | org | rule |",
            "|---|---|---|",
        ]
        for org, rules in self._rules_by_org().items():
            shown = rules if max_rules <= 0 else rules[:max_rules]
            out += [f"| {sign} | `{org}` | `{format_rule(rule)}` |" for sign, rule in shown]
            if len(rules) > len(shown):
                out.append(f"| | `{org}` | ... and {len(rules) - len(shown)} more |")
        out += ["", "### Access impact", ""]
        impact = self._impact_by_org()
        if not impact:
            out.append("No subject gains or loses access.")
        for org, entries in impact.items():
            out += [
                f"#### {org}",
                "",
                "| subjects | change | action | resource | before | after |",
                "|---|---|---|---|---|---|",
            ]
            for subjects, changes in entries:
                for change in changes:
                    owner = " (as owner)" if change.as_owner else ""
                    out.append(
                        f"| {_names(subjects)} | {change.change} | `{change.action}` | "
                        f"`{change.resource}`{owner} | {change.before} | {change.after} |"
                    )
            out.append("")
        return "\n".join(out).rstrip("\n") + "\n"


def _domain(rule: Rule) -> str:
    try:
        return rule_domain(rule)
    except (ValueError, IndexError):
        return "?"


def _org_label(org: str) -> str:
    return "* (templates)" if org == TEMPLATE_DOMAIN else org


def _names(subjects: Sequence[str]) -> str:
    shown = ", ".join(subjects[:MAX_NAMES_SHOWN])
    if len(subjects) > MAX_NAMES_SHOWN:
        shown += f" and {len(subjects) - MAX_NAMES_SHOWN} more"
    return shown


# --------------------------------------------------------------------------- evaluation


class _OrgView:
    """One rule set's engine, answering for one org with decisions shared by equal role sets."""

    def __init__(self, engine: Engine, org: str):
        self.engine = engine
        self.snapshot = engine.snapshot
        self.org = org
        self.fast = engine.shape.fast
        self.grantees = {grant.subject for grant in _grants(self.snapshot, org)}
        # member -> its direct roles in this org (org, template and matching pattern domains)
        self.direct: dict[str, list[str]] = defaultdict(list)
        for link in reads.links_in(self.snapshot, org):
            self.direct[link.member].append(link.role)
        self._by_links: dict[tuple, tuple] = {}
        self._decisions: dict[tuple, bool] = {}

    def _request(self, subject: str, resource: str, action: str, as_owner: bool) -> CheckRequest:
        return CheckRequest(subject, self.org, resource, action, subject if as_owner else "")

    def key(self, subject: str, as_owner: bool):
        """(group, roles): the group is what decisions depend on, the roles some rule names.

        Subjects with the same direct roles reach the same roles, so their decisions are
        computed once (the subject's own name counts only when a rule names it).
        """
        if not self.fast:
            return (subject, as_owner), None
        own = subject if subject in self.grantees else None
        signature = (tuple(sorted(self.direct.get(subject, ()))), own, as_owner)
        cached = self._by_links.get(signature)
        if cached is None:
            roles = reads.roles_of(self.snapshot, subject, self.org, owner=as_owner)
            group = frozenset(name for name in roles if name in self.grantees)
            cached = self._by_links[signature] = (group, roles)
        return cached

    def allowed(self, subject: str, resource: str, action: str, as_owner: bool) -> bool:
        group, roles = self.key(subject, as_owner)
        memo = (group, resource, action)
        answer = self._decisions.get(memo)
        if answer is None:
            request = self._request(subject, resource, action, as_owner)
            if self.fast:
                answer = self.snapshot.decide(request, roles).allowed
            else:
                answer = self.engine.check(request, self.snapshot).allowed
            self._decisions[memo] = answer
        return answer


def _grants(snapshot, org: str) -> list[reads.Grant]:
    """The `p` rules of the org and the templates (whatever the model's domain term)."""
    return [
        grant for name in (org, TEMPLATE_DOMAIN) for grant in reads.grants(snapshot.rules(name))
    ]


def _members(engine: Engine, org: str) -> set[str]:
    """Names with a membership line of their own in the org (not via the `*` templates)."""
    return {
        link.member for link in reads.links_in(engine.snapshot, org) if link.org != TEMPLATE_DOMAIN
    }


def _pairs(engines: Sequence[Engine], org: str) -> dict[str, set[str]]:
    """action -> resource patterns of the p rules applying in `org`, in any of the engines."""
    pairs: dict[str, set[str]] = defaultdict(set)
    for engine in engines:
        for grant in _grants(engine.snapshot, org):
            pairs[grant.action].add(grant.resource)
    return pairs


def _owner_matters(engines: Sequence[Engine], org: str) -> bool:
    """Whether some rule applying in `org` is held through the built-in `owner` role."""
    if not engines[0].shape.owner_role:
        return False
    for engine in engines:
        owner_roles = reads.role_reach(engine.snapshot, OWNER_ROLE, org)
        if any(grant.subject in owner_roles for grant in _grants(engine.snapshot, org)):
            return True
    return False


def _samples(function: str, patterns: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """pattern -> its own samples plus the samples of every other pattern it matches."""
    patterns = sorted(patterns)
    own = {pattern: sample_resources(function, pattern) for pattern in patterns}
    every = sorted({sample for samples in own.values() for sample in samples})
    return {
        pattern: tuple(
            dict.fromkeys([*own[pattern], *(s for s in every if matches(function, pattern, s))])
        )
        for pattern in patterns
    }


def _coverage(answers: Sequence[bool]) -> str:
    if all(answers):
        return "all"
    return "some" if any(answers) else "none"


def _org_impact(old: Engine, new: Engine, org: str) -> list[ImpactGroup]:
    engines = (old, new)
    function = old.shape.resource_function
    views = (_OrgView(old, org), _OrgView(new, org))
    subjects = sorted(_members(old, org) | _members(new, org))
    variants = (False, True) if _owner_matters(engines, org) else (False,)
    pairs = _pairs(engines, org)
    samples = _samples(function, {pattern for patterns in pairs.values() for pattern in patterns})
    samples_by_action = {
        action: {pattern: samples[pattern] for pattern in patterns}
        for action, patterns in pairs.items()
    }
    result: list[ImpactGroup] = []
    groups: dict[tuple, list[str]] = defaultdict(list)
    for subject in subjects:
        key = tuple(view.key(subject, owner)[0] for view in views for owner in variants)
        groups[key if views[0].fast else (subject,)].append(subject)
    for members in groups.values():
        representative = members[0]
        found: list[tuple] = []
        for action in sorted(samples_by_action):
            for pattern, tried in sorted(samples_by_action[action].items()):
                if not tried:
                    continue
                plain = None
                for as_owner in variants:
                    before = [views[0].allowed(representative, s, action, as_owner) for s in tried]
                    after = [views[1].allowed(representative, s, action, as_owner) for s in tried]
                    if before == after:
                        transition = None
                    else:
                        flips = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
                        kind = {a for _, a in flips}
                        change = (
                            "gain" if kind == {True} else "loss" if kind == {False} else "mixed"
                        )
                        examples = tuple(
                            s for s, b, a in zip(tried, before, after, strict=True) if b != a
                        )[:MAX_EXAMPLES]
                        transition = (change, _coverage(before), _coverage(after), examples)
                    if not as_owner:
                        plain = transition
                    elif transition == plain:
                        continue
                    if transition is not None:
                        found.append((pattern, action, as_owner, *transition))
        if found:
            result.append(ImpactGroup(org, tuple(members), tuple(found)))
    return result


def _change_order(change: AccessChange) -> tuple:
    return (change.org, change.subject, change.action, change.resource, change.as_owner)


def _orgs_to_evaluate(old: Engine, new: Engine, changes: ChangeSet) -> list[str]:
    touched = changes.domains()
    every = set(old.snapshot.orgs()) | set(new.snapshot.orgs())
    every = {org for org in every if "*" not in org}
    if any("*" in domain for domain in touched):
        return sorted(every)
    return sorted(touched & every)


def diff_rules(
    old_rules: Iterable[Rule],
    new_rules: Iterable[Rule],
    *,
    model_path: Path | str,
    shape: ModelShape | None = None,
    old_label: str = "old",
    new_label: str = "new",
) -> PolicyDiff:
    """The rule changes from `old_rules` to `new_rules` and their access impact."""
    old_rules, new_rules = list(old_rules), list(new_rules)
    changes = ChangeSet.between(old_rules, new_rules)
    if shape is None:
        old = Engine.from_model_file(model_path)
        shape = old.shape
    else:
        old = Engine(Path(model_path), shape)
    new = Engine(Path(model_path), shape)
    if changes.is_empty():
        return PolicyDiff(old_label, new_label, changes, (), ())
    old.load(0, set(old_rules))
    new.load(1, set(new_rules))
    orgs = _orgs_to_evaluate(old, new, changes)
    groups = [group for org in orgs for group in _org_impact(old, new, org)]
    return PolicyDiff(old_label, new_label, changes, tuple(groups), tuple(orgs))
