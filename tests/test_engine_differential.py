"""Differential property test: the engine answers exactly what Casbin answers.

Hypothesis generates rule sets (deny rules, resource patterns, `*` and pattern domains, role
chains past Casbin's depth limit of 10, cycles, users in several orgs, owner rules) and requests
(including unknown subjects, orgs and actions); every request is decided by the engine and by
`casbin.Enforcer(model, rules)` with `key_match` domain matching for `g`, and the answers must be
equal. The runs are derandomized (the same cases on every run); a failure prints the model, the
rules in Casbin's CSV form and the request. Set ROLEGATE_DIFF_SCALE=10 for a longer search.

Where Casbin raises (a resource pattern it cannot compile), the engine must deny with an error.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import casbin
import pytest
from casbin.persist import Adapter
from casbin.util import key_match
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rolegate.config import REPO_ROOT
from rolegate.engine import CheckRequest, Decision, Engine
from rolegate.rules import Rule, format_rule

SHIPPED_MODEL = REPO_ROOT / "model.conf"
SCALE = max(1, int(os.environ.get("ROLEGATE_DIFF_SCALE", "1")))

USERS = ("alice", "bob", "carol", "dave")
ROLES = ("admin", "editor", "viewer", "auditor", "owner")
CHAIN = tuple(f"c{i}" for i in range(13))  # c0 -> c1 -> ... : chains past the depth limit
ORGS = ("acme", "globex", "ac")
LINK_DOMAINS = (*ORGS, "*", "ac*", "glo*")  # pattern domains apply through key_match
RULE_DOMAINS = (*ORGS, "*", "ac*")
ACTIONS = ("read", "write", "delete")
REQUEST_SUBJECTS = (*USERS, *ROLES, "c0", "c3", "mallory")  # mallory: in no rule
REQUEST_ORGS = (*ORGS, "acx", "nowhere", "*", "ac*")  # acx: only via the ac* pattern
REQUEST_ACTIONS = (*ACTIONS, "approve")

PATTERNS = {
    "keyMatch2": (
        "/projects/*",
        "/projects/:id",
        "/projects/:id/docs/*",
        "/docs/*",
        "*",
        "/projects/1",
        "/admin",
        "/:section",
    ),
    "keyMatch": ("/projects/*", "/docs*", "*", "/admin", "/projects/1", "/projects/"),
    "regexMatch": (
        "^/projects/[0-9]+$",
        "/docs/.*",
        ".*",
        "/admin",
        "^/projects/(1|2)",
        "*broken",
        "/projects/[0-9",
    ),
    "globMatch": (
        "/projects/*",
        "/projects/**",
        "/docs/*.md",
        "*",
        "/admin",
        "**",
        "/*",
        "/**/docs/**",
        "/{projects,docs}/?",
        "/projects/[!1]",
        "{/admin,/other}/**",
        "/*/.hidden",
    ),
    "equal": ("/projects/1", "/docs/a.md", "/admin"),
}
RESOURCES = (
    "/projects/1",
    "/projects/2",
    "/projects/2/docs/x",
    "/projects",
    "/projects/",
    "/docs/a.md",
    "/docs",
    "/admin",
    "/other",
    "/",
    "x",
    "/projects/.hidden",
    "/a/docs/b.md",
)


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Variant:
    """A copy of the shipped model.conf with some parts replaced."""

    name: str
    resource: str = "keyMatch2"
    allow_override: bool = False
    owner: bool = True
    template_domain: bool = True
    subject_first: bool = False
    extra_term: str = ""

    def text(self) -> str:
        domain = '(p.dom == r.dom || p.dom == "*")' if self.template_domain else "p.dom == r.dom"
        resource = (
            "r.obj == p.obj" if self.resource == "equal" else f"{self.resource}(r.obj, p.obj)"
        )
        subject = (
            '(g(r.sub, p.sub, r.dom) || (r.owner == r.sub && g("owner", p.sub, r.dom)))'
            if self.owner
            else "g(r.sub, p.sub, r.dom)"
        )
        terms = [domain, "r.act == p.act", resource, subject]
        if self.subject_first:
            terms = [domain, "r.act == p.act", subject, resource]
        matcher = " && ".join(terms) + self.extra_term
        effect = (
            "some(where (p.eft == allow))"
            if self.allow_override
            else "some(where (p.eft == allow)) && !some(where (p.eft == deny))"
        )
        request = "sub, dom, obj, act, owner" if self.owner else "sub, dom, obj, act"
        return (
            f"[request_definition]\nr = {request}\n\n"
            "[policy_definition]\np = sub, dom, obj, act, eft\n\n"
            "[role_definition]\ng = _, _, _\n\n"
            f"[policy_effect]\ne = {effect}\n\n"
            f"[matchers]\nm = {matcher}\n"
        )


SHIPPED = Variant("shipped")
FAST_VARIANTS = (
    Variant("keyMatch", resource="keyMatch"),
    Variant("regexMatch", resource="regexMatch"),
    Variant("globMatch", resource="globMatch"),
    Variant("equal", resource="equal"),
    Variant("allow-override", allow_override=True),
    Variant("no-owner", owner=False),
    Variant("org-only", template_domain=False),
    Variant("regex-subject-first", resource="regexMatch", subject_first=True),
)
FALLBACK = Variant("extra-term", extra_term=' && r.act != "delete"')


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


def write_model(directory: Path, variant: Variant) -> Path:
    path = directory / f"{variant.name}.conf"
    path.write_text(variant.text())
    return path


def test_shipped_variant_is_the_shipped_model(model_dir):
    """The generated `shipped` text means the same as model.conf (same classification)."""
    from rolegate.engine.model import classify, load_model

    assert classify(load_model(write_model(model_dir, SHIPPED))) == classify(
        load_model(SHIPPED_MODEL)
    )


# --------------------------------------------------------------------------- Casbin side


class RulesAdapter(Adapter):
    """Hands Casbin a list of rules, the way its file adapter appends each line's tokens."""

    def __init__(self, rules: Sequence[Rule]):
        self.rules = rules

    def load_policy(self, model):
        for rule in self.rules:
            model.model[rule[0][0]][rule[0]].policy.append(list(rule[1:]))


def casbin_enforcer(model: Path, rules: Sequence[Rule]) -> casbin.Enforcer:
    enforcer = casbin.Enforcer(str(model), RulesAdapter(rules))
    enforcer.add_named_domain_matching_func("g", key_match)
    return enforcer


def casbin_answer(enforcer: casbin.Enforcer, request: CheckRequest, with_owner: bool):
    """True/False, or the exception Casbin raised."""
    values = [request.subject, request.org, request.resource, request.action]
    if with_owner:
        values.append(request.owner)
    try:
        return bool(enforcer.enforce(*values))
    except Exception as exc:
        return exc


# --------------------------------------------------------------------------- generators


@dataclass
class Case:
    rules: list[Rule]
    initial: list[Rule] = field(default_factory=list)  # loaded first, then changed into `rules`
    added: list[Rule] = field(default_factory=list)
    removed: list[Rule] = field(default_factory=list)


@st.composite
def rule_sets(draw, resource: str) -> Case:
    patterns = PATTERNS[resource]
    names = st.sampled_from((*USERS, *ROLES))
    p_rule = st.tuples(
        st.just("p"),
        names,
        st.sampled_from(RULE_DOMAINS),
        st.sampled_from(patterns),
        st.sampled_from(ACTIONS),
        st.sampled_from(("allow", "allow", "allow", "deny")),
    )
    g_rule = st.tuples(
        st.just("g"),
        names,
        st.sampled_from(ROLES),
        st.sampled_from(LINK_DOMAINS),
    )
    rules: list[Rule] = draw(st.lists(p_rule, min_size=1, max_size=25))
    rules += draw(st.lists(g_rule, max_size=20))
    if draw(st.booleans()):
        # A chain c0 -> c1 -> ... -> c{n}; a user at its start; grants on its last roles.
        length = draw(st.integers(min_value=7, max_value=len(CHAIN) - 1))
        domain = draw(st.sampled_from(("acme", "*", "ac*")))
        rules += [("g", CHAIN[i], CHAIN[i + 1], domain) for i in range(length)]
        rules.append(("g", draw(st.sampled_from(USERS)), "c0", domain))
        if draw(st.booleans()):
            rules.append(("g", CHAIN[length], "c0", domain))  # a cycle back to the start
        granted = st.integers(min_value=length - 5, max_value=length)
        for i in draw(st.lists(granted, min_size=1, max_size=2, unique=True)):
            rules.append(("p", CHAIN[i], "acme", draw(st.sampled_from(patterns)), "read", "allow"))
    order = draw(st.permutations(range(len(rules))))
    rules = [rules[i] for i in order]
    case = Case(rules=rules)
    if draw(st.booleans()):
        # Load a different policy first and reach `rules` through one change set.
        unique = list(dict.fromkeys(rules))
        added = draw(st.lists(st.sampled_from(unique), unique=True, max_size=8)) if unique else []
        removed = draw(st.lists(p_rule | g_rule, max_size=5))
        removed = [rule for rule in dict.fromkeys(removed) if rule not in set(unique)]
        case.initial = [rule for rule in unique if rule not in set(added)] + removed
        case.added, case.removed = added, removed
        case.rules = unique  # the engine keeps one copy of a duplicated rule, as Casbin's meaning
    return case


def random_requests(rng: random.Random, count: int, extra_roles: bool = False):
    for _ in range(count):
        subject = rng.choice(REQUEST_SUBJECTS)
        owner = rng.choice(("", subject, subject, "alice"))
        roles = ()
        if extra_roles and rng.random() < 0.5:
            roles = tuple(rng.sample(("admin", "viewer", "c0", "ghost"), rng.randint(1, 2)))
        yield CheckRequest(
            subject=subject,
            # acme/read more often: where the role chains grant, so depth limits get probed
            org="acme" if rng.random() < 0.3 else rng.choice(REQUEST_ORGS),
            resource=rng.choice(RESOURCES),
            action="read" if rng.random() < 0.3 else rng.choice(REQUEST_ACTIONS),
            owner=owner,
            extra_roles=roles,
        )


# --------------------------------------------------------------------------- comparison


def describe(variant: Variant, case: Case, request: CheckRequest, decision, expected) -> str:
    lines = [f"model variant {variant.name!r}:", variant.text(), "rules (Casbin CSV):"]
    lines += [f"  {format_rule(rule)}" for rule in case.rules]
    if case.initial:
        lines.append("engine loaded first:")
        lines += [f"  {format_rule(rule)}" for rule in case.initial]
        lines.append(f"then added {case.added} removed {case.removed}")
    lines.append(f"request: {request}")
    lines.append(f"engine: {decision}")
    lines.append(f"casbin: {expected!r}")
    return "\n".join(lines)


def assert_same(variant, case, request, decision: Decision, expected, *, paths=True) -> None:
    if isinstance(expected, Exception):
        assert not decision.allowed and decision.error, describe(
            variant, case, request, decision, expected
        )
        return
    assert decision.allowed == expected, describe(variant, case, request, decision, expected)
    if decision.allowed:
        # Explain comes from the same evaluation: the rule is an allow rule of the policy held
        # by the last role of the path, which starts at the subject.
        rule = decision.rule
        assert rule in case.rules and rule[5] == "allow", describe(
            variant, case, request, decision, expected
        )
        if paths:  # Casbin's own enforcer (fallback mode) names the rule only
            assert decision.path[0] == request.subject and decision.path[-1] == rule[1]


def load_engine(engine: Engine, case: Case) -> None:
    if case.initial:
        engine.load(1, case.initial)
        engine.apply(2, case.added, case.removed)
    else:
        engine.load(1, case.rules)


def run_differential(
    variant: Variant, model: Path, examples: int, per_example: int, counter: list[int]
) -> None:
    engine = Engine.from_model_file(model)
    assert engine.mode == ("fast" if not variant.extra_term else "casbin"), engine.shape.reason

    @settings(
        max_examples=examples * SCALE,
        derandomize=True,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=rule_sets(variant.resource), rng=st.randoms(use_true_random=False))
    def check(case: Case, rng: random.Random) -> None:
        load_engine(engine, case)
        enforcer = casbin_enforcer(model, case.rules)
        requests = list(random_requests(rng, per_example))
        _, batch = engine.check_many(requests)
        for request, batched in zip(requests, batch, strict=True):
            decision = engine.check(request)
            assert batched == decision, describe(variant, case, request, batched, decision)
            expected = casbin_answer(enforcer, request, variant.owner)
            assert_same(variant, case, request, decision, expected, paths=engine.mode == "fast")
        counter[0] += len(requests)

    check()


def test_shipped_model_agrees_with_casbin(model_dir):
    counter = [0]
    run_differential(SHIPPED, SHIPPED_MODEL, examples=100, per_example=100, counter=counter)
    assert counter[0] >= 10_000


@pytest.mark.parametrize("variant", FAST_VARIANTS, ids=lambda variant: variant.name)
def test_model_variant_agrees_with_casbin(model_dir, variant):
    run_differential(variant, write_model(model_dir, variant), 30, 60, [0])


def test_fallback_mode_agrees_with_casbin(model_dir):
    """A matcher term the fast path does not know: Casbin's enforcer per org, same answers."""
    run_differential(FALLBACK, write_model(model_dir, FALLBACK), 30, 40, [0])


@pytest.mark.parametrize("default_role", ["viewer", "c0"])
def test_default_and_token_roles_equal_added_links(default_role):
    """default_role and extra_roles mean the link `g, subject, role, org` for that check."""
    engine = Engine.from_model_file(SHIPPED_MODEL, default_role=default_role)

    @settings(max_examples=30 * SCALE, derandomize=True, deadline=None, database=None)
    @given(case=rule_sets("keyMatch2"), rng=st.randoms(use_true_random=False))
    def check(case: Case, rng: random.Random) -> None:
        load_engine(engine, case)
        for request in random_requests(rng, 20, extra_roles=True):
            member = any(
                rule[0] == "g" and rule[1] == request.subject and rule[3] == request.org
                for rule in case.rules
            )
            granted = [*request.extra_roles, *(() if member else (default_role,))]
            links = [("g", request.subject, role, request.org) for role in granted]
            equivalent = Case(rules=[*case.rules, *links])
            expected = casbin_answer(
                casbin_enforcer(SHIPPED_MODEL, equivalent.rules), request, True
            )
            assert_same(SHIPPED, equivalent, request, engine.check(request), expected)

    check()
