"""Resource patterns: Casbin's answers in linear time, the safe grammar, the index, domains.

The matchers are compared with Casbin's own functions (`casbin.util`: Python's `re` over the
regex keyMatch2 builds) on generated patterns full of regex syntax and resources that end in a
newline (`re`'s `$` matches before it).
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import threading

import pytest
from casbin.util import builtin_operators as casbin_ops

from rolegate.config import REPO_ROOT
from rolegate.engine import CheckRequest, Engine, patterns
from rolegate.engine.patterns import (
    PatternError,
    compile_matcher,
    domain_applies,
    pattern_segment,
    resource_segment,
    validate_pattern,
)

ALPHABET = "ab/x1é"
PIECES = (
    *"ab/x1é",
    "/*",
    "*",
    ":id",
    ".",
    "+",
    "?",
    "|",
    "{0}",
    "{2}",
    "{1,2}",
    "(a|b)",
    "(/x)?",
    "[ab]",
    "[^/]",
    "[a-z]",
    "$",
    "^",
    "\\.",
    "(?:x)",
    "\\Z",
    "*?",
)


def random_pattern(rng: random.Random) -> str:
    text = "/" if rng.random() < 0.8 else ""
    return text + "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 6)))


def random_resource(rng: random.Random) -> str:
    text = "/" + "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 8)))
    return text + ("\n" if rng.random() < 0.15 else "")


def casbin_match(function: str, resource: str, pattern: str):
    """Casbin's answer, or the exception class it raises."""
    try:
        if function == "keyMatch2":
            return casbin_ops.key_match2(resource, pattern)
        return casbin_ops.regex_match(resource, pattern)
    except re.error:
        return PatternError


def our_match(function: str, resource: str, pattern: str):
    try:
        return bool(compile_matcher(function, pattern)(resource))
    except PatternError:
        return PatternError


@pytest.mark.parametrize("function", ["keyMatch2", "regexMatch"])
def test_matchers_answer_what_casbin_answers(function):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    compared = refused = 0
    for _ in range(3000):
        pattern = random_pattern(rng)
        for _ in range(8):
            resource = random_resource(rng)
            ours = our_match(function, resource, pattern)
            expected = casbin_match(function, resource, pattern)
            if ours is PatternError and expected is not PatternError:
                # refused: only constructs the linear-time engine cannot reproduce
                assert validate_pattern(pattern, allow_regex=True, function=function), pattern
                refused += 1
                continue
            assert ours == expected, f"seed {seed}: {pattern!r} on {resource!r}"
            compared += 1
    assert compared > 10 * max(refused, 1)


@pytest.mark.parametrize(
    ("pattern", "resource", "expected"),
    [
        ("/finance/x|/payroll", "/payroll", True),
        ("/finance/x|/payroll", "/finance/xyz", True),  # `^/finance/x` alone is a prefix match
        ("/finance/x|/payroll", "/payroll/1", False),
        ("/admin/?panel", "/adminpanel", True),
        ("/x1/{0}y", "/x1y", True),
        ("/a", "/a\n", True),  # `$` before a final newline
        ("/a", "/a\n\n", False),
        ("/a|b$", "b\n", True),
        ("/a.c", "/a\nc", False),  # `.` is not a newline
        ("/projects/:id", "/projects/1", True),
        ("/projects/:id", "/projects/1/2", False),
        ("*", "anything", True),
    ],
)
def test_regex_corners_match_as_casbin(pattern, resource, expected):
    assert casbin_ops.key_match2(resource, pattern) is expected
    assert bool(compile_matcher("keyMatch2", pattern)(resource)) is expected


def test_the_redos_pattern_is_linear():
    matcher = compile_matcher("keyMatch2", "/projects/.*.*.*.*!")
    done = threading.Event()

    def run():
        for _ in range(50):
            assert not matcher("/projects/" + "a" * 20_000)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(30), "backtracking: Python's re would take hours here"
    assert matcher("/projects/aaa!")


def test_many_stars_in_the_safe_grammar_do_not_backtrack():
    matcher = compile_matcher("keyMatch2", "/*/*/*/*/*/x")
    done = threading.Event()

    def run():
        assert not matcher("/" * 5000)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(30)
    assert matcher("/a/b/c/d/e/x")


@pytest.mark.parametrize(
    "pattern",
    ["/projects/*", "/projects/:id", "/projects/:id/tasks/*", "*", "/a b/é", "/x:", "/"],
)
def test_safe_grammar_is_accepted(pattern):
    assert validate_pattern(pattern, allow_regex=False) is None


@pytest.mark.parametrize(
    "pattern",
    [
        "/documents/.inance/*",
        "/reports/.+",
        "/finance/x|/payroll",
        "/admin/?panel",
        "/x1/{0}y",
        "/projects*",
        "/(a)",
        "/[ab]",
        "/a$",
        "/a\\.b",
    ],
)
def test_regex_syntax_is_refused_by_default_and_named(pattern):
    problem = validate_pattern(pattern, allow_regex=False)
    assert problem and "regular-expression syntax" in problem
    assert "ROLEGATE_ALLOW_REGEX_PATTERNS" in problem
    assert validate_pattern(pattern, allow_regex=True) is None


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("/(a)\\1", "backreferences"),
        ("/(?=a)a", "lookarounds"),
        ("/(?!a)b", "lookarounds"),
        ("/(?>a)", "atomic groups"),
        ("/a*+", "possessive"),
        ("/\\d+", "Unicode-dependent"),
        ("/[\\w]", "Unicode-dependent"),
        ("/\\bx", "word boundaries"),
        ("/a$b", "`$`"),
        ("/a{1001}", "above 1000"),
    ],
)
def test_regexes_the_linear_engine_cannot_reproduce_are_refused(pattern, reason):
    problem = validate_pattern(pattern, allow_regex=True)
    assert problem and "linear time" in problem and reason in problem
    with pytest.raises(PatternError):
        compile_matcher("keyMatch2", pattern)("/a")


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [("(?i)a", "inline flags"), ("a(?i:b)", "inline flags"), ("\ud800", "surrogate")],
)
def test_regex_match_patterns_outside_re2_are_refused(pattern, reason):
    problem = validate_pattern(pattern, allow_regex=True, function="regexMatch")
    assert problem and reason in problem
    with pytest.raises(PatternError):
        compile_matcher("regexMatch", pattern)("a")


def test_invalid_regex_is_refused_with_re_reason():
    problem = validate_pattern("/a(", allow_regex=True)
    assert problem and "not a valid pattern" in problem
    assert validate_pattern("/x/**", allow_regex=False)


def test_regex_match_models_validate_linearity_only():
    assert validate_pattern("^/a|b", allow_regex=False, function="regexMatch") is None
    assert "backreferences" in validate_pattern("(a)\\1", allow_regex=False, function="regexMatch")
    assert validate_pattern("/a.b", allow_regex=False, function="keyMatch") is None


@pytest.mark.parametrize(
    ("pattern", "segment"),
    [
        ("/projects/*", "projects"),
        ("/projects", "projects"),
        ("/projects/:id", "projects"),
        ("/é/*", "é"),
        ("/finance/x|/payroll", None),
        ("/admin/?panel", None),
        ("/x1/{0}y", None),
        ("/a.b/c", None),
        ("/:id/x", None),
        ("/proj:id", None),
        ("*", None),
        ("/", None),
    ],
)
def test_only_safe_patterns_are_filed_under_a_first_segment(pattern, segment):
    assert pattern_segment("keyMatch2", pattern) == segment


def test_a_filed_pattern_matches_only_resources_of_its_segment():
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for _ in range(3000):
        pattern = random_pattern(rng)
        segment = pattern_segment("keyMatch2", pattern)
        if segment is None:
            continue
        for _ in range(10):
            resource = random_resource(rng).rstrip("\n")
            if our_match("keyMatch2", resource, pattern) is True:
                assert resource_segment(resource) == segment, (seed, pattern, resource)


@pytest.mark.parametrize("resource", ["/projects/1\x00", "/a\x1b[2J", "/\ud800", "/x\x7f", "/a\n"])
@pytest.mark.parametrize("model", ["model.conf", "no-template"])
def test_a_resource_with_control_characters_is_a_plain_deny(resource, model, tmp_path):
    path = REPO_ROOT / "model.conf"
    if model == "no-template":  # served by Casbin's enforcer
        path = tmp_path / "model.conf"
        path.write_text(
            (REPO_ROOT / "model.conf").read_text().replace("r.act == p.act", "p.act == r.act || 0")
        )
    engine = Engine.from_model_file(path)
    assert engine.mode == ("fast" if model == "model.conf" else "casbin")
    engine.load(1, [("g", "alice", "viewer", "acme"), ("p", "viewer", "*", "*", "read", "allow")])
    assert patterns.has_unmatchable(resource)
    decision = engine.check(CheckRequest("alice", "acme", resource, "read"))
    assert (decision.allowed, decision.error) == (False, None)
    assert engine.check(CheckRequest("alice", "acme", "/a", "read")).allowed


def test_domain_matching_is_casbins_key_match():
    rng = random.Random(7)
    names = ["acme", "acme-1", "acme-", "*", "acme-*", "a*", "", "ac", "globex", "*x"]
    for _ in range(2000):
        org, domain = rng.choice(names), rng.choice(names)
        assert domain_applies(org, domain) == casbin_ops.key_match(org, domain), (org, domain)


def test_no_module_outside_the_engine_imports_casbin_util():
    found = subprocess.run(
        ["grep", "-rlE", r"(from|import) casbin\.util|casbin\.util\.", "service"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert [path for path in found if not path.startswith("service/engine/")] == []
    assert sys.modules.get("re2") is not None  # the linear-time engine is a runtime import


def test_plan_globs_match_as_their_regex_without_backtracking():
    from rolegate.engine.plan import Glob

    rng = random.Random(11)
    for _ in range(20_000):
        glob = "".join(rng.choice("ab*/") for _ in range(rng.randint(0, 6)))
        value = "".join(rng.choice("ab/") for _ in range(rng.randint(0, 8)))
        regex = re.compile(".*".join(re.escape(part) for part in glob.split("*")), re.DOTALL)
        assert Glob(glob).fullmatch(value) == (regex.fullmatch(value) is not None), (glob, value)
    done = threading.Event()

    def run():
        assert not Glob("*a*a*a*a*b").fullmatch("a" * 50_000)  # the regex: hours
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(30)
