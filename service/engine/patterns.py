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
        return lambda resource: (
            resource[:star] == prefix if len(resource) > star else resource == prefix
        )
    if function == "globMatch":
        return lambda resource: bool(casbin_ops.glob_match(resource, pattern))
    if function == "equal":
        return pattern.__eq__
    raise ValueError(f"unknown matching function {function!r}")


_LITERAL_SEGMENT = re.compile(r"/([A-Za-z0-9_~@-]+)(?:/|$)")  # no regex metacharacters


def resource_segment(resource: str) -> str:
    """The first path segment of a resource (`/projects/1` -> `projects`); "" when none."""
    if not resource.startswith("/"):
        return ""
    end = resource.find("/", 1)
    return resource[1:] if end == -1 else resource[1:end]


def pattern_segment(function: str, pattern: str) -> str | None:
    """The first segment every resource matching `pattern` has, or None when it can vary.

    Lets a decision test only the patterns filed under the resource's first segment (plus the
    ones filed under None) instead of every pattern of a role and action.
    """
    if function == "keyMatch2":
        match = _LITERAL_SEGMENT.match(pattern)
        return match.group(1) if match else None
    if function in ("keyMatch", "equal"):
        star = pattern.find("*") if function == "keyMatch" else -1
        if star == -1:  # equality
            return resource_segment(pattern) or None
        head = pattern[:star]  # keyMatch: the resource starts with `head`
        segment = resource_segment(head)
        return segment if segment and head.startswith(f"/{segment}/") else None
    return None


def pattern_problem(matcher: Matcher) -> str | None:
    """Why Casbin would raise whenever it evaluates this pattern (None: it evaluates fine).

    Casbin's pattern errors come from compiling the pattern, so they do not depend on the
    resource: one probe tells.
    """
    try:
        matcher("/")
    except Exception as exc:
        return str(exc)
    return None


class MatcherCache:
    """Shares one compiled matcher between every rule that uses the same pattern.

    Used while building a snapshot (single writer); decisions only read the matchers handed out.
    """

    def __init__(self, function: str):
        self.function = function
        self._matchers: dict[str, Matcher] = {}
        self._segments: dict[str, str | None] = {}
        self.problems: dict[str, str] = {}

    def segment(self, pattern: str) -> str | None:
        """`pattern_segment` for this cache's function, computed once per pattern."""
        try:
            return self._segments[pattern]
        except KeyError:
            segment = self._segments[pattern] = pattern_segment(self.function, pattern)
            return segment

    def get(self, pattern: str) -> Matcher:
        matcher = self._matchers.get(pattern)
        if matcher is None:
            matcher = self._matchers[pattern] = compile_matcher(self.function, pattern)
            problem = pattern_problem(matcher)
            if problem is not None:
                self.problems[pattern] = problem
        return matcher
