"""`pattern_covers` (lint's contradicted-allow, diff impact) against Casbin's own keyMatch2 and
globMatch: every True it answers holds for Casbin on every resource tried, and every False has a
resource Casbin matches with the narrow pattern and not with the broad one."""

from __future__ import annotations

import random

import pytest
from casbin.util import builtin_operators as casbin_ops

from rolegate.engine import coverage
from rolegate.engine.patterns import literal_resource
from rolegate.policy.resources import pattern_covers, sample_resources

KEY_MATCH2_PIECES = ["/", "/a", "/b", "/ab", "/:id", "/:x", "/*", "*", "-", "a", ".", "?", "|b"]
GLOB_PIECES = ["/", "/a", "/b", "/*", "/**", "?", "[ab]", "{a,b}", "a", "\\*"]
RESOURCE_CHARS = "/ab-.|*?x"
CASBIN = {"keyMatch2": casbin_ops.key_match2, "globMatch": casbin_ops.glob_match}


def random_pattern(rng: random.Random, pieces: list[str]) -> str:
    return "".join(rng.choice(pieces) for _ in range(rng.randint(1, 4)))


def resources_to_try(rng: random.Random, *patterns: str, function: str) -> set[str]:
    tried = {
        "".join(rng.choice(RESOURCE_CHARS) for _ in range(rng.randint(0, 8))) for _ in range(300)
    }
    for pattern in patterns:
        tried.update(sample_resources(function, pattern))
        tried.add(pattern)
        single = literal_resource(function, pattern)
        if single is not None:
            tried.add(single)
    return tried


def casbin_matches(function: str, resource: str, pattern: str) -> bool:
    try:
        return bool(CASBIN[function](resource, pattern))
    except Exception:  # Casbin raises on every check that reaches such a pattern
        return False


@pytest.mark.parametrize(
    ("function", "pieces"), [("keyMatch2", KEY_MATCH2_PIECES), ("globMatch", GLOB_PIECES)]
)
def test_pattern_covers_agrees_with_casbin(function, pieces):
    rng = random.Random(20261202)
    verdicts = {True: 0, False: 0, None: 0}
    for _ in range(1500):
        broad, narrow = random_pattern(rng, pieces), random_pattern(rng, pieces)
        if rng.random() < 0.3:  # often make `broad` a widening of `narrow`
            broad = narrow.rsplit("/", 1)[0] + "/*" if "/" in narrow else "*"
        verdict = pattern_covers(function, broad, narrow)
        verdicts[verdict] += 1
        tried = resources_to_try(rng, broad, narrow, function=function)
        exact = coverage.exact(function, broad) and coverage.exact(function, narrow)
        if exact:
            witness = coverage.uncovered(function, [narrow], coverage.Access(allow=(broad,)))
            if witness is not None:
                tried.add(witness)
        escapes = [
            resource
            for resource in tried
            if casbin_matches(function, resource, narrow)
            and not casbin_matches(function, resource, broad)
        ]
        context = f"{function}: broad {broad!r}, narrow {narrow!r}"
        if verdict is True:
            assert not escapes, f"{context}: claimed covered, Casbin disagrees on {escapes[:3]}"
        elif verdict is False:
            narrow_matches_something = any(casbin_matches(function, r, narrow) for r in tried)
            assert escapes or not narrow_matches_something, f"{context}: no resource escapes"
        else:
            assert not exact, f"{context}: both patterns are exact, yet undecided"
    assert verdicts[True] >= 100 and verdicts[False] >= 100, verdicts
