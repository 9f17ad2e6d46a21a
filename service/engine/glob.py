"""Casbin's globMatch, answered in time linear in the resource.

Casbin's `glob_match` rewrites the pattern (a leading `*/` loses its star, `***` inside a
segment becomes `*`, a final `/**` also matches without it) and asks wcmatch's `globmatch`
with GLOBSTAR | BRACE. wcmatch expands the braces and turns each pattern into a Python regular
expression that `re` runs by backtracking: `/**/a/**/a/**/a/**/a/**/b` against `/a` * 34 takes
0.6 s and doubles with every few characters.

Here wcmatch still builds exactly those regular expressions (so every parsing decision is its
own), Python's regex parser reads them, and a Thompson automaton simulates them: the set of live
states moves one character at a time, never backtracking. wcmatch's lookarounds look a bounded
number of characters around a position, so they are evaluated by small automata of their own,
and a step is decided by the live states and the characters within that reach: steps are cached
under that key, which makes the common case one dictionary lookup per character.

Atomic groups, which wcmatch wraps around a star and a fixed-length text after it, are read as
plain groups: wcmatch uses them only where they do not change the answer (the differential test
checks this). Constructs the automaton cannot reproduce exactly (backreferences, unbounded
lookarounds, flags other than DOTALL) make the pattern refused, never answered differently.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from wcmatch import _wcparse
from wcmatch import glob as wcglob

sre_parse: Any = importlib.import_module("re._parser")
sre: Any = importlib.import_module("re._constants")

FLAGS = wcglob.GLOBSTAR | wcglob.BRACE  # what Casbin's glob_match passes
# What makes a glob match more than its own text under FLAGS: wildcards, classes, braces, escapes.
SPECIAL = frozenset("*?[{\\")
# A bigger automaton is refused: a step costs up to its size (braces expand to up to 1000
# patterns). 1,600 states (`/**/{a,b,c,d}{a,b,c,d}{a,b,c,d}/**/x`) take ~0.3 s for 2,048
# characters that never repeat a step; typical patterns are under 100 states.
MAX_STATES = 2_000
# The step cache is shared by all patterns and cleared when it holds this many steps or live
# states in all (a few MB; a live-state set is stored once for all the steps that reach it).
MAX_CACHED_STEPS = 20_000
MAX_CACHED_STATES = 300_000


class GlobError(Exception):
    """Casbin's glob_match raises for this pattern on every check (e.g. too many braces)."""


class NotLinear(ValueError):
    """A construct whose exact meaning the automaton cannot reproduce."""


# --------------------------------------------------------------------------- Casbin + wcmatch


def casbin_rewrite(pattern: str) -> str:
    """The pattern Casbin's glob_match hands to wcmatch."""
    while pattern.startswith("*/"):
        pattern = pattern[1:]
    parts = [part if part == "**" else re.sub(r"\*{2,}", "*", part) for part in pattern.split("/")]
    result = "/".join(parts)
    if result.endswith("/**"):
        result = "{" + result[:-3] + "," + result + "}"
    return result


def wcmatch_regexes(pattern: str) -> list[str]:
    """The regular expressions wcmatch's globmatch fully matches a resource against (any one
    matching is a match). GlobError when wcmatch raises."""
    flags = wcglob._flag_transform(FLAGS)
    try:
        positive, negative = _wcparse.compile_pattern(casbin_rewrite(pattern), flags)
    except Exception as exc:
        raise GlobError(str(exc)) from exc
    if negative:  # only NEGATE / NODIR produce these; Casbin passes neither
        raise NotLinear("exclusion patterns are not supported")
    return [compiled.pattern for compiled in positive]


# --------------------------------------------------------------------------- automaton

# Nodes: ("char", predicate, next) | ("split", nexts) | ("assert", test, next) | ("match",)
Node = tuple[Any, ...]
Predicate = Callable[[str], bool]


def _category_test(code: Any) -> Predicate:
    texts = {
        sre.CATEGORY_DIGIT: r"\d",
        sre.CATEGORY_NOT_DIGIT: r"\D",
        sre.CATEGORY_SPACE: r"\s",
        sre.CATEGORY_NOT_SPACE: r"\S",
        sre.CATEGORY_WORD: r"\w",
        sre.CATEGORY_NOT_WORD: r"\W",
    }
    if code not in texts:
        raise NotLinear(f"character category {code} is not supported")
    return re.compile(texts[code]).fullmatch  # type: ignore[return-value]


def _class_test(items: Any, ignore_case: bool) -> Predicate:
    if ignore_case:
        raise NotLinear("case-insensitive classes are not supported")
    negate = bool(items) and items[0][0] is sre.NEGATE
    literals: set[str] = set()
    ranges: list[tuple[int, int]] = []
    categories: list[Predicate] = []
    for op, value in items[negate:]:
        if op is sre.LITERAL:
            literals.add(chr(value))
        elif op is sre.RANGE:
            ranges.append(value)
        elif op is sre.CATEGORY:
            categories.append(_category_test(value))
        else:
            raise NotLinear(f"class item {op} is not supported")

    def test(char: str) -> bool:
        code = ord(char)
        found = (
            char in literals
            or any(low <= code <= high for low, high in ranges)
            or any(category(char) for category in categories)
        )
        return found != negate

    return test


class _Builder:
    """Compiles a parsed regular expression into automaton nodes (built back to front)."""

    def __init__(self) -> None:
        self.nodes: list[Node] = [("match",)]
        self.reach = 0  # how far any lookaround may look from its position
        self.tests: dict[str, Callable[[str, int], bool]] = {}  # one per distinct lookaround

    def add(self, node: Node) -> int:
        if len(self.nodes) >= MAX_STATES:
            raise NotLinear(f"the pattern expands to more than {MAX_STATES} automaton states")
        self.nodes.append(node)
        return len(self.nodes) - 1

    def sequence(self, items: Any, follow: int, flags: int) -> int:
        for op, value in reversed(list(items)):
            follow = self.item(op, value, follow, flags)
        return follow

    def item(self, op: Any, value: Any, follow: int, flags: int) -> int:
        dotall = bool(flags & sre.SRE_FLAG_DOTALL)
        ignore_case = bool(flags & sre.SRE_FLAG_IGNORECASE)
        if ignore_case and op in (sre.LITERAL, sre.NOT_LITERAL):
            raise NotLinear("case-insensitive matching is not supported")
        if op is sre.LITERAL:
            char = chr(value)
            return self.add(("char", char.__eq__, follow))
        if op is sre.NOT_LITERAL:
            char = chr(value)
            return self.add(("char", char.__ne__, follow))
        if op is sre.ANY:
            return self.add(("char", (lambda _c: True) if dotall else "\n".__ne__, follow))
        if op is sre.IN:
            return self.add(("char", _class_test(value, ignore_case), follow))
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):  # greedy or lazy: the same yes/no answer
            return self.repeat(value, follow, flags)
        if op is sre.SUBPATTERN:
            _group, add_flags, del_flags, inner = value
            flags = (flags | add_flags) & ~del_flags
            if flags & ~(sre.SRE_FLAG_DOTALL | sre.SRE_FLAG_UNICODE):
                raise NotLinear("inline flags other than `s` are not supported")
            return self.sequence(inner, follow, flags)
        if op is sre.ATOMIC_GROUP:  # see the module docstring
            return self.sequence(value, follow, flags)
        if op is sre.BRANCH:
            starts = [self.sequence(branch, follow, flags) for branch in value[1]]
            return self.add(("split", tuple(starts)))
        if op is sre.AT:
            return self.add(("assert", _anchor_test(value), follow))
        if op in (sre.ASSERT, sre.ASSERT_NOT):
            key = repr((op, value[0], value[1].data, flags))
            if key not in self.tests:
                self.tests[key] = self.lookaround(op, value, flags)
            return self.add(("assert", self.tests[key], follow))
        raise NotLinear(f"{op} is not supported")

    def repeat(self, value: Any, follow: int, flags: int) -> int:
        low, high, item = value
        if high == sre.MAXREPEAT:
            loop = self.add(("split", ()))  # patched below: (body, follow)
            body = self.sequence(item, loop, flags)
            self.nodes[loop] = ("split", (body, follow))
            follow = loop
        else:
            for _ in range(high - low):
                body = self.sequence(item, follow, flags)
                follow = self.add(("split", (body, follow)))
        for _ in range(low):
            follow = self.sequence(item, follow, flags)
        return follow

    def lookaround(self, op: Any, value: Any, flags: int) -> Callable[[str, int], bool]:
        direction, body = value
        low, high = body.getwidth()
        if high >= sre.MAXREPEAT or high > 64:
            raise NotLinear("lookarounds of unbounded width are not supported")
        inner = _Builder()
        start = inner.sequence(body, 0, flags)
        automaton = _Automaton(inner.nodes, start, inner.reach)
        self.reach = max(self.reach, high + inner.reach + 1)
        negate = op is sre.ASSERT_NOT
        if direction == 1:

            def ahead(text: str, pos: int) -> bool:
                return automaton.matches_from(text, pos, None) != negate

            return ahead
        if low != high:
            raise NotLinear("lookbehinds of variable width are not supported")

        def behind(text: str, pos: int) -> bool:
            found = pos >= low and automaton.matches_from(text, pos - low, pos)
            return found != negate

        return behind


def _anchor_test(value: Any) -> Callable[[str, int], bool]:
    if value in (sre.AT_BEGINNING, sre.AT_BEGINNING_STRING):
        return lambda _text, pos: pos == 0
    if value == sre.AT_END_STRING:
        return lambda text, pos: pos == len(text)
    if value == sre.AT_END:  # not MULTILINE: the end, or before a final newline
        return lambda text, pos: pos == len(text) or (pos == len(text) - 1 and text[pos] == "\n")
    raise NotLinear("word boundaries are not supported")


class _Automaton:
    def __init__(self, nodes: list[Node], start: int, reach: int):
        self.nodes = nodes
        self.start = frozenset((start,))
        self.reach = reach

    def closure(self, states: frozenset[int], text: str, pos: int) -> set[int]:
        """The states reachable from `states` without consuming a character at `pos`."""
        nodes = self.nodes
        seen: set[int] = set()
        results: dict[Callable[[str, int], bool], bool] = {}  # each distinct test once
        stack = list(states)
        while stack:
            index = stack.pop()
            if index in seen:
                continue
            seen.add(index)
            node = nodes[index]
            kind = node[0]
            if kind == "split":
                stack.extend(node[1])
            elif kind == "assert":
                test = node[1]
                passed = results.get(test)
                if passed is None:
                    passed = results[test] = test(text, pos)
                if passed:
                    stack.append(node[2])
        return seen

    def step(self, states: frozenset[int], text: str, pos: int) -> frozenset[int]:
        char = text[pos]
        nodes = self.nodes
        following = set()
        for index in self.closure(states, text, pos):
            node = nodes[index]
            if node[0] == "char" and node[1](char):
                following.add(node[2])
        return frozenset(following)

    def accepts(self, states: frozenset[int], text: str, pos: int) -> bool:
        return 0 in self.closure(states, text, pos)

    def matches_from(self, text: str, pos: int, end: int | None) -> bool:
        """Whether the automaton matches text[pos:e] for e == end (any e when end is None)."""
        states = self.start
        limit = len(text) if end is None else end
        while True:
            if (end is None or pos == end) and self.accepts(states, text, pos):
                return True
            if pos >= limit or not states:
                return False
            states = self.step(states, text, pos)
            pos += 1

    def fullmatch(self, text: str) -> bool:
        """Whether the automaton matches all of `text`, with steps cached by the live states and
        the characters lookarounds may inspect (exactly what a step depends on)."""
        states = self.start
        reach = self.reach + 2  # `^` and `$` look one character beyond
        steps = _STEPS
        for pos in range(len(text)):
            if not states:
                return False
            key = (self, states, text[max(0, pos - reach) : pos], text[pos : pos + reach + 1])
            following = steps.get(key)
            if following is None:
                following = _cache_step(key, self.step(states, text, pos))
            states = following
        return self.accepts(states, text, len(text))


# (automaton, live states, text before, text from the position) -> live states after the step
_STEPS: dict[tuple[_Automaton, frozenset[int], str, str], frozenset[int]] = {}
_SETS: dict[frozenset[int], frozenset[int]] = {}  # one object per distinct live-state set


def _cache_step(
    key: tuple[_Automaton, frozenset[int], str, str], following: frozenset[int]
) -> frozenset[int]:
    global _cached_states
    full = len(_STEPS) >= MAX_CACHED_STEPS
    if full or _cached_states + len(following) > MAX_CACHED_STATES:
        _STEPS.clear()
        _SETS.clear()
        _cached_states = 0
    shared = _SETS.get(following)
    if shared is None:
        shared = _SETS[following] = following
        _cached_states += len(following) + 1
    _STEPS[key] = shared
    return shared


_cached_states = 0


def compile_glob(pattern: str) -> Callable[[str], bool]:
    """`matcher(resource)` answering Casbin's `glob_match(resource, pattern)`.

    GlobError when Casbin raises for the pattern, NotLinear when it cannot be reproduced.
    """
    sources = wcmatch_regexes(pattern)
    if not sources:
        return lambda _resource: False
    parsed = sre_parse.parse("|".join(f"(?:{source})" for source in sources))
    if parsed.state.flags & ~sre.SRE_FLAG_UNICODE:
        raise NotLinear("global inline flags are not supported")
    builder = _Builder()
    start = builder.sequence(parsed.data, 0, 0)
    return _Automaton(builder.nodes, start, builder.reach).fullmatch


def casbin_error(pattern: str) -> str | None:
    """Why Casbin's glob_match raises on every check with `pattern` (None: it does not)."""
    try:
        wcmatch_regexes(pattern)
    except GlobError as exc:
        return str(exc)
    except NotLinear:
        pass
    return None


def glob_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be served as a globMatch pattern (None: it can)."""
    try:
        compile_glob(pattern)
    except GlobError as exc:
        return f"{pattern!r} is not a valid glob pattern ({exc})"
    except NotLinear as exc:
        return f"{pattern!r} cannot be matched in linear time: {exc}"
    return None
