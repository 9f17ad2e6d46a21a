"""Exact pattern inclusion: the automata agree with the engine's matcher (Casbin's regex).

The property tests draw safe-grammar patterns and check every answer against the compiled
keyMatch2 matcher of the engine: a witness must really be in the asked set, and "no such
resource" is checked on every resource up to a length over the patterns' alphabet.
"""

from __future__ import annotations

import functools
import itertools
import os
import random

import pytest

from rolegate.engine import coverage
from rolegate.engine.coverage import Access, first_resource, gained, overlap, uncovered
from rolegate.engine.patterns import compile_matcher

SEED = int(os.environ.get("COVERAGE_SEED", random.randrange(2**32)))
PIECES = ("a", "b", "/", "/*", ":id", "-", "é")


@functools.cache
def matcher(pattern: str):
    return compile_matcher("keyMatch2", pattern)


def matches(pattern: str, resource: str) -> bool:
    return bool(matcher(pattern)(resource))


def allowed(access: Access, resource: str) -> bool:
    hit = any(matches(p, resource) for p in access.allow)
    return hit and not (access.deny_override and any(matches(p, resource) for p in access.deny))


def random_pattern(rng: random.Random) -> str:
    pattern = "/" + "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 4)))
    return "*" if rng.random() < 0.03 else pattern


def all_resources(max_length: int) -> list[str]:
    chars = "ab/é"
    return [
        "".join(chars_)
        for length in range(max_length + 1)
        for chars_ in itertools.product(chars, repeat=length)
    ]


RESOURCES = all_resources(5)


def test_token_grammar_follows_casbin_rewrites():
    tokens = coverage.pattern_tokens
    assert tokens("keyMatch2", "/a/*") == ("/", "a", "/", coverage.ANY)
    assert tokens("keyMatch2", "*") == (coverage.ANY,)
    # `:name` swallows the rest of its segment, as Casbin's `:[^/]+` rewrite does.
    assert tokens("keyMatch2", "/r/:id.json") == (
        *"/r/",
        coverage.SEGMENT_FIRST,
        coverage.SEGMENT_REST,
    )
    assert tokens("keyMatch2", "/r/:") == tuple("/r/:")
    for unsafe in ("/documents/.inance/*", "/reports/.+", "/a|/b", "/a/?b", "/x/{0}", "/a**"):
        assert tokens("keyMatch2", unsafe) is None, unsafe
    assert tokens("keyMatch", "/a/*b") == (*"/a/", coverage.ANY)
    assert tokens("regexMatch", "/a") is None


def test_reported_escalations_are_found():
    held = Access(allow=("/reports/:id",))
    assert uncovered("keyMatch2", ["/reports/*"], held) is not None
    assert uncovered("keyMatch2", ["/reports/:x"], held) is None
    lead = Access(allow=("/documents/*",), deny=("/documents/finance/*",))
    witness = uncovered("keyMatch2", ["/documents/*"], lead)
    assert witness is not None and witness.startswith("/documents/finance/")
    assert uncovered("keyMatch2", ["/documents/hr/*"], lead) is None
    assert uncovered("keyMatch2", ["/documents/:id"], lead) is None
    # Every finance document is a /documents/ document: denied to the lead.
    assert uncovered("keyMatch2", ["/documents/finance/:id"], lead) is not None
    with pytest.raises(coverage.Undecided):
        uncovered("keyMatch2", ["/documents/.inance/*"], lead)


def test_gain_is_after_minus_before_minus_held():
    before = Access(allow=("/d/*",), deny=("/d/f/*",))
    after = Access(allow=("/d/*",))
    assert gained("keyMatch2", before, after, Access(allow=("/d/*",), deny=("/d/f/*",))) == "/d/f/"
    assert gained("keyMatch2", before, after, Access(allow=("/d/*",))) is None
    assert gained("keyMatch2", before, before, Access()) is None
    allow_override = Access(allow=("/d/*",), deny=("/d/*",), deny_override=False)
    assert gained("keyMatch2", Access(), allow_override, Access()) == "/d/"


def test_random_questions_agree_with_the_matcher():
    rng = random.Random(SEED)
    for case in range(300):
        patterns = [random_pattern(rng) for _ in range(rng.randint(1, 2))]
        held = Access(
            tuple(random_pattern(rng) for _ in range(rng.randint(0, 2))),
            tuple(random_pattern(rng) for _ in range(rng.randint(0, 2))),
        )
        where = f"seed={SEED} case={case} patterns={patterns} held={held}"
        witness = uncovered("keyMatch2", patterns, held)
        if witness is None:
            for resource in RESOURCES:
                if any(matches(p, resource) for p in patterns):
                    assert allowed(held, resource), f"{where}: {resource!r} is not covered"
        else:
            assert any(matches(p, witness) for p in patterns), where
            assert not allowed(held, witness), where
        other = [random_pattern(rng)]
        hit = overlap("keyMatch2", patterns, other)
        if hit is None:
            assert not any(
                any(matches(p, r) for p in patterns) and matches(other[0], r) for r in RESOURCES
            ), where
        else:
            assert any(matches(p, hit) for p in patterns) and matches(other[0], hit), where


def test_membership_of_a_single_pattern_is_exact():
    rng = random.Random(SEED + 1)
    for _ in range(150):
        pattern = random_pattern(rng)
        resource = rng.choice(RESOURCES)
        exact = first_resource("keyMatch2", [[pattern], [resource]], lambda f: f[0] and f[1])
        # `resource` as a keyMatch2 pattern of literals only matches itself when it is safe.
        if coverage.exact("keyMatch2", resource) and ":" not in resource and "*" not in resource:
            assert (exact is not None) == matches(pattern, resource), (SEED, pattern, resource)


def test_too_complex_questions_are_undecided(monkeypatch):
    monkeypatch.setattr(coverage, "MAX_STATES", 3)
    with pytest.raises(coverage.Undecided):
        uncovered("keyMatch2", ["/a/*/b/*"], Access(allow=("/a/:x/*",), deny=("/a/*/c",)))
