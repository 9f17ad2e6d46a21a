"""The policy linter: every problem of a policy directory as `file:line:col: code: message`.

Errors (exit 1): the CSV reader's problems (syntax, field-count, unknown-ptype, empty-value,
bad-effect, casbin-misread, control-char, too-long, binary, encoding, too-large, unreadable,
symlink-outside), pattern-invalid, pattern-star, pattern-regex (regular-expression syntax in a
keyMatch2 pattern, unless allowed), pattern-unsupported (a regular expression the linear-time
matcher cannot reproduce), role-cycle, role-depth, contradicted-allow (when provable) and
global-membership (a user's `*` membership without the marker comment). Identifier and ownership
errors: invalid-org-id, api-key-in-files.
Warnings: pattern-regex (when allowed), pattern-relative, org-pattern, duplicate-rule,
contradicted-allow (when not provable), role-unassigned (unless the file says
`# rolegate: held-elsewhere ROLE`), role-unknown. docs/policy-as-code.md explains each one.
"""

from __future__ import annotations

import graphlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..engine.model import OWNER_ROLE
from ..engine.patterns import casbin_error, domain_applies, validate_pattern
from ..engine.snapshot import MAX_LINKS_FOLLOWED
from ..identifiers import org_id_problem
from ..rules import TEMPLATE_DOMAIN, Rule, format_rule
from ..store.csvfiles import (
    GLOBAL_MEMBERSHIP_MARKER,
    HELD_ELSEWHERE_MARKER,  # roles held through API keys, tokens or operators, not the files
    PolicyProblem,
    SourcedRule,
    scan_policy_dir,
)
from ..store.policies import is_api_key_link
from .resources import REGEX_METACHARS, pattern_covers, pattern_error

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True, order=True)
class LintIssue:
    """One finding: where (1-based line and column), a stable code, severity and the fix."""

    path: str
    line: int
    column: int
    code: str
    severity: str
    message: str

    def __str__(self) -> str:
        suffix = " [warning]" if self.severity == WARNING else ""
        return f"{self.path}:{self.line}:{self.column}: {self.code}: {self.message}{suffix}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LintReport:
    """The issues of one directory plus the rules that parsed (usable when there are no errors)."""

    issues: tuple[LintIssue, ...]
    rules: tuple[SourcedRule, ...]

    @property
    def errors(self) -> tuple[LintIssue, ...]:
        return tuple(issue for issue in self.issues if issue.severity == ERROR)

    @property
    def warnings(self) -> tuple[LintIssue, ...]:
        return tuple(issue for issue in self.issues if issue.severity == WARNING)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        errors, warnings = len(self.errors), len(self.warnings)
        return (
            f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)} "
            f"in {len(self.rules)} rules"
        )

    def to_dict(self) -> dict:
        return {
            "issues": [issue.to_dict() for issue in self.issues],
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "rules": len(self.rules),
        }


def _from_problem(problem: PolicyProblem) -> LintIssue:
    location = problem.location
    return LintIssue(
        location.path, location.line, location.column, problem.code, ERROR, problem.message
    )


def lint_policy_dir(
    directory: Path | str,
    *,
    resource_function: str = "keyMatch2",
    owner_role: str | None = OWNER_ROLE,
    default_role: str | None = None,
    allow_regex: bool = False,
) -> LintReport:
    """Lint every policy file under `directory` (PolicyError when it is not a directory).

    `allow_regex`: the deployment allows regular-expression syntax in resource patterns
    (ROLEGATE_ALLOW_REGEX_PATTERNS); otherwise such a pattern is an error."""
    rules, problems = scan_policy_dir(Path(directory))
    issues = [_from_problem(problem) for problem in problems]
    issues += lint_rules(
        rules,
        resource_function=resource_function,
        owner_role=owner_role,
        default_role=default_role,
        allow_regex=allow_regex,
    )
    return LintReport(tuple(sorted(set(issues))), tuple(rules))


def lint_rules(
    sourced: Sequence[SourcedRule],
    *,
    resource_function: str = "keyMatch2",
    owner_role: str | None = OWNER_ROLE,
    default_role: str | None = None,
    line_reader: Callable[[str], list[str]] | None = None,
    allow_regex: bool = False,
) -> list[LintIssue]:
    """The semantic checks over rules that parsed. `line_reader(path)` gives a file's lines."""
    context = _Context(sourced, resource_function, owner_role, default_role, line_reader)
    context.allow_regex = allow_regex
    issues: list[LintIssue] = []
    for check in (
        _duplicates,
        _resource_patterns,
        _org_patterns,
        _global_memberships,
        _identifiers,
        _cycles_and_depth,
        _contradicted_allows,
        _unassigned_roles,
        _unknown_roles,
    ):
        issues.extend(check(context))
    return issues


# --------------------------------------------------------------------------- shared facts


def _read_lines(path: str) -> list[str]:
    try:
        text = Path(path).read_bytes().decode("utf-8-sig", errors="replace")
    except OSError:
        return []
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


class _Context:
    """Indexes shared by the checks, computed once."""

    def __init__(self, sourced, function, owner_role, default_role, line_reader):
        self.sourced: list[SourcedRule] = list(sourced)
        self.function = function
        self.allow_regex = False
        self.owner_role = owner_role
        self.default_role = default_role
        self._line_reader = line_reader or _read_lines
        self._lines: dict[str, list[str]] = {}
        self.first: dict[Rule, SourcedRule] = {}
        for item in self.sourced:
            self.first.setdefault(item.rule, item)
        rules = list(self.first)
        self.p_rules = [rule for rule in rules if rule[0] == "p"]
        self.g_rules = [rule for rule in rules if rule[0] == "g"]
        self.domains = {rule[2] for rule in self.p_rules} | {rule[3] for rule in self.g_rules}
        self.orgs = sorted(name for name in self.domains if "*" not in name)
        self.pattern_domains = sorted(
            name for name in self.domains if "*" in name and name != TEMPLATE_DOMAIN
        )
        self.links: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for rule in self.g_rules:
            self.links[rule[3]][rule[1]].append(rule[2])
        self.role_names = {rule[2] for rule in self.g_rules}
        self.p_subjects = {rule[1] for rule in self.p_rules}
        self._paths: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {}

    def issue(
        self, rule: Rule, code: str, severity: str, message: str, field: int = 1
    ) -> LintIssue:
        item = self.first[rule]
        line_text = self.lines(item.location.path)
        column = _column_of(line_text, item.location.line, field)
        return LintIssue(item.location.path, item.location.line, column, code, severity, message)

    def lines(self, path: str) -> list[str]:
        if path not in self._lines:
            self._lines[path] = self._line_reader(path)
        return self._lines[path]

    def view_domains(self, org: str) -> list[str]:
        """Domains whose links apply in `org`: the org, `*` and pattern domains matching it."""
        names = [org]
        if org != TEMPLATE_DOMAIN:
            names.append(TEMPLATE_DOMAIN)
            names += [name for name in self.pattern_domains if domain_applies(org, name)]
        return names

    def view_links(self, org: str) -> dict[str, list[str]]:
        merged: dict[str, list[str]] = defaultdict(list)
        for name in self.view_domains(org):
            for member, roles in self.links.get(name, {}).items():
                merged[member].extend(roles)
        return merged

    def reachable(self, subject: str, org: str) -> dict[str, tuple[str, ...]]:
        """Roles of `subject` in `org` within Casbin's link limit, with shortest paths."""
        key = (subject, org)
        if key not in self._paths:
            links = self.view_links(org)
            paths: dict[str, tuple[str, ...]] = {subject: (subject,)}
            frontier = [subject]
            for _ in range(MAX_LINKS_FOLLOWED):
                reached = []
                for name in frontier:
                    for role in links.get(name, ()):
                        if role not in paths:
                            paths[role] = paths[name] + (role,)
                            reached.append(role)
                frontier = reached
            self._paths[key] = paths
        return self._paths[key]

    def applies_in(self, domain: str) -> list[str]:
        """Domains of rules that apply in `domain` (for `*`: every domain)."""
        if domain == TEMPLATE_DOMAIN:
            return sorted(self.domains)
        return self.view_domains(domain)


def _column_of(lines: list[str], line: int, field: int) -> int:
    """1-based column where value `field` (0 = ptype) starts on `line`; 1 when unknown."""
    if not 0 < line <= len(lines):
        return 1
    text = lines[line - 1]
    position = 0
    for _ in range(field):
        comma = text.find(",", position)
        if comma < 0:
            return 1
        position = comma + 1
    while position < len(text) and text[position] in " \t":
        position += 1
    return position + 1


# --------------------------------------------------------------------------- the checks


def _duplicates(ctx: _Context) -> Iterable[LintIssue]:
    for item in ctx.sourced:
        first = ctx.first[item.rule]
        if first is not item:
            yield LintIssue(
                item.location.path,
                item.location.line,
                1,
                "duplicate-rule",
                WARNING,
                f"`{format_rule(item.rule)}` is already at {first.location}: remove one",
            )


def _resource_patterns(ctx: _Context) -> Iterable[LintIssue]:
    seen: set[str] = set()
    for rule in ctx.p_rules:
        pattern = rule[3]
        if pattern in seen:
            continue
        seen.add(pattern)
        for code, severity, message in _pattern_findings(ctx.function, pattern, ctx.allow_regex):
            yield ctx.issue(rule, code, severity, message, field=3)


def _pattern_findings(
    function: str, pattern: str, allow_regex: bool = False
) -> list[tuple[str, str, str]]:
    linear = function in ("keyMatch2", "regexMatch")  # checked by validate_pattern below
    error = casbin_error(function, pattern) if linear else pattern_error(function, pattern)
    if error is not None:
        return [
            (
                "pattern-invalid",
                ERROR,
                f"resource pattern {pattern!r} cannot be evaluated ({error}): every check "
                "reaching this rule would fail",
            )
        ]
    findings = []
    if function == "keyMatch2":
        stray = [
            index
            for index, char in enumerate(pattern)
            if char == "*" and pattern != "*" and not pattern[:index].endswith("/")
        ]
        if stray:
            findings.append(
                (
                    "pattern-star",
                    WARNING if allow_regex else ERROR,  # a regex repeat, when regexes are allowed
                    f"resource pattern {pattern!r}: `*` is a wildcard only as a whole path "
                    "segment (`/projects/*`); elsewhere keyMatch2 reads it as a regex repeat of "
                    "the character before it",
                )
            )
        metachars = sorted(set(pattern) & REGEX_METACHARS)
        problem = validate_pattern(pattern, allow_regex=allow_regex, function=function)
        if problem is not None and not stray:
            code = "pattern-unsupported" if allow_regex else "pattern-regex"
            findings.append((code, ERROR, f"resource pattern {problem}"))
        elif metachars and problem is None:
            findings.append(
                (
                    "pattern-regex",
                    WARNING,
                    f"resource pattern {pattern!r} contains {' '.join(metachars)}: keyMatch2 "
                    "keeps their regular-expression meaning (`.` matches any character)",
                )
            )
    if function == "regexMatch":
        problem = validate_pattern(pattern, allow_regex=True, function=function)
        if problem is not None:
            findings.append(("pattern-unsupported", ERROR, f"resource pattern {problem}"))
    if not pattern.startswith("/") and pattern != "*" and function != "regexMatch":
        findings.append(
            (
                "pattern-relative",
                WARNING,
                f"resource pattern {pattern!r} does not start with `/`: resources are paths "
                "such as `/projects/42`",
            )
        )
    return findings


def _org_patterns(ctx: _Context) -> Iterable[LintIssue]:
    for rule in ctx.p_rules:
        if "*" in rule[2] and rule[2] != TEMPLATE_DOMAIN:
            yield ctx.issue(
                rule,
                "org-pattern",
                WARNING,
                f"org {rule[2]!r}: a `p` rule applies in its own org or, with `*`, in every "
                "org; this rule never applies",
                field=2,
            )


def _global_memberships(ctx: _Context) -> Iterable[LintIssue]:
    roles = ctx.role_names | ctx.p_subjects | ({ctx.owner_role} if ctx.owner_role else set())
    for rule in ctx.g_rules:
        if rule[3] != TEMPLATE_DOMAIN or rule[1] in roles:
            continue
        item = ctx.first[rule]
        lines = ctx.lines(item.location.path)
        above = lines[item.location.line - 2].strip() if item.location.line >= 2 else ""
        if above.lower() == GLOBAL_MEMBERSHIP_MARKER:
            continue
        yield ctx.issue(
            rule,
            "global-membership",
            ERROR,
            f"`{rule[1]}` is a user given role `{rule[2]}` in the `*` domain, which grants it in "
            f"every org: use an org, or confirm with the comment line `{GLOBAL_MEMBERSHIP_MARKER}` "
            "directly above",
        )


def _identifiers(ctx: _Context) -> Iterable[LintIssue]:
    """Org ids of the one grammar (`rolegate.identifiers`); no API-key links in files."""
    reported: set[tuple[str, str]] = set()
    for item in ctx.first.values():
        rule = item.rule
        domain = rule[2] if rule[0] == "p" else rule[3]
        if "*" not in domain and (item.location.path, domain) not in reported:
            problem = org_id_problem(domain)
            if problem is not None:
                reported.add((item.location.path, domain))
                field = 2 if rule[0] == "p" else 3
                yield ctx.issue(rule, "invalid-org-id", ERROR, f"org {problem}", field=field)
        if is_api_key_link(rule) or (rule[0] == "p" and rule[1].startswith("apikey:")):
            yield ctx.issue(
                rule,
                "api-key-in-files",
                ERROR,
                f"`{rule[1]}` is an API key: a key and its roles are created together through "
                "the admin API (`rolegate org keys create`), never in policy files",
            )


def _cycles_and_depth(ctx: _Context) -> Iterable[LintIssue]:
    reported: set[Rule] = set()
    reported_cycles: set[frozenset[str]] = set()
    views = [*ctx.orgs, TEMPLATE_DOMAIN] if ctx.g_rules else []
    for org in views:
        links = ctx.view_links(org)
        domains = ctx.view_domains(org)
        yield from _cycles(ctx, org, links, domains, reported_cycles)
        # In the template view a member's own link still has to be followed: one link less.
        limit = MAX_LINKS_FOLLOWED - (org == TEMPLATE_DOMAIN)
        yield from _too_deep(ctx, org, links, domains, limit, reported)


def _link_rule(ctx: _Context, member: str, role: str, domains: Sequence[str]) -> Rule:
    for domain in domains:
        rule = ("g", member, role, domain)
        if rule in ctx.first:
            return rule
    raise KeyError((member, role))


def _cycles(ctx, org, links, domains, reported) -> Iterable[LintIssue]:
    remaining = {member: list(roles) for member, roles in links.items()}
    while True:
        try:
            graphlib.TopologicalSorter(remaining).prepare()
            return
        except graphlib.CycleError as error:
            cycle = list(reversed(error.args[1]))  # TopologicalSorter lists predecessors
        pairs = list(zip(cycle, cycle[1:], strict=False))
        remaining[pairs[0][0]].remove(pairs[0][1])
        key = frozenset(pairs)
        if key in reported:
            continue
        reported.add(key)
        rules = sorted(
            (_link_rule(ctx, member, role, domains) for member, role in pairs),
            key=lambda rule: (ctx.first[rule].location.path, ctx.first[rule].location.line),
        )
        in_templates = all(rule[3] == TEMPLATE_DOMAIN for rule in rules)
        where = "the templates (every org)" if in_templates else f"org {org!r}"
        yield ctx.issue(
            rules[0],
            "role-cycle",
            ERROR,
            f"roles inherit each other in {where}: {' -> '.join(cycle)}; remove one of these links",
            field=2,
        )


def _too_deep(ctx, org, links, domains, limit, reported) -> Iterable[LintIssue]:
    has_parent = {role for roles in links.values() for role in roles}
    sources = [name for name in links if name not in has_parent]
    done: dict[frozenset[str], None] = {}
    for source in sources:
        key = frozenset(links[source])
        if key in done:  # members with the same roles have the same chains
            continue
        done[key] = None
        parents: dict[str, str] = {}  # role -> the member it was reached from
        depth = {source: 0}
        frontier = [source]
        while frontier:
            reached = []
            for name in frontier:
                for role in links.get(name, ()):
                    if role not in depth:
                        depth[role] = depth[name] + 1
                        parents[role] = name
                        reached.append(role)
            frontier = reached
        for role, links_needed in depth.items():
            if links_needed <= limit:
                continue
            rule = _link_rule(ctx, parents[role], role, domains)
            if rule in reported:
                continue
            reported.add(rule)
            chain = [role]
            while chain[-1] in parents:  # up to the source, which has no parent
                chain.append(parents[chain[-1]])
            chain.reverse()
            where = (
                "in the templates (plus one membership link)"
                if org == TEMPLATE_DOMAIN
                else f"in org {org!r}"
            )
            yield ctx.issue(
                rule,
                "role-depth",
                ERROR,
                f"role `{role}` is {links_needed} links from `{source}` {where}: "
                f"{' -> '.join(chain)}; Casbin follows at most {MAX_LINKS_FOLLOWED} links and "
                "silently ignores roles beyond; flatten the hierarchy",
                field=2,
            )


def _contradicted_allows(ctx: _Context) -> Iterable[LintIssue]:
    denies: dict[str, list[Rule]] = defaultdict(list)
    for rule in ctx.p_rules:
        if rule[5] == "deny":
            denies[rule[4]].append(rule)
    for allow in ctx.p_rules:
        if allow[5] != "allow":
            continue
        subject, domain, pattern, action = allow[1:5]
        inherited = ctx.reachable(subject, domain)
        best: tuple[Rule, bool] | None = None
        for deny in denies.get(action, ()):
            if deny[2] not in (domain, TEMPLATE_DOMAIN) or deny[1] not in inherited:
                continue
            covers = pattern_covers(ctx.function, deny[3], pattern)
            if covers is False:
                continue
            if best is None or (covers and not best[1]):
                best = (deny, bool(covers))
            if covers:
                break
        if best is None:
            continue
        deny, certain = best
        via = (
            "the same subject"
            if deny[1] == subject
            else f"a role `{subject}` inherits ({' -> '.join(inherited[deny[1]])})"
        )
        at = ctx.first[deny].location
        if certain:
            yield ctx.issue(
                allow,
                "contradicted-allow",
                ERROR,
                f"this allow never takes effect: `{format_rule(deny)}` ({at}) denies the same "
                f"action on a pattern covering {pattern!r} for {via}; remove one of the two",
            )
        else:
            yield ctx.issue(
                allow,
                "contradicted-allow",
                WARNING,
                f"this allow probably never takes effect: `{format_rule(deny)}` ({at}) denies "
                f"the same action for {via} and its pattern matches every sample of {pattern!r}",
            )


def _held_elsewhere(ctx: _Context, path: str) -> set[str]:
    """Roles a file declares as held outside the files (`# rolegate: held-elsewhere a, b`)."""
    cache = ctx.__dict__.setdefault("_held_elsewhere", {})
    if path not in cache:
        cache[path] = _read_held_elsewhere(ctx, path)
    return cache[path]


def _read_held_elsewhere(ctx: _Context, path: str) -> set[str]:
    names: set[str] = set()
    for line in ctx.lines(path):
        text = line.strip()
        if text.lower().startswith(HELD_ELSEWHERE_MARKER):
            names.update(
                name.strip() for name in text[len(HELD_ELSEWHERE_MARKER) :].split(",") if name
            )
    return names


def _unassigned_roles(ctx: _Context) -> Iterable[LintIssue]:
    builtin = {ctx.owner_role, ctx.default_role} - {None}
    seen: set[tuple[str, str]] = set()
    for rule in ctx.p_rules:
        subject, domain = rule[1], rule[2]
        if subject in builtin or (subject, domain) in seen:
            continue
        seen.add((subject, domain))
        if subject in _held_elsewhere(ctx, ctx.first[rule].location.path):
            continue
        if any(
            subject in ctx.links.get(name, {})
            or any(subject in roles for roles in ctx.links.get(name, {}).values())
            for name in ctx.applies_in(domain)
        ):
            continue
        yield ctx.issue(
            rule,
            "role-unassigned",
            WARNING,
            f"`{subject}` is granted permissions but no `g` line assigns it (nor is it a member "
            "itself): a typo, or a role nobody holds (tokens may still carry it)",
        )


def _unknown_roles(ctx: _Context) -> Iterable[LintIssue]:
    builtin = {ctx.owner_role, ctx.default_role} - {None}
    grantees: dict[str, set[str]] = defaultdict(set)
    for rule in ctx.p_rules:
        grantees[rule[2]].add(rule[1])
    for rule in ctx.g_rules:
        role, domain = rule[2], rule[3]
        if role in builtin:
            continue
        scope = ctx.applies_in(domain)
        if any(role in grantees.get(name, ()) or role in ctx.links.get(name, {}) for name in scope):
            continue
        yield ctx.issue(
            rule,
            "role-unknown",
            WARNING,
            f"role `{role}` is assigned here but no rule grants it permissions or another role: "
            "check the spelling",
            field=2,
        )


__all__ = [
    "ERROR",
    "GLOBAL_MEMBERSHIP_MARKER",
    "HELD_ELSEWHERE_MARKER",
    "WARNING",
    "LintIssue",
    "LintReport",
    "lint_policy_dir",
    "lint_rules",
]
