"""Differential fuzz: every model Rolegate accepts decides exactly as `casbin.Enforcer`.

Random policies and requests (at least 100,000 decisions per run, ROLEGATE_FUZZ_CASES to change)
over models served by the fast path and by Casbin's own enforcer: regex syntax in patterns (`|`,
`?`, `{n}`, `.`, `+`, groups, classes), trailing and empty segments, unicode, subjects named
like roles, role chains to depth 14, priority effects with shuffled rule order and a priority
field, reordered request fields, no role definition, `g = _, _`, no domain term, regexMatch and
keyMatch domains, deny-override. The reference is a plain `casbin.Enforcer` loaded with the same
rules in the same order (keyMatch domain matching for `g`), its matcher parsed once per policy
(Casbin re-parses the same text on every call; the evaluation is the same). Patterns are the
ones Rolegate accepts with ROLEGATE_ALLOW_REGEX_PATTERNS=1 (`validate_pattern`). A failure prints
the seed (ROLEGATE_FUZZ_SEED replays it), the model, the rules and the request.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import casbin
import pytest
from casbin.persist import Adapter
from casbin.util import builtin_operators as casbin_ops
from casbin.util import key_match

from rolegate.config import REPO_ROOT
from rolegate.engine import CheckRequest, Engine
from rolegate.engine.fallback import memoise_matcher, request_values
from rolegate.engine.patterns import validate_pattern
from rolegate.errors import ConfigError
from rolegate.rules import Rule, format_rule

TOTAL_CASES = int(os.environ.get("ROLEGATE_FUZZ_CASES", "100000"))
REQUESTS_PER_POLICY = 60

SHIPPED_MATCHER = (
    '(p.dom == r.dom || p.dom == "*") && r.act == p.act && keyMatch2(r.obj, p.obj) && '
    '(g(r.sub, p.sub, r.dom) || (r.owner == r.sub && g("owner", p.sub, r.dom)))'
)
PLAIN_MATCHER = (
    '(p.dom == r.dom || p.dom == "*") && r.act == p.act && keyMatch2(r.obj, p.obj) && '
    "g(r.sub, p.sub, r.dom)"
)
ALLOW_AND_DENY = "some(where (p.eft == allow)) && !some(where (p.eft == deny))"


@dataclass(frozen=True)
class Model:
    name: str
    mode: str  # "fast" or "casbin"
    matcher: str
    effect: str = ALLOW_AND_DENY
    request: str = "sub, dom, obj, act"
    policy: str = "sub, dom, obj, act, eft"
    roles: str | None = "_, _, _"
    domains: str = "plain"  # which org values `p` rules get
    priority_field: bool = False  # the 4th rule value is a priority number

    def text(self) -> str:
        roles = f"[role_definition]\ng = {self.roles}\n\n" if self.roles else ""
        return (
            f"[request_definition]\nr = {self.request}\n\n"
            f"[policy_definition]\np = {self.policy}\n\n{roles}"
            f"[policy_effect]\ne = {self.effect}\n\n"
            f"[matchers]\nm = {self.matcher}\n"
        )


MODELS = (
    Model("shipped", "fast", SHIPPED_MATCHER, request="sub, dom, obj, act, owner"),
    Model("allow-override", "fast", PLAIN_MATCHER, effect="some(where (p.eft == allow))"),
    Model("deny-override", "casbin", PLAIN_MATCHER, effect="!some(where (p.eft == deny))"),
    Model("priority", "casbin", PLAIN_MATCHER, effect="priority(p.eft) || deny"),
    Model(
        "priority-field",
        "casbin",
        '(p.dom == r.dom || p.dom == "*") && keyMatch2(r.obj, p.obj) && g(r.sub, p.sub, r.dom)',
        effect="priority(p.eft) || deny",
        policy="sub, dom, obj, priority, eft",
        priority_field=True,
    ),
    Model("subject-priority", "casbin", PLAIN_MATCHER, effect="subjectPriority(p.eft) || deny"),
    Model("request-reordered", "casbin", PLAIN_MATCHER, request="sub, obj, dom, act"),
    Model(
        "no-role-definition",
        "casbin",
        "r.sub == p.sub && p.dom == r.dom && keyMatch2(r.obj, p.obj) && r.act == p.act",
        roles=None,
    ),
    Model(
        "g-without-domain",
        "casbin",
        '(p.dom == r.dom || p.dom == "*") && r.act == p.act && keyMatch2(r.obj, p.obj) && '
        "g(r.sub, p.sub)",
        roles="_, _",
    ),
    Model(
        "no-domain-term",
        "casbin",
        "r.act == p.act && keyMatch2(r.obj, p.obj) && g(r.sub, p.sub, r.dom)",
    ),
    Model(
        "regex-domain",
        "casbin",
        "regexMatch(r.dom, p.dom) && r.act == p.act && keyMatch2(r.obj, p.obj) && "
        "g(r.sub, p.sub, r.dom)",
        domains="regex",
    ),
    Model(
        "keymatch-domain",
        "casbin",
        "keyMatch(r.dom, p.dom) && r.act == p.act && keyMatch2(r.obj, p.obj) && "
        "g(r.sub, p.sub, r.dom)",
        domains="pattern",
    ),
)

USERS = ("alice", "bob", "zoë", "mallory")
ROLES = ("admin", "editor", "viewer", "owner", "auditor")
CHAIN = tuple(f"c{i}" for i in range(15))  # c0 -> ... -> c14: past Casbin's depth limit
ORGS = ("acme", "globex", "ac")
REQUEST_ORGS = (*ORGS, "acx", "nowhere")
LINK_DOMAINS = (*ORGS, "*", "ac*")
RULE_DOMAINS = {
    "plain": (*ORGS, "*"),
    "regex": ("acme", "ac.*", "glo", "acme|globex", ".*", "ac$", "(ac|glo)bex?"),
    "pattern": ("acme", "ac*", "*", "globex", "glo*"),
}
ACTIONS = ("read", "write")
REQUEST_SUBJECTS = (*USERS, *ROLES, "c0", "c5")  # role names as subjects: g(x, x) is true
PATTERNS = (
    "/projects/*",
    "/projects/:id",
    "/projects/:id/*",
    "/:section",
    "*",
    "/projects/1",
    "/projects/",
    "/é/*",
    "/",
    "/documents/*",
    "/finance/x|/payroll",
    "/admin/?panel",
    "/x1/{0}y",
    "/a.b",
    "/a+",
    "/(a|b)*",
    "/[ab]+",
    "/documents/.inance/*",
    "/reports/.+",
    "/[^/]+/x",
    "/a{2}",
    "/(x/)?projects/*",
    "/projects/[0-9]+",
    "/é+",
    "/projects/(1|2)?",
    "/a|",
    "/[a-c]{1,2}/",
)
RESOURCES = (
    "/projects/1",
    "/projects/2",
    "/projects/",
    "/projects",
    "/projects//x",
    "/x/projects/3",
    "/payroll",
    "/finance/xyz",
    "/finance/x",
    "/adminpanel",
    "/admin/panel",
    "/admin",
    "/x1y",
    "/x1/y",
    "/é/1",
    "/éé",
    "/a.b",
    "/axb",
    "/aa",
    "/ab/",
    "/b/x",
    "/",
    "",
    "x",
    "/reports/a/b",
    "/documents/finance/q1",
    "/documents/xinance/q1",
    "/a",
)
PIECES = (*"ab/1é", "/*", ":id", ".", "+", "?", "|", "{2}", "(a|/)", "[ab]", "[^/]")


def random_pattern(rng: random.Random) -> str:
    """A generated pattern Rolegate accepts with regex syntax allowed (else a listed one)."""
    pattern = "/" + "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 5)))
    if validate_pattern(pattern, allow_regex=True) is None:
        return pattern
    return rng.choice(PATTERNS)


@cache
def resources_matching(pattern: str) -> tuple[str, ...]:
    """The listed resources Casbin's keyMatch2 matches with `pattern`."""
    return tuple(resource for resource in RESOURCES if casbin_ops.key_match2(resource, pattern))


def random_resource(rng: random.Random, rules: Sequence[Rule]) -> str:
    """Half the time a resource some rule's pattern matches: where decisions are made."""
    patterns = [rule[3] for rule in rules if rule[0] == "p"]
    if patterns and rng.random() < 0.5:
        matching = resources_matching(rng.choice(patterns))
        if matching:
            return rng.choice(matching)
    if rng.random() < 0.75:
        return rng.choice(RESOURCES)
    return "/" + "".join(rng.choice("ab/1é.x") for _ in range(rng.randint(0, 6)))


def random_subject(rng: random.Random, rules: Sequence[Rule]) -> str:
    members = [rule[1] for rule in rules if rule[0] == "g"]
    if members and rng.random() < 0.5:
        return rng.choice(members)
    return rng.choice(REQUEST_SUBJECTS)


# --------------------------------------------------------------------------- policies


def random_policy(rng: random.Random, model: Model) -> list[Rule]:
    names = (*USERS, *ROLES, *CHAIN[:4])
    domains = RULE_DOMAINS[model.domains]
    rules: list[Rule] = []
    for _ in range(rng.randint(1, 7)):
        pattern = rng.choice(PATTERNS) if rng.random() < 0.7 else random_pattern(rng)
        fourth = str(rng.randint(0, 12)) if model.priority_field else rng.choice(ACTIONS)
        effect = "deny" if rng.random() < 0.3 else "allow"
        domain = "acme" if rng.random() < 0.3 else rng.choice(domains)
        rules.append(("p", rng.choice(names), domain, pattern, fourth, effect))
    for _ in range(rng.randint(0, 8)):
        rules.append(("g", rng.choice(names), rng.choice(ROLES), rng.choice(LINK_DOMAINS)))
    if rng.random() < 0.4:
        length = rng.randint(6, len(CHAIN) - 1)
        domain = rng.choice(("acme", "*", "ac*"))
        rules += [("g", CHAIN[i], CHAIN[i + 1], domain) for i in range(length)]
        rules.append(("g", rng.choice(USERS), "c0", domain))
        for i in rng.sample(range(length - 5, length + 1), 2):
            fourth = "0" if model.priority_field else "read"
            rules.append(("p", CHAIN[i], "acme", rng.choice(PATTERNS), fourth, "allow"))
    rng.shuffle(rules)
    return rules


class RulesAdapter(Adapter):
    def __init__(self, rules: Sequence[Rule]):
        self.rules = rules

    def load_policy(self, model):
        for rule in self.rules:
            section = model.model.get(rule[0][0])
            if section is not None and rule[0] in section:
                section[rule[0]].policy.append(list(rule[1:]))


def reference(model_path: Path, rules: Sequence[Rule]) -> casbin.Enforcer | Exception:
    """Casbin's enforcer for the rules, or what it raised (subject-priority refuses a policy
    with a role cycle on load)."""
    try:
        enforcer = casbin.Enforcer(str(model_path), RulesAdapter(rules))
    except Exception as exc:
        return exc
    enforcer.add_named_domain_matching_func("g", key_match)
    memoise_matcher(enforcer)
    return enforcer


def casbin_answer(enforcer: casbin.Enforcer | Exception, fields, request: CheckRequest):
    if isinstance(enforcer, Exception):
        return enforcer
    try:
        return bool(enforcer.enforce(*request_values(fields, request)))
    except Exception as exc:
        return exc


def changed_policy(rng: random.Random, rules: list[Rule], model: Model):
    """(initial, added, removed, final order) reaching a policy through one change set."""
    unique = list(dict.fromkeys(rules))
    added = rng.sample(unique, rng.randint(0, min(4, len(unique))))
    removed = [rule for rule in random_policy(rng, model)[:3] if rule not in set(unique)]
    initial = [rule for rule in unique if rule not in set(added)] + removed
    final = [rule for rule in initial if rule not in set(removed)] + added
    return initial, added, removed, final


# --------------------------------------------------------------------------- the run


def describe(seed, model, rules, request, decision, expected) -> str:
    lines = [f"seed {seed} (ROLEGATE_FUZZ_SEED={seed}), model {model.name}:", model.text()]
    lines += ["rules in Casbin's order:", *(f"  {format_rule(rule)}" for rule in rules)]
    lines += [f"request: {request}", f"engine: {decision}", f"casbin: {expected!r}"]
    return "\n".join(lines)


def assert_same(decision, expected, message: str) -> None:
    """Casbin raised: the engine denies with an error; else the same answer, no error."""
    if isinstance(expected, Exception):
        assert not decision.allowed and decision.error, message
    else:
        assert decision.error is None and decision.allowed == expected, message


def fuzz(model: Model, model_path: Path, cases: int, seed: int) -> int:
    rng = random.Random(seed)
    engine = Engine.from_model_file(model_path)
    assert engine.mode == model.mode, engine.shape.reason
    fields = engine.shape.request_fields
    decided = 0
    while decided < cases:
        rules = random_policy(rng, model)
        if rng.random() < 0.3:
            initial, added, removed, rules = changed_policy(rng, rules, model)
            engine.load(1, initial)
            engine.apply(2, added, removed)
        else:
            engine.load(1, rules)
        enforcer = reference(model_path, rules)
        for _ in range(REQUESTS_PER_POLICY):
            subject = random_subject(rng, rules)
            request = CheckRequest(
                subject,
                "acme" if rng.random() < 0.4 else rng.choice(REQUEST_ORGS),
                random_resource(rng, rules),
                "read" if rng.random() < 0.6 else rng.choice((*ACTIONS, "approve")),
                owner=rng.choice(("", subject, "alice")),
            )
            decision = engine.check(request)
            expected = casbin_answer(enforcer, fields, request)
            assert_same(
                decision, expected, describe(seed, model, rules, request, decision, expected)
            )
            decided += 1
    return decided


@pytest.fixture(scope="module")
def fuzz_seed() -> int:
    return int(os.environ.get("ROLEGATE_FUZZ_SEED", random.randrange(2**32)))


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.name)
def test_every_accepted_model_decides_as_casbin(model, fuzz_seed, tmp_path):
    path = tmp_path / f"{model.name}.conf"
    path.write_text(model.text())
    share = -(-TOTAL_CASES // len(MODELS))
    assert fuzz(model, path, share, fuzz_seed) >= share


def test_shipped_model_text_is_the_shipped_model(tmp_path):
    from rolegate.engine.model import classify, load_model

    path = tmp_path / "shipped.conf"
    path.write_text(MODELS[0].text())
    assert classify(load_model(path)) == classify(load_model(REPO_ROOT / "model.conf"))


@pytest.mark.parametrize(
    ("effect", "matcher", "message"),
    [
        ("some(where  (p.eft == allow))", PLAIN_MATCHER, "unsupported policy effect"),
        ("some(where (p.eft == allow))", "r.sub == p.sub && nosuch(r.obj)", "nosuch"),
    ],
)
def test_models_casbin_refuses_are_refused_at_start(effect, matcher, message, tmp_path):
    path = tmp_path / "model.conf"
    path.write_text(Model("refused", "casbin", matcher, effect=effect).text())
    with pytest.raises(ConfigError, match=message):
        Engine.from_model_file(path)


def test_a_request_field_rolegate_cannot_fill_is_refused(tmp_path):
    path = tmp_path / "model.conf"
    path.write_text(Model("ip", "casbin", PLAIN_MATCHER, request="sub, dom, obj, act, ip").text())
    with pytest.raises(ConfigError, match="request field"):
        Engine.from_model_file(path)


@pytest.mark.parametrize(
    ("model", "words"),
    [
        (
            Model("deny-override", "casbin", PLAIN_MATCHER, effect="!some(where (p.eft == deny))"),
            ("deny-override",),
        ),
        (
            Model("priority", "casbin", PLAIN_MATCHER, effect="priority(p.eft) || deny"),
            ("priority",),
        ),
        (MODELS[0], ("allow-and-deny",)),
        (MODELS[1], ("allow-override",)),
    ],
    ids=lambda value: value.name if isinstance(value, Model) else "",
)
def test_the_mode_line_names_the_effect_in_casbins_terms(model, words, tmp_path):
    path = tmp_path / "model.conf"
    path.write_text(model.text())
    reason = Engine.from_model_file(path).shape.reason
    assert all(word in reason for word in words), reason
    assert "not allow- or deny-override" not in reason


@pytest.mark.parametrize(
    ("name", "scoped"),
    [
        ("shipped", True),
        ("priority", True),
        ("request-reordered", True),
        ("no-role-definition", True),
        ("g-without-domain", False),
        ("no-domain-term", False),
        ("regex-domain", False),
        ("keymatch-domain", False),
    ],
)
def test_the_fallback_restricts_to_the_org_only_where_provable(name, scoped, tmp_path):
    model = next(model for model in MODELS if model.name == name)
    path = tmp_path / "model.conf"
    path.write_text(model.text())
    assert Engine.from_model_file(path).shape.org_scoped is scoped


@pytest.mark.parametrize(
    "model",
    # subject-priority ranks rules by the role hierarchy when the policy loads; a granted role
    # is a link for one check and does not re-rank them
    [m for m in MODELS if m.mode == "casbin" and m.roles and m.name != "subject-priority"],
    ids=lambda model: model.name,
)
def test_granted_roles_in_casbin_mode_equal_added_links(model, fuzz_seed, tmp_path):
    """A default role and token roles mean the link `g, subject, role, org` for that check."""
    path = tmp_path / f"{model.name}.conf"
    path.write_text(model.text())
    rng = random.Random(fuzz_seed)
    engine = Engine.from_model_file(path, default_role="viewer")
    fields = engine.shape.request_fields
    for _ in range(40):
        rules = list(dict.fromkeys(random_policy(rng, model)))
        engine.load(1, rules)
        for _ in range(8):
            subject = random_subject(rng, rules)
            extra = tuple(rng.sample(("admin", "editor", "c0", "ghost"), rng.randint(0, 2)))
            request = CheckRequest(
                subject,
                "acme" if rng.random() < 0.5 else rng.choice(REQUEST_ORGS),
                random_resource(rng, rules),
                "read",
                extra_roles=extra,
            )
            member = any(r[0] == "g" and r[1] == subject and r[3] == request.org for r in rules)
            granted = [*extra, *(() if member else ("viewer",))]
            links = [("g", subject, role, request.org) for role in granted]
            equivalent = [*rules, *(link for link in links if link not in set(rules))]
            expected = casbin_answer(reference(path, equivalent), fields, request)
            decision = engine.check(request)
            message = describe(fuzz_seed, model, equivalent, request, decision, expected)
            assert_same(decision, expected, message)
            # the temporary links are gone again: the check without token roles is Casbin's
            plain = CheckRequest(request.subject, request.org, request.resource, "read")
            default_link = [] if member else [("g", subject, "viewer", request.org)]
            without = [*rules, *(link for link in default_link if link not in set(rules))]
            expected = casbin_answer(reference(path, without), fields, plain)
            decision = engine.check(plain)
            message = describe(fuzz_seed, model, without, plain, decision, expected)
            assert_same(decision, expected, message)


def run_cli(*args: str, model: Path, cwd: Path) -> subprocess.CompletedProcess:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("ROLEGATE_")
    }
    environment.update(
        ROLEGATE_MODEL=str(model),
        ROLEGATE_DATABASE_URL=f"sqlite:///{cwd / 'store.db'}",
        ROLEGATE_POLICY_DIR=str(REPO_ROOT / "policies"),
    )
    command = [sys.executable, "-c", "from rolegate.cli import main; main()", *args]
    return subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=120
    )


def test_cli_serves_a_model_without_role_definition_and_refuses_what_casbin_refuses(tmp_path):
    no_roles = next(model for model in MODELS if model.name == "no-role-definition")
    path = tmp_path / "no-roles.conf"
    path.write_text(no_roles.text())
    linted = run_cli("lint", model=path, cwd=tmp_path)
    assert linted.returncode == 0, linted.stderr
    assert "Traceback" not in linted.stderr

    refused = tmp_path / "refused.conf"
    refused.write_text(
        Model("refused", "casbin", PLAIN_MATCHER, effect="some(where  (p.eft == allow))").text()
    )
    result = run_cli("lint", model=refused, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Casbin refuses this model" in result.stderr and "Traceback" not in result.stderr
