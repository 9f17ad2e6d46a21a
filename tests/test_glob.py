"""globMatch: the engine's linear-time matcher against Casbin's own glob_match."""

from __future__ import annotations

import os
import random
import time

import pytest
from casbin.util.builtin_operators import glob_match
from wcmatch._wcparse import PatternLimitException

from rolegate.engine import patterns
from rolegate.engine.glob import GlobError, NotLinear, compile_glob, glob_problem
from rolegate.engine.patterns import literal_resource
from rolegate.policy.resources import pattern_covers

PATTERN_TOKENS = (
    "/", "/", "/", ".", "*", "**", "?", "[", "]", "!", "^", "-", "{", "}", ",", "\\",
    "a", "b", "c", "é", "日", "[a-c]", "[!a]", "[^b-]", "[]a]", "[c-a]", "{a,b}", "{,/a}",
    "[[:alpha:]]", "\\*", "\\[", "\\.", "\\/", "/**/", "*/", "/**", ".a", "\n",
)  # fmt: skip
# Many stars and short fixed texts between them: where wcmatch wraps stars in atomic groups.
STAR_TOKENS = ("*", "*", "a", "b", ".", "?", "[a.]", "[!b]", "/", "**", "{a,*}", "{.,b}", "\\*")
RESOURCE_CHARS = "//./abcé日-*?[]{},\\!^\n"
CASES = int(os.environ.get("GLOB_FUZZ_CASES", "4000"))  # per token set


def random_pattern(rng: random.Random, tokens: tuple[str, ...] = PATTERN_TOKENS) -> str:
    return "".join(rng.choice(tokens) for _ in range(rng.randint(0, 7)))


def resource_like(rng: random.Random, pattern: str) -> str:
    """A resource near `pattern`: its characters, some replaced or dropped, so matches happen."""
    chars = []
    for char in pattern:
        roll = rng.random()
        if char in "*?[]{}\\" and roll < 0.6:
            chars.append(rng.choice("abc./" if char == "*" else "abc."))
        elif roll < 0.1:
            continue
        elif roll < 0.2:
            chars.append(rng.choice(RESOURCE_CHARS))
        else:
            chars.append(char)
    return "".join(chars)


def random_resource(rng: random.Random, pattern: str) -> str:
    if rng.random() < 0.5:
        return resource_like(rng, pattern)
    return "".join(rng.choice(RESOURCE_CHARS) for _ in range(rng.randint(0, 10)))


def casbin_answer(resource: str, pattern: str) -> bool | type[Exception]:
    try:
        return bool(glob_match(resource, pattern))
    except Exception:
        return Exception


def engine_answer(resource: str, pattern: str) -> bool | type[Exception] | str:
    try:
        return compile_glob(pattern)(resource)
    except GlobError:
        return Exception
    except NotLinear as exc:  # a refusal fails the comparison, with the seed
        return f"refused: {exc}"


@pytest.mark.parametrize("tokens", [PATTERN_TOKENS, STAR_TOKENS], ids=["corners", "stars"])
def test_random_patterns_answer_as_casbin(tokens):
    seed = int(os.environ.get("GLOB_FUZZ_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    matched = 0
    for _ in range(CASES):
        pattern = random_pattern(rng, tokens)
        resource = random_resource(rng, pattern)
        expected = casbin_answer(resource, pattern)
        assert engine_answer(resource, pattern) == expected, (
            f"seed={seed} pattern={pattern!r} resource={resource!r} casbin={expected}"
        )
        matched += expected is True
    assert matched > CASES // 50, f"seed={seed}: too few matching cases to mean anything"


@pytest.mark.parametrize(
    ("pattern", "resource", "expected"),
    [
        ("/a/*", "/a/.hidden", False),  # `*` does not match a leading dot
        ("/a/.*", "/a/.hidden", True),
        ("/a/?x", "/a/.x", False),
        ("/**/x", "/.git/x", False),  # nor `**`
        ("/a/*", "/a/b/c", False),  # `*` stays in its segment
        ("/a/**", "/a", True),  # Casbin's `/**` also matches the directory itself
        ("/a/**", "/a/b/c", True),
        ("/{a,b}/x", "/b/x", True),
        ("/[!a]x", "/bx", True),
        ("/[^a]x", "/ax", False),
        ("/\\*", "/*", True),
        ("/\\*", "/a", False),
        ("*/x", "/x", True),  # Casbin drops the star of a leading `*/`
        ("/a***b", "/ab", True),  # `***` inside a segment is `*`
    ],
)
def test_glob_semantics_match_casbin(pattern, resource, expected):
    assert glob_match(resource, pattern) is expected
    assert compile_glob(pattern)(resource) is expected


def test_pattern_casbin_refuses_fails_every_check():
    too_many_braces = "/{a,b}" * 11  # 2048 expansions, over wcmatch's limit of 1000
    with pytest.raises(PatternLimitException):
        glob_match("/a", too_many_braces)
    matcher = patterns.compile_matcher("globMatch", too_many_braces)
    assert patterns.pattern_problem(matcher) is not None
    assert glob_problem(too_many_braces) is not None
    assert glob_problem("/a/**/*.txt") is None


def test_pattern_too_large_for_bounded_steps_is_refused():
    letters = "{a,b,c,d,e,f,g,h,i,j}"
    huge = "/**/" + letters * 3 + "/**/x"  # 1000 expansions Casbin evaluates
    assert glob_match("/q/abc/r/x", huge) is True
    problem = patterns.validate_pattern(huge, allow_regex=False, function="globMatch")
    assert problem is not None and "automaton states" in problem
    with pytest.raises(patterns.PatternError):
        patterns.compile_matcher("globMatch", huge)("/q/abc/r/x")
    assert (
        patterns.validate_pattern(
            "/**/" + letters + "/**/x", allow_regex=False, function="globMatch"
        )
        is None
    )


def seconds(matcher, resource: str) -> float:
    started = time.perf_counter()
    matcher(resource)
    return time.perf_counter() - started


def assert_linear(pattern: str, resource_of_length) -> None:
    """Four times the resource costs about four times as much (a floor of 2 ms absorbs noise)."""
    short = seconds(compile_glob(pattern), resource_of_length(750))
    long = seconds(compile_glob(pattern), resource_of_length(3000))
    assert long < 16 * max(short, 0.002), (short, long)


def test_backtracking_pattern_answers_in_linear_time():
    pattern = "/**/a/**/a/**/a/**/a/**/b"
    assert glob_match("/a" * 12, pattern) is False  # Casbin doubles its time every few chars
    matcher = patterns.compile_matcher("globMatch", pattern)
    assert matcher("/a" * 1500) is False
    assert matcher("/a" * 1500 + "/b") is True
    assert matcher("/x" + "/a" * 1500 + "/.b") is False  # `**` does not enter dot-files
    assert_linear(pattern, lambda length: "/a" * (length // 2))


def test_distinct_resources_stay_linear():
    """Resources that never repeat a step (every window differs) still cost per character."""
    rng = random.Random(7)
    assert_linear(
        "/**/a*b/**/[!x]?c/**",
        lambda length: "/" + "".join(rng.choice("abcdefghij/é") for _ in range(length)),
    )


@pytest.mark.parametrize("narrow", ["/a?", "/a[bc]", "/a{b,c}", "/a\\b"])
def test_a_glob_with_wildcards_is_not_read_as_literal(narrow):
    """`?`, classes, braces and escapes match more than their own text: coverage by a pattern
    that matches only the text itself is never claimed."""
    assert literal_resource("globMatch", narrow) is None
    assert pattern_covers("globMatch", "/a\\?", narrow) is not True
