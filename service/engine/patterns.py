"""Resource pattern matchers, compiled once per distinct pattern.

Each function reproduces the Casbin built-in of the same name exactly (same regex text, same
`re.match` anchoring) so that a compiled matcher answers what Casbin answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from casbin.util import builtin_operators as casbin_ops

Matcher = Callable[[str], bool]


class PatternError(Exception):
    """A resource pattern that Casbin itself could not evaluate (it would raise on every check)."""


def _raise_on_use(pattern: str, error: Exception) -> Matcher:
    def matcher(_resource: str) -> bool:
        raise PatternError(f"invalid resource pattern {pattern!r}: {error}")

    return matcher


def _regex(source: str, pattern: str) -> Matcher:
    try:
        return re.compile(source).match  # type: ignore[return-value]
    except re.error as exc:
        return _raise_on_use(pattern, exc)


def key_match2_source(pattern: str) -> str:
    """The regular expression Casbin's keyMatch2 builds for `pattern`."""
    source = pattern.replace("/*", "/.*")
    source = casbin_ops.KEY_MATCH2_PATTERN.sub(r"\g<1>[^\/]+\g<2>", source, 0)
    if source == "*":
        source = "(.*)"
    return "^" + source + "$"


def compile_matcher(function: str, pattern: str) -> Matcher:
    """A one-argument predicate `matcher(resource) -> bool` for a Casbin matching function."""
    if function == "keyMatch2":
        return _regex(key_match2_source(pattern), pattern)
    if function == "regexMatch":
        return _regex(pattern, pattern)
    if function == "keyMatch":
        star = pattern.find("*")
        if star == -1:
            return pattern.__eq__
        prefix = pattern[:star]
        return lambda resource: resource[:star] == prefix if len(resource) > star else resource == prefix
    if function == "globMatch":
        return lambda resource: bool(casbin_ops.glob_match(resource, pattern))
    if function == "equal":
        return pattern.__eq__
    raise ValueError(f"unknown matching function {function!r}")


class MatcherCache:
    """Shares one compiled matcher between every rule that uses the same pattern."""

    def __init__(self, function: str):
        self.function = function
        self._matchers: dict[str, Matcher] = {}

    def get(self, pattern: str) -> Matcher:
        matcher = self._matchers.get(pattern)
        if matcher is None:
            matcher = self._matchers[pattern] = compile_matcher(self.function, pattern)
        return matcher
