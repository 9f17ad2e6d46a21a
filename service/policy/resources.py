"""What a resource pattern means: concrete sample resources, literal prefixes and coverage.

Patterns are read with the model's matching function (keyMatch2 for the shipped model.conf), whose
matcher comes from `rolegate.engine.patterns` so the answers equal Casbin's. keyMatch2 turns a
pattern into a regular expression: `/*` becomes `/.*`, `:name` becomes `[^/]+`, and every other
regex metacharacter keeps its regex meaning.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..engine.patterns import compile_matcher

REGEX_METACHARS = frozenset(".^$+?{}|\\")
GLOB_METACHARS = frozenset("*?[{\\")  # globMatch wildcards, classes, braces and escapes
_PARAM = re.compile(r":[^/]+")
_QUANTIFIERS = frozenset("*?+{")


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


def is_literal(function: str, pattern: str) -> bool:
    """True when the pattern matches exactly one resource: itself."""
    if function == "equal":
        return True
    if function == "regexMatch":
        return False
    if "*" in pattern:
        return False
    if function == "keyMatch2":
        return ":" not in pattern and not (set(pattern) & REGEX_METACHARS)
    if function == "globMatch":
        return not (set(pattern) & GLOB_METACHARS)
    return True  # keyMatch without `*`


def literal_prefix(function: str, pattern: str) -> str | None:
    """A string every match starts with (None when the function gives no such guarantee)."""
    if function not in ("keyMatch2", "keyMatch"):
        return pattern if is_literal(function, pattern) else None
    special = REGEX_METACHARS | {"*", ":"} if function == "keyMatch2" else frozenset("*")
    for index, char in enumerate(pattern):
        if char in special:
            prefix = pattern[:index]
            quantifies_previous = char in _QUANTIFIERS and not (
                char == "*" and prefix.endswith("/")
            )
            if function == "keyMatch2" and quantifies_previous:
                prefix = prefix[:-1]
            return prefix
    return pattern


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

    True or False when decidable; None when every sample of `narrow` is matched by `broad` but
    coverage cannot be proven (regular expressions, parameters in the broad pattern).
    """
    if broad == narrow:
        return True
    if pattern_error(function, broad) is not None:
        return False
    if function == "keyMatch2" and broad == "*":
        return True
    if is_literal(function, narrow):
        return matches(function, broad, narrow)
    if function in ("keyMatch2", "keyMatch") and broad.endswith("*"):
        stem = broad[:-1]
        stem_is_literal = is_literal(function, stem) and (
            function == "keyMatch" or stem.endswith("/")
        )
        narrow_prefix = literal_prefix(function, narrow)
        if stem_is_literal and narrow_prefix is not None and narrow_prefix.startswith(stem):
            return True
    samples = sample_resources(function, narrow)
    if not samples:
        return None
    if not all(matches(function, broad, sample) for sample in samples):
        return False
    return None
