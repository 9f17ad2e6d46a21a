"""Resource patterns: compiled once per distinct pattern, matched in time linear in the resource.

Each matching function answers what the Casbin built-in of the same name answers. keyMatch2 and
regexMatch are regular expressions read by Python's `re` (keyMatch2 rewrites `/*` to `/.*` and
`:name` to `[^/]+`, anchors `^...$` and calls `re.match`); `re` backtracks, so
`/projects/.*.*.*.*!` against a long resource runs for minutes. Here:

- a pattern of the safe grammar (literal text, `:name`, `/*`, the whole pattern `*`) with at most
  one `*` runs on Python's `re` with Casbin's own regex text: one unbounded repeat, and a `:name`
  segment always ends at a `/`, so the work is linear in the resource (times the pattern length);
- any other pattern is translated from the tree Python's own regex parser builds for Casbin's
  regex text into RE2 syntax (google-re2, a linear-time engine). Constructs whose meaning RE2
  would change are refused (the pattern then fails every check that reaches it, like a pattern
  Casbin cannot compile): backreferences, lookarounds, atomic groups and possessive repeats,
  inline flags, `\\d \\w \\s \\b` (Unicode classes in `re`, ASCII in RE2), a `$` that is not
  at the end, repeat counts above 1000. `.` is emitted as `[^\\n]` and a final `$` as `\\n?\\z`
  (`re`'s `$` also matches before a final newline).

A resource with control characters or lone surrogates matches no pattern (RE2 reads UTF-8;
the API refuses such resources anyway).

globMatch is Casbin's wcmatch glob, answered by the automaton of `glob.py` (linear-time, exact;
a pattern Casbin raises for fails every check that reaches it, as above).

`validate_pattern` says whether a pattern may be written (admin API, policy files): by default
keyMatch2 patterns must use the safe grammar; with `allow_regex` any pattern the linear engine
reproduces exactly.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

import re2

from . import coverage, glob

Matcher = Callable[[str], bool]
# Python's own regex parser: exactly the meaning `re` (and so Casbin) gives a pattern.
sre_parse: Any = importlib.import_module("re._parser")
sre: Any = importlib.import_module("re._constants")

_UNMATCHABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
MAX_REPEAT_COUNT = 1000  # RE2's limit for `{n}`
SAFE_GRAMMAR = "literal text, `:name` (one path segment), `/*` (anything below) or `*`"


class PatternError(Exception):
    """A resource pattern that cannot be evaluated (Casbin would raise, or only `re`'s
    backtracking could reproduce it)."""


class NotLinear(ValueError):
    """A regular expression whose exact meaning the linear-time engine cannot reproduce."""


def has_unmatchable(resource: str) -> bool:
    """Whether `resource` contains control characters or lone surrogates (matches nothing)."""
    return _UNMATCHABLE.search(resource) is not None


def _raise_on_use(pattern: str, error: object) -> Matcher:
    def matcher(_resource: str) -> bool:
        raise PatternError(f"invalid resource pattern {pattern!r}: {error}")

    return matcher


def key_match2_source(pattern: str) -> str:
    """The regular expression Casbin's keyMatch2 builds for `pattern`."""
    source = pattern.replace("/*", "/.*")
    source = _KEY_MATCH2_PARAMETER.sub(r"\g<1>[^\/]+\g<2>", source, 0)
    if source == "*":
        source = "(.*)"
    return "^" + source + "$"


_KEY_MATCH2_PARAMETER = re.compile(r"(.*?):[^\/]+(.*?)")  # casbin.util.KEY_MATCH2_PATTERN


# --------------------------------------------------------------------------- re -> RE2


def _char(code: int) -> str:
    if 0xD800 <= code <= 0xDFFF:
        raise NotLinear("a lone surrogate character cannot be matched")
    char = chr(code)
    return char if char.isascii() and char.isalnum() else f"\\x{{{code:x}}}"


def _class_item(op: Any, value: Any) -> str:
    if op is sre.LITERAL:
        return _char(value)
    if op is sre.RANGE:
        return f"{_char(value[0])}-{_char(value[1])}"
    raise NotLinear("`\\d`, `\\w` and `\\s` (Unicode-dependent in `re`) are not supported")


def _character_class(items: Any) -> str:
    negate = bool(items) and items[0][0] is sre.NEGATE
    body = "".join(_class_item(op, value) for op, value in items[negate:])
    return f"[{'^' * negate}{body}]"


def _repeat(op: Any, value: Any, tail: bool) -> str:
    low, high, item = value
    if op is sre.POSSESSIVE_REPEAT:
        raise NotLinear("possessive repeats are not supported")
    if low > MAX_REPEAT_COUNT or (high != sre.MAXREPEAT and high > MAX_REPEAT_COUNT):
        raise NotLinear(f"repeat counts above {MAX_REPEAT_COUNT} are not supported")
    inner = _sequence(item, tail=False)
    upper = "" if high == sre.MAXREPEAT else str(high)
    count = f"{{{low}}}" if upper == str(low) else f"{{{low},{upper}}}"
    return f"(?:{inner}){count}"  # greedy or lazy: the same yes/no answer


def _anchor(value: Any, tail: bool) -> str:
    if value in (sre.AT_BEGINNING, sre.AT_BEGINNING_STRING):
        return "^"
    if value == sre.AT_END_STRING:
        return "\\z"
    if value == sre.AT_END:
        if not tail:
            raise NotLinear("`$` is supported only at the end of the pattern")
        return "\\n?\\z"  # `re`: end of text or before a final newline
    raise NotLinear("word boundaries (`\\b`, `\\B`) are not supported")


def _item(op: Any, value: Any, tail: bool) -> str:
    if op is sre.LITERAL:
        return _char(value)
    if op is sre.NOT_LITERAL:
        return f"[^{_char(value)}]"
    if op is sre.ANY:
        return "[^\\n]"
    if op is sre.IN:
        return _character_class(value)
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        return _repeat(op, value, tail)
    if op is sre.SUBPATTERN:
        _group, add_flags, del_flags, inner = value
        if add_flags or del_flags:
            raise NotLinear("inline flags such as `(?i:...)` are not supported")
        return f"(?:{_sequence(inner, tail)})"
    if op is sre.BRANCH:
        return "(?:" + "|".join(_sequence(branch, tail) for branch in value[1]) + ")"
    if op is sre.AT:
        return _anchor(value, tail)
    names = {
        sre.GROUPREF: "backreferences",
        sre.GROUPREF_EXISTS: "conditional groups",
        sre.ASSERT: "lookarounds",
        sre.ASSERT_NOT: "lookarounds",
        sre.ATOMIC_GROUP: "atomic groups",
        sre.CATEGORY: "`\\d`, `\\w` and `\\s` (Unicode-dependent in `re`)",
    }
    raise NotLinear(f"{names.get(op, str(op))} are not supported")


def _sequence(items: Any, tail: bool) -> str:
    """`tail`: nothing follows the sequence. An item is in tail position when only `$`s
    follow it (`$$` asserts twice at the same place)."""
    parts = []
    for i, (op, value) in enumerate(items):
        rest_is_end = all(item == (sre.AT, sre.AT_END) for item in items[i + 1 :])
        parts.append(_item(op, value, tail and rest_is_end))
    return "".join(parts)


def linear_source(source: str) -> str:
    """RE2 syntax with exactly the yes/no answers of `re.match(source, ...)`; NotLinear when
    RE2 cannot reproduce them (re.error when `re` itself rejects the source)."""
    parsed = sre_parse.parse(source)
    if parsed.state.flags & ~sre.SRE_FLAG_UNICODE:
        raise NotLinear("inline flags such as `(?i)` are not supported")
    return _sequence(parsed.data, tail=True)


def _re2_options() -> Any:
    options = re2.Options()
    options.never_capture = True
    options.log_errors = False
    return options


_RE2_OPTIONS = _re2_options()
_ANCHOR_START = re2._re2.RE2.Anchor.ANCHOR_START


def _compile_re2(source: str) -> Any:
    compiled = re2._re2.RE2(source.encode(), _RE2_OPTIONS)
    if not compiled.ok():
        raise NotLinear(f"the linear-time engine refuses it ({compiled.error().decode()})")
    return compiled


def _re2_matcher(compiled: Any) -> Matcher:
    match = compiled.Match

    def matcher(resource: str) -> bool:
        try:
            data = resource.encode()
        except UnicodeEncodeError:  # lone surrogates
            return False
        return match(_ANCHOR_START, data, 0, len(data))[0][0] != -1

    return matcher


def _regex_matcher(source: str, pattern: str, *, backtracking_safe: bool) -> Matcher:
    try:
        compiled = re.compile(source)
    except re.error as exc:
        return _raise_on_use(pattern, exc)
    if backtracking_safe:
        return compiled.match  # type: ignore[return-value]
    try:
        return _re2_matcher(_compile_re2(linear_source(source)))
    except NotLinear as exc:
        return _raise_on_use(pattern, f"cannot be matched in linear time: {exc}")


def _at_most_one_star(tokens: tuple[coverage.Token, ...]) -> bool:
    return tokens.count(coverage.ANY) <= 1


def compile_matcher(function: str, pattern: str) -> Matcher:
    """A one-argument predicate `matcher(resource) -> bool` for a Casbin matching function."""
    if function == "keyMatch2":
        tokens = coverage.pattern_tokens(function, pattern)
        safe = tokens is not None and _at_most_one_star(tokens)
        return _regex_matcher(key_match2_source(pattern), pattern, backtracking_safe=safe)
    if function == "regexMatch":
        return _regex_matcher(pattern, pattern, backtracking_safe=False)
    if function == "keyMatch":
        star = pattern.find("*")
        if star == -1:
            return pattern.__eq__
        prefix = pattern[:star]
        return lambda resource: (
            resource[:star] == prefix if len(resource) > star else resource == prefix
        )
    if function == "globMatch":
        try:
            return glob.compile_glob(pattern)
        except (glob.GlobError, glob.NotLinear) as exc:
            return _raise_on_use(pattern, exc)
    if function == "equal":
        return pattern.__eq__
    raise ValueError(f"unknown matching function {function!r}")


def casbin_error(function: str, pattern: str) -> str | None:
    """Why Casbin itself raises on every check that evaluates `pattern` (None: it does not)."""
    if function == "globMatch":
        return glob.casbin_error(pattern)
    if function not in ("keyMatch2", "regexMatch"):
        return None
    try:
        re.compile(key_match2_source(pattern) if function == "keyMatch2" else pattern)
    except re.error as exc:
        return str(exc)
    return None


def validate_pattern(pattern: str, *, allow_regex: bool, function: str = "keyMatch2") -> str | None:
    """Why `pattern` may not be written as a resource pattern (None: it may).

    keyMatch2: the safe grammar, or with `allow_regex` any regular expression the linear-time
    engine reproduces exactly. regexMatch: any such regular expression. globMatch: any glob
    Casbin evaluates and the linear-time matcher reproduces. Others: anything.
    """
    if function == "globMatch":
        return glob.glob_problem(pattern)
    if function not in ("keyMatch2", "regexMatch"):
        return None
    source = key_match2_source(pattern) if function == "keyMatch2" else pattern
    error = casbin_error(function, pattern)
    if error is not None:
        return f"{pattern!r} is not a valid pattern ({error})"
    if function == "keyMatch2" and coverage.exact(function, pattern):
        return None
    if function == "keyMatch2" and not allow_regex:
        return (
            f"{pattern!r} uses regular-expression syntax; resource patterns are "
            f"{SAFE_GRAMMAR} (regular expressions need ROLEGATE_ALLOW_REGEX_PATTERNS=1)"
        )
    try:
        _compile_re2(linear_source(source))
    except NotLinear as exc:
        return f"{pattern!r} cannot be matched in linear time: {exc}"
    return None


def domain_applies(org: str, domain: str) -> bool:
    """Whether rules of `domain` apply in `org` for role links: Casbin's keyMatch (registered
    as the domain matching function of `g`), so `*` and `acme-*` apply to many orgs."""
    star = domain.find("*")
    if star == -1:
        return org == domain
    if len(org) > star:
        return org[:star] == domain[:star]
    return org == domain[:star]


def resource_segment(resource: str) -> str:
    """The first path segment of a resource (`/projects/1` -> `projects`); "" when none."""
    if not resource.startswith("/"):
        return ""
    end = resource.find("/", 1)
    return resource[1:] if end == -1 else resource[1:end]


def _literal_first_segment(tokens: tuple[coverage.Token, ...]) -> str | None:
    """`/name` followed by `/` or the end, all literal; None otherwise."""
    if not tokens or tokens[0] != "/":
        return None
    chars = []
    for token in tokens[1:]:
        if token == "/":
            break
        if not isinstance(token, str):
            return None
        chars.append(token)
    return "".join(chars) or None


def pattern_segment(function: str, pattern: str) -> str | None:
    """The first segment every resource matching `pattern` has, or None when it can vary.

    Lets a decision test only the patterns filed under the resource's first segment (plus the
    ones filed under None) instead of every pattern of a role and action.
    """
    if function == "keyMatch2":
        # Only the safe grammar: `|`, `?`, `{0}`, groups... let other first segments match.
        tokens = coverage.pattern_tokens(function, pattern)
        return _literal_first_segment(tokens) if tokens is not None else None
    if function in ("keyMatch", "equal"):
        star = pattern.find("*") if function == "keyMatch" else -1
        if star == -1:  # equality
            return resource_segment(pattern) or None
        head = pattern[:star]  # keyMatch: the resource starts with `head`
        segment = resource_segment(head)
        return segment if segment and head.startswith(f"/{segment}/") else None
    return None


def literal_resource(function: str, pattern: str) -> str | None:
    """The one resource `pattern` matches when it matches exactly its own text, else None (it
    matches more, or the function's reading of it is not decided here: regexMatch)."""
    if function == "globMatch":
        return None if set(pattern) & glob.SPECIAL else pattern
    tokens = coverage.pattern_tokens(function, pattern)
    if tokens is None:
        return None
    chars = [token for token in tokens if isinstance(token, str)]
    return "".join(chars) if len(chars) == len(tokens) else None


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
