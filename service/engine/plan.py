"""Query plans: for which orgs, owners and parameter values a subject may act on a template.

    plan = plan_condition(snapshot, PlanRequest("bob", "read", "/documents/:id", ("acme",)))
    # {"and": [{"eq": ["org", "acme"]}, ...]}   (JSON-ready, see docs/data-filtering.md)

The condition C is exact: for every org O of the request, owner W and parameter values V
(non-empty, no `/`, no control characters), `evaluate(C, {"org": O, "owner": W, **V})` equals
`snapshot.decide(CheckRequest(subject, O, template filled with V, action, W, roles))`, and C is
false for every other org. It is computed from the snapshot's own reading of the rules (roles
via `request_roles`, the regular expression keyMatch2 builds via `key_match2_source`):

- per org, the allow and deny rules reachable by the subject's roles, once without and once
  with the owner role (the owner rule applies when `owner` equals the subject);
- per rule, the condition under which its pattern matches the filled template: the pattern's
  regular expression is read as literal characters, `[^/]+` and `.*`, and run as an automaton
  over the template, with each parameter consumed symbolically (a constraint on that field).

Anything else in a pattern (a regex construct the deployment opted into, a constraint a `like`
glob cannot state) raises `PlanNotExpressible`: a plan is exact or it is not given.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..rules import TEMPLATE_DOMAIN, Rule
from .patterns import compile_matcher, key_match2_source, pattern_problem
from .snapshot import Snapshot
from .types import CheckRequest

RESERVED_FIELDS = ("org", "owner")
# Each parameter multiplies the ways a pattern's `*` runs can align with the template: a bound
# keeps a hostile template from making a plan exponentially large.
MAX_PARAMETERS = 8
MAX_TEMPLATE_CHARS = 256  # each character is one automaton step per pattern
PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Conditions, internally: True | False | ("and", (C, ...)) | ("or", (C, ...)) | ("not", C)
# | ("eq", field, value) | ("in", field, (value, ...)) | ("like", field, glob). Hashable, so
# equal sub-conditions merge.
Condition = bool | tuple


class PlanError(Exception):
    """A plan that cannot be given; `code` names the reason for clients."""

    code = "plan_error"


class TemplateError(PlanError):
    """The resource template is not literal segments and `:name` parameters."""

    code = "invalid_template"


class PlanNotExpressible(PlanError):
    """The policy holds a construct no exact condition can state (never an approximate plan)."""

    code = "plan_not_expressible"


class PlanUnsupportedModel(PlanNotExpressible):
    """Plans are computed for the fast evaluator's model shape with keyMatch2 resources only."""

    code = "plan_unsupported_model"


# -- templates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """`/projects/:pid/documents/:id` as literal text and parameter slots, in order."""

    text: str
    items: tuple[str, ...]  # literal characters, and "\0name" for a parameter slot
    params: tuple[str, ...]


def parse_template(text: str) -> Template:
    """Literal segments and whole-segment `:name` parameters; anything else is a TemplateError."""
    if not text.isprintable():
        raise TemplateError(f"template {text!r}: contains control characters")
    if len(text) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"template: longer than {MAX_TEMPLATE_CHARS} characters")
    items: list[str] = []
    params: list[str] = []
    for position, segment in enumerate(text.split("/")):
        if position:
            items.append("/")
        if segment.startswith(":"):
            name = segment[1:]
            if not PARAMETER_NAME.fullmatch(name):
                raise TemplateError(
                    f"template {text!r}: parameter {segment!r} is not a name "
                    "(letters, digits, _; not starting with a digit)"
                )
            if name in RESERVED_FIELDS:
                raise TemplateError(
                    f"template {text!r}: a parameter may not be named {name!r} "
                    "(org and owner are fields of every plan)"
                )
            if name in params:
                raise TemplateError(f"template {text!r}: parameter {segment!r} appears twice")
            params.append(name)
            if len(params) > MAX_PARAMETERS:
                raise TemplateError(f"template {text!r}: more than {MAX_PARAMETERS} parameters")
            items.append("\0" + name)
        elif ":" in segment or "*" in segment:
            raise TemplateError(
                f"template {text!r}: segment {segment!r} mixes text with ':' or '*'; "
                "a template has literal segments and whole-segment :name parameters"
            )
        else:
            items.extend(segment)
    return Template(text, tuple(items), tuple(params))


def fill_template(template: Template, values: Mapping[str, str]) -> str:
    """The resource a check would name for these parameter values."""
    return "".join(values[item[1:]] if item.startswith("\0") else item for item in template.items)


# -- conditions ------------------------------------------------------------------------------


def _dedupe(items: Iterable[Condition]) -> list[Condition]:
    return list(dict.fromkeys(items))


def _merge_values(
    items: list[Condition], combine: Callable[[list[str], Iterable[str]], list[str]]
) -> list[Condition] | None:
    """Merge `eq`/`in` atoms on one field into one `in` (None: the merge made it empty)."""
    values: dict[str, list[str]] = {}
    for item in items:
        if isinstance(item, tuple) and item[0] in ("eq", "in"):
            found = (item[2],) if item[0] == "eq" else item[2]
            known = values.get(item[1])
            values[item[1]] = list(found) if known is None else combine(known, found)
    merged: list[Condition] = []
    placed: set[str] = set()
    for item in items:
        if isinstance(item, tuple) and item[0] in ("eq", "in"):
            field = item[1]
            if field in placed:
                continue
            placed.add(field)
            found = values[field]
            if not found:
                return None
            merged.append(
                ("eq", field, found[0]) if len(found) == 1 else ("in", field, tuple(found))
            )
        else:
            merged.append(item)
    return merged


def _union(known: list[str], found: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([*known, *found]))


def _intersection(known: list[str], found: Iterable[str]) -> list[str]:
    wanted = set(found)
    return [value for value in known if value in wanted]


def _fold_likes(kind: str, items: list[Condition]) -> list[Condition] | None:
    """Values against globs on the same field: `v or like g` drops a v that g matches; `v and
    like g` keeps only the values g matches and drops the glob (None: nothing is left)."""
    globs: dict[str, list[Glob]] = {}
    for item in items:
        if isinstance(item, tuple) and item[0] == "like":
            globs.setdefault(item[1], []).append(glob_regex(item[2]))
    if not globs:
        return items
    folded: list[Condition] = []
    for item in items:
        if not (isinstance(item, tuple) and item[0] in ("eq", "in", "like") and item[1] in globs):
            folded.append(item)
            continue
        if item[0] == "like":
            if kind == "or" or not any(
                isinstance(other, tuple) and other[0] in ("eq", "in") and other[1] == item[1]
                for other in items
            ):
                folded.append(item)
            continue
        values = (item[2],) if item[0] == "eq" else item[2]
        patterns = globs[item[1]]
        if kind == "or":
            kept = [v for v in values if not any(p.fullmatch(v) for p in patterns)]
        else:
            kept = [v for v in values if all(p.fullmatch(v) for p in patterns)]
            if not kept:
                return None
        if kept:
            folded.append(
                ("eq", item[1], kept[0]) if len(kept) == 1 else ("in", item[1], tuple(kept))
            )
    return folded


def _junction(kind: str, items: Iterable[Condition]) -> Condition:
    """`and`/`or` with constants folded, nesting flattened, duplicates and absorbed terms gone."""
    unit, zero = (True, False) if kind == "and" else (False, True)
    other = "or" if kind == "and" else "and"
    flat: list[Condition] = []
    for item in items:
        if item is zero:
            return zero
        if item is unit:
            continue
        if isinstance(item, tuple) and item[0] == kind:
            flat.extend(item[1])
        else:
            flat.append(item)
    flat = _dedupe(flat)
    merged = _merge_values(flat, _intersection if kind == "and" else _union)
    if merged is not None:
        merged = _fold_likes(kind, merged)
    if merged is None:
        return zero
    present = set(merged)
    if any(isinstance(item, tuple) and item[0] == "not" and item[1] in present for item in merged):
        return zero  # x and not x / x or not x
    # absorption: x or (x and y) = x; x and (x or y) = x
    kept = [
        item
        for item in merged
        if not (
            isinstance(item, tuple)
            and item[0] == other
            and any(part in present for part in item[1])
        )
    ]
    if not kept:
        return unit
    return kept[0] if len(kept) == 1 else (kind, tuple(kept))


def conj(*items: Condition) -> Condition:
    return _junction("and", items)


def disj(*items: Condition) -> Condition:
    return _junction("or", items)


def neg(item: Condition) -> Condition:
    if isinstance(item, bool):
        return not item
    if item[0] == "not":
        return item[1]
    return ("not", item)


def to_json(condition: Condition) -> Any:
    """The wire form: `true`, `{"and": [...]}`, `{"eq": ["org", "acme"]}`, ..."""
    if isinstance(condition, bool):
        return condition
    kind = condition[0]
    if kind in ("and", "or"):
        return {kind: [to_json(item) for item in condition[1]]}
    if kind == "not":
        return {"not": to_json(condition[1])}
    if kind == "in":
        return {"in": [condition[1], list(condition[2])]}
    return {kind: [condition[1], condition[2]]}


class Glob:
    """A `like` glob: `*` any run of characters, the rest literal. Matched by finding the
    literal parts left to right (linear in the value; a regex `.*a.*a.*b` backtracks)."""

    __slots__ = ("parts",)

    def __init__(self, glob: str):
        self.parts = glob.split("*")

    def fullmatch(self, value: str) -> bool:
        parts = self.parts
        if len(parts) == 1:
            return value == parts[0]
        first, middle, last = parts[0], parts[1:-1], parts[-1]
        end = len(value) - len(last)
        if end < len(first) or not value.startswith(first) or not value.endswith(last):
            return False
        position = len(first)
        for part in middle:
            found = value.find(part, position, end)
            if found < 0:
                return False
            position = found + len(part)
        return True


def glob_regex(glob: str) -> Glob:
    """The matcher of a `like` glob (see `Glob`)."""
    return Glob(glob)


def evaluate(condition: Any, values: Mapping[str, str]) -> bool:
    """The wire-form condition for one row (`values`: org, owner and every parameter)."""
    if isinstance(condition, bool):
        return condition
    ((kind, argument),) = condition.items()
    if kind == "and":
        return all(evaluate(item, values) for item in argument)
    if kind == "or":
        return any(evaluate(item, values) for item in argument)
    if kind == "not":
        return not evaluate(argument, values)
    field, operand = argument
    value = values[field]
    if kind == "eq":
        return value == operand
    if kind == "in":
        return value in operand
    if kind == "like":
        return glob_regex(operand).fullmatch(value)
    raise ValueError(f"unknown condition {kind!r}")


# -- patterns against templates --------------------------------------------------------------

SEGMENT = "SEGMENT"  # `[^/]+`: one or more characters other than `/`
ANYTHING = "ANYTHING"  # `.*`: any run of characters (the resource has no newline)
_REGEX_SYNTAX = frozenset(".^$*+?{}[]\\|()")


def pattern_tokens(pattern: str) -> tuple[str, ...]:
    """The keyMatch2 regex of `pattern` as literal characters, SEGMENT and ANYTHING."""
    source = key_match2_source(pattern)
    body = source[1:-1]  # key_match2_source anchors with ^...$
    if body == "(.*)":
        return (ANYTHING,)
    tokens: list[str] = []
    i = 0
    while i < len(body):
        if body.startswith("[^\\/]+", i):
            tokens.append(SEGMENT)
            i += 6
        elif body.startswith(".*", i):
            tokens.append(ANYTHING)
            i += 2
        elif body[i] in _REGEX_SYNTAX:
            raise PlanNotExpressible(
                f"pattern {pattern!r} uses regular-expression syntax ({body[i]!r}) that a plan "
                "cannot state exactly"
            )
        else:
            tokens.append(body[i])
            i += 1
    return tuple(tokens)


State = tuple[int, int]  # (token index, 1 when inside a SEGMENT that consumed a character)


def _closure(tokens: Sequence[str], state: State) -> list[State]:
    """`state` and the states reached from it without consuming a character."""
    reached = [state]
    index, inside = state
    if inside or index < len(tokens) and tokens[index] == ANYTHING:
        index += 1
    else:
        return reached
    reached.extend(_closure(tokens, (index, 0)))
    return reached


def _step(tokens: Sequence[str], state: State, char: str) -> list[State]:
    index, inside = state
    if inside:
        return [(index, 1)] if char != "/" else []
    if index == len(tokens):
        return []
    token = tokens[index]
    if token == ANYTHING:
        return [(index, 0)]
    if token == SEGMENT:
        return [(index, 1)] if char != "/" else []
    return [(index + 1, 0)] if token == char else []


def _parameter_paths(tokens: Sequence[str], state: State) -> list[tuple[State, tuple[str, ...]]]:
    """Every state a parameter value (no `/`) can lead to from `state`, with what it must match.

    The second item is a glob-like shape: literal characters, `*` (any run) and `+` (a run of
    one or more).
    """
    index, inside = state
    shape: list[str] = []
    if inside:
        shape.append("*")
        index += 1
    paths: list[tuple[State, tuple[str, ...]]] = []
    while True:
        token = tokens[index] if index < len(tokens) else None
        if token == ANYTHING:
            paths.append(((index, 0), (*shape, "*")))
        elif token == SEGMENT:
            paths.append(((index, 0), tuple(shape)))
            paths.append(((index, 1), (*shape, "+")))
        else:
            paths.append(((index, 0), tuple(shape)))
        if token is None or token == "/":
            return paths
        shape.append("*" if token == ANYTHING else "+" if token == SEGMENT else token)
        index += 1


def _shape_condition(field: str, shape: Sequence[str], pattern: str) -> Condition:
    """The condition on a parameter value (non-empty, no `/`) for matching `shape`."""
    pieces: list[str] = []  # literal runs and wildcards, wildcards merged
    for part in shape:
        if part in ("*", "+") and pieces and pieces[-1] and pieces[-1][0] in "*+":
            pieces[-1] += part
        elif part in ("*", "+"):
            pieces.append(part)
        elif pieces and pieces[-1] and pieces[-1][0] not in "*+":
            pieces[-1] += part
        else:
            pieces.append(part)
    wildcards = [piece for piece in pieces if piece[0] in "*+"]
    literal = [piece for piece in pieces if piece[0] not in "*+"]
    if not wildcards:
        text = "".join(literal)
        return ("eq", field, text) if text else False
    if any(piece.count("+") > 1 for piece in wildcards) or (
        any("+" in piece for piece in wildcards) and len(wildcards) > 1
    ):
        raise PlanNotExpressible(
            f"pattern {pattern!r} asks parameter :{field} for a minimum length inside a "
            "longer shape, which a `like` glob cannot state"
        )
    glob = "".join("*" if piece[0] in "*+" else piece for piece in pieces)
    if glob == "*":
        return True  # parameter values are never empty
    matches = ("like", field, glob)
    if "+" in wildcards[0]:
        # x + y: like x*y, except the one value where the run would be empty
        return conj(matches, neg(("eq", field, glob.replace("*", ""))))
    return matches


@functools.lru_cache(maxsize=4096)
def pattern_condition(pattern: str, template: Template) -> Condition:
    """When the template, filled with parameter values, matches the keyMatch2 `pattern`.

    Pure, so cached across plans (a rule's pattern meets the same few templates again).
    """
    tokens = pattern_tokens(pattern)
    closures: dict[State, list[State]] = {}

    def closure(state: State) -> list[State]:
        found = closures.get(state)
        if found is None:
            found = closures[state] = _closure(tokens, state)
        return found

    current: dict[State, Condition] = dict.fromkeys(closure((0, 0)), True)
    for item in template.items:
        reached: dict[State, list[Condition]] = {}
        for state, condition in current.items():
            if item.startswith("\0"):
                field = item[1:]
                targets = [
                    (target, conj(condition, _shape_condition(field, shape, pattern)))
                    for target, shape in _parameter_paths(tokens, state)
                ]
            else:
                targets = [(target, condition) for target in _step(tokens, state, item)]
            for target, reached_with in targets:
                if reached_with is False:
                    continue
                for closed in closure(target):
                    reached.setdefault(closed, []).append(reached_with)
        current = {}
        for state, conditions in reached.items():
            condition = conditions[0] if len(conditions) == 1 else disj(*conditions)
            if condition is not False:
                current[state] = condition
        if not current:
            return False
    return current.get((len(tokens), 0), False)


# -- plans -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanRequest:
    """Which rows of `template` may `subject` `action`, in `orgs`? `extra_roles`: granted roles
    (trusted token roles), as a check in each of these orgs would carry them."""

    subject: str
    action: str
    template: str
    orgs: tuple[str, ...]
    extra_roles: tuple[str, ...] = ()


def member_orgs(snapshot: Snapshot, subject: str) -> list[str]:
    """The orgs in which `subject` holds a role link of its own (a default role does not count).

    Same reading as `Snapshot.is_member`, over the snapshot's domains in one pass.
    """
    return sorted(
        name
        for name, index in snapshot.domains.items()
        if "*" not in name and subject in index.links
    )


def _role_rules(snapshot: Snapshot, domain: str, role: str, action: str) -> tuple[Rule, ...]:
    """The `p` rules of `role` for `action` in `domain`, from the snapshot's index."""
    index = snapshot.domains.get(domain)
    filed = index.grants.get((role, action)) if index is not None else None
    if filed is None:
        return ()
    by_segment, anywhere = filed
    return tuple(rule for entries in (*by_segment.values(), anywhere) for _, rule in entries)


def _has_unusable_pattern(snapshot: Snapshot, domain: str, action: str) -> bool:
    """Whether a `p` rule for `action` in `domain` has a pattern Casbin cannot evaluate."""
    index = snapshot.domains.get(domain)
    return index is not None and action in index.broken


class _Planner:
    """One plan's work: each pattern read and each domain's rules for the action grouped once."""

    def __init__(self, snapshot: Snapshot, request: PlanRequest, template: Template):
        self.snapshot = snapshot
        self.request = request
        self.template = template
        self.shape = snapshot.shape
        self._patterns: dict[str, Condition] = {}
        self._problems: dict[str, str | None] = {}
        self._rules: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}

    def problem(self, pattern: str) -> str | None:
        if pattern not in self._problems:
            matcher = compile_matcher(self.shape.resource_function, pattern)
            self._problems[pattern] = pattern_problem(matcher)
        return self._problems[pattern]

    def matches(self, pattern: str) -> Condition:
        found = self._patterns.get(pattern)
        if found is None:
            if self.problem(pattern):
                raise PlanNotExpressible(
                    f"pattern {pattern!r} cannot be evaluated; whether a check reaches it "
                    "depends on the resource"
                )
            found = self._patterns[pattern] = pattern_condition(pattern, self.template)
        return found

    def role_rules(self, domain: str, role: str) -> tuple[tuple[str, str], ...]:
        """[(pattern, effect)] of `role`'s `p` rules for the action in `domain`."""
        key = (domain, role)
        found = self._rules.get(key)
        if found is None:
            rules = _role_rules(self.snapshot, domain, role, self.request.action)
            found = self._rules[key] = tuple([(rule[3], rule[5]) for rule in rules])
        return found

    def roles(self, org: str, owner: str) -> frozenset[str]:
        request = CheckRequest(
            self.request.subject, org, "", self.request.action, owner, self.request.extra_roles
        )
        return frozenset(self.snapshot.request_roles(request))

    def org_condition(self, org: str) -> Condition:
        domains = [org]
        if self.shape.template_domain and org != TEMPLATE_DOMAIN:
            domains.append(TEMPLATE_DOMAIN)
        if not self.shape.subject_before_resource and any(
            _has_unusable_pattern(self.snapshot, domain, self.request.action) for domain in domains
        ):
            return False  # Casbin evaluates every such rule's pattern: one unusable fails all
        plain = self.roles(org, "")
        owned = self.roles(org, self.request.subject) if self.shape.owner_role else plain

        def grants(roles: Iterable[str]) -> tuple[Condition, Condition]:
            """(any allow rule matches, any deny rule counts and matches) for these roles."""
            patterns: dict[str, dict[str, None]] = {"allow": {}, "deny": {}}
            for domain in domains:
                for role in roles:
                    for pattern, effect in self.role_rules(domain, role):
                        if effect in patterns:
                            patterns[effect][pattern] = None
            if not self.shape.deny_override:
                patterns["deny"].clear()
            return disj(*map(self.matches, patterns["allow"])), disj(
                *map(self.matches, patterns["deny"])
            )

        allow, deny = grants(plain)
        if owned == plain:
            return conj(allow, neg(deny))
        is_owner = ("eq", "owner", self.request.subject)
        owner_allow, owner_deny = grants(owned - plain)
        if owner_deny is False:
            return conj(disj(allow, conj(is_owner, owner_allow)), neg(deny))
        owned_allowed = conj(disj(allow, owner_allow), neg(disj(deny, owner_deny)))
        return disj(conj(is_owner, owned_allowed), conj(neg(is_owner), allow, neg(deny)))


def plan_condition(snapshot: Snapshot, request: PlanRequest) -> Any:
    """The exact condition (wire form) under which the request's subject may act on a row."""
    shape = snapshot.shape
    if not shape.fast or shape.resource_function != "keyMatch2":
        raise PlanUnsupportedModel(
            "plans are computed for models the fast evaluator runs with keyMatch2 resources; "
            f"this one: {shape.reason}, resources by {shape.resource_function}"
        )
    template = parse_template(request.template)
    planner = _Planner(snapshot, request, template)
    by_condition: dict[Condition, list[str]] = {}
    for org in dict.fromkeys(request.orgs):
        condition = planner.org_condition(org)
        if condition is not False:
            by_condition.setdefault(condition, []).append(org)
    branches = [
        conj(("eq", "org", orgs[0]) if len(orgs) == 1 else ("in", "org", tuple(orgs)), condition)
        for condition, orgs in by_condition.items()
    ]
    return to_json(disj(*branches))


__all__ = [
    "PlanError",
    "PlanNotExpressible",
    "PlanRequest",
    "PlanUnsupportedModel",
    "Template",
    "TemplateError",
    "evaluate",
    "fill_template",
    "member_orgs",
    "parse_template",
    "pattern_condition",
    "plan_condition",
]
