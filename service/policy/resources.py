"""Questions lint and diff ask about resource patterns: samples, literals and coverage.

What a pattern means is the engine's: matchers come from `rolegate.engine.patterns` (equal to
Casbin's matching functions), literals and coverage from its read API (`literal_resource`,
`rolegate.engine.coverage`). Only the readable samples (`/documents/:id` -> `/documents/{id}`)
are made here, and each is kept only when the engine's matcher accepts it.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..engine import coverage
from ..engine.patterns import compile_matcher, literal_resource

REGEX_METACHARS = frozenset(".^$+?{}|\\")
_PARAM = re.compile(r":[^/]+")


@lru_cache(maxsize=4096)
def matcher_for(function: str, pattern: str):
    """The compiled matcher (cached); it raises on use when Casbin cannot evaluate the pattern."""
    return compile_matcher(function, pattern)


def matches(function: str, pattern: str, resource: str) -> bool:
    """Whether `resource` matches `pattern`; False when the pattern cannot be evaluated."""
    try:
        return bool(matcher_for(function, pattern)(resource))
    except Exception:
        return False


def pattern_error(function: str, pattern: str) -> str | None:
    """Why Casbin raises on every check that reaches this pattern (None: it evaluates)."""
    try:
        matcher_for(function, pattern)("/")
    except Exception as exc:
        return str(exc)
    return None


def sample_resources(function: str, pattern: str) -> tuple[str, ...]:
    """Concrete resources the pattern matches, readable: `/documents/:id` -> `/documents/{id}`.

    Falls back to the pattern text itself (keyMatch2 patterns match their own text); empty when
    neither matches (the pattern cannot be evaluated, or is a regex we cannot invert).
    """
    candidates = []
    if function == "keyMatch2":
        readable = _PARAM.sub(lambda match: "{" + match.group()[1:] + "}", pattern)
        readable = "/{any}" if readable == "*" else readable.replace("/*", "/{any}")
        if readable.endswith("/{any}"):  # `/*` also matches deeper paths: try one
            deeper = readable + "/{more}"
            if matches(function, pattern, readable) and matches(function, pattern, deeper):
                return (readable, deeper)
        candidates.append(readable)
    elif function in ("keyMatch", "globMatch"):
        candidates.append(pattern.replace("*", "{any}"))
    candidates.append(pattern)
    for candidate in candidates:
        if matches(function, pattern, candidate):
            return (candidate,)
    return ()


def pattern_covers(function: str, broad: str, narrow: str) -> bool | None:
    """Whether every resource `narrow` matches is matched by `broad`.

    Decided by the engine: a literal `narrow` by matching it, patterns of the exact grammar by
    the automata of `rolegate.engine.coverage`. Otherwise (regular expressions, globs, patterns
    too large to compare) False when a sample of `narrow` is not matched by `broad`, else None:
    every sample is covered but coverage is not proven.
    """
    if broad == narrow:
        return True
    if pattern_error(function, broad) is not None:
        return False
    single = literal_resource(function, narrow)
    if single is not None:
        return matches(function, broad, single)
    if coverage.exact(function, broad) and coverage.exact(function, narrow):
        try:
            return coverage.uncovered(function, [narrow], coverage.Access(allow=(broad,))) is None
        except coverage.Undecided:
            pass
    samples = sample_resources(function, narrow)
    if not samples:
        return None
    if not all(matches(function, broad, sample) for sample in samples):
        return False
    return None
