"""Exact questions about sets of resources described by patterns: inclusion, overlap, gains.

Decided by automata, not by samples or literal prefixes. A pattern of the safe grammar compiles
to a sequence of tokens, exactly as Casbin's matching function reads it:

- keyMatch2 (Casbin turns `/*` into `/.*`, `:name` into `[^/]+`, the whole pattern `*` into
  `(.*)`, and matches `^...$`): a literal character; `SEGMENT` = one or more characters other
  than `/` (`:name` swallows the rest of its path segment, as Casbin's `:[^/]+` rewrite does);
  `ANY` = any run of characters. Any other regular-expression metacharacter is outside the
  grammar: such a pattern is not `exact` and every question about it is answered by the caller
  failing closed.
- keyMatch: the text before the first `*` literally, then `ANY` (no `*`: equality).
- equal (`r.obj == p.obj`): literal text.

Resources never contain a newline (the API refuses control characters), so `ANY` is any run of
characters and Casbin's `$`-before-final-newline corner does not arise.

A set of resources is an `Access`: matched by some allow pattern and (deny-override) by no deny
pattern. `first_resource` walks the product of the patterns' automata (subset construction on
the fly, breadth first) and returns the shortest resource with the asked membership, which also
serves as a concrete example in error messages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

REGEX_METACHARACTERS = frozenset(".^$*+?{}[]\\|()")
EXACT_FUNCTIONS = ("keyMatch2", "keyMatch", "equal")
MAX_STATES = 20_000  # product states explored before giving up (the caller fails closed)

# Tokens: a literal character is itself (a one-character str); the others are these markers.
SEGMENT_FIRST = 1  # one character other than "/"
SEGMENT_REST = 2  # any run of characters other than "/"
ANY = 3  # any run of characters
Token = str | int
_KLEENE = (SEGMENT_REST, ANY)


class Undecided(Exception):
    """The question cannot be decided exactly (pattern outside the grammar, or too large)."""


@dataclass(frozen=True)
class Access:
    """Resources matched by some `allow` pattern and, when `deny_override`, by no `deny` one."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    deny_override: bool = True


def _key_match2_tokens(pattern: str) -> tuple[Token, ...] | None:
    if pattern == "*":
        return (ANY,)
    tokens: list[Token] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if pattern.startswith("/*", i):
            tokens += ["/", ANY]
            i += 2
        elif char == ":" and i + 1 < n and pattern[i + 1] != "/":
            tokens += [SEGMENT_FIRST, SEGMENT_REST]
            end = pattern.find("/", i)
            i = n if end == -1 else end
        elif char in REGEX_METACHARACTERS:
            return None
        else:
            tokens.append(char)
            i += 1
    return tuple(tokens)


@lru_cache(maxsize=4096)
def pattern_tokens(function: str, pattern: str) -> tuple[Token, ...] | None:
    """The token sequence of `pattern` under `function`, or None when it is not exact."""
    if function == "keyMatch2":
        return _key_match2_tokens(pattern)
    if function == "keyMatch":
        star = pattern.find("*")
        return tuple(pattern) if star == -1 else (*pattern[:star], ANY)
    if function == "equal":
        return tuple(pattern)
    return None


def exact(function: str, pattern: str) -> bool:
    """Whether questions about `pattern` can be decided exactly here."""
    return pattern_tokens(function, pattern) is not None


def _closure(tokens: tuple[Token, ...], position: int) -> list[int]:
    positions = [position]
    while position < len(tokens) and tokens[position] in _KLEENE:
        position += 1
        positions.append(position)
    return positions


def _step(tokens: tuple[Token, ...], position: int, char: str) -> list[int]:
    if position == len(tokens):
        return []
    token = tokens[position]
    if token == ANY or (token == SEGMENT_REST and char != "/"):
        return _closure(tokens, position)
    if (token == SEGMENT_FIRST and char != "/") or token == char:
        return _closure(tokens, position + 1)
    return []


class _Group:
    """The union of some patterns as one NFA; a state is a frozenset of (pattern, position)."""

    def __init__(self, function: str, patterns: Sequence[str]):
        compiled = []
        for pattern in patterns:
            tokens = pattern_tokens(function, pattern)
            if tokens is None:
                raise Undecided(f"pattern {pattern!r} is outside the safe grammar")
            compiled.append(tokens)
        self.patterns = tuple(compiled)

    def start(self) -> frozenset[tuple[int, int]]:
        return frozenset(
            (index, position)
            for index, tokens in enumerate(self.patterns)
            for position in _closure(tokens, 0)
        )

    def step(self, state: frozenset[tuple[int, int]], char: str) -> frozenset[tuple[int, int]]:
        return frozenset(
            (index, reached)
            for index, position in state
            for reached in _step(self.patterns[index], position, char)
        )

    def accepts(self, state: frozenset[tuple[int, int]]) -> bool:
        return any(position == len(self.patterns[index]) for index, position in state)

    def literals(self) -> set[str]:
        return {token for tokens in self.patterns for token in tokens if isinstance(token, str)}


def _alphabet(groups: Sequence[_Group]) -> list[str]:
    """One character per class the automata can tell apart: each literal, `/`, anything else."""
    literals = set().union(*(group.literals() for group in groups)) | {"/"}
    other = next(
        char
        for char in (*"abcdefghijklmnopqrstuvwxyz0123456789", *map(chr, range(0x4E00, 0x9FFF)))
        if char not in literals
    )
    return sorted(literals) + [other]


def first_resource(
    function: str,
    groups: Sequence[Sequence[str]],
    wanted: Callable[[tuple[bool, ...]], bool],
) -> str | None:
    """The shortest resource whose membership in each group (matches some pattern of it)
    satisfies `wanted`, or None when no resource does.

    `wanted` must require membership of the first group, which lets the search drop every
    branch where no pattern of the first group can still match. Raises Undecided when a pattern
    is outside the grammar or the search grows past MAX_STATES.
    """
    automata = [_Group(function, patterns) for patterns in groups]
    alphabet = _alphabet(automata)
    start = tuple(automaton.start() for automaton in automata)
    parents: dict[tuple, tuple[tuple, str] | None] = {start: None}
    frontier = [start]
    while frontier:
        reached = []
        for state in frontier:
            flags = tuple(a.accepts(s) for a, s in zip(automata, state, strict=True))
            if wanted(flags):
                return _spell(parents, state)
            for char in alphabet:
                following = tuple(a.step(s, char) for a, s in zip(automata, state, strict=True))
                if not following[0] or following in parents:
                    continue
                parents[following] = (state, char)
                if len(parents) > MAX_STATES:
                    raise Undecided("the patterns are too complex to compare exactly")
                reached.append(following)
        frontier = reached
    return None


def _spell(parents: dict[tuple, tuple[tuple, str] | None], state: tuple) -> str:
    chars = []
    step = parents[state]
    while step is not None:
        state, char = step
        chars.append(char)
        step = parents[state]
    return "".join(reversed(chars))


def _holds(access: Access, allowed: bool, denied: bool) -> bool:
    return allowed and not (access.deny_override and denied)


def uncovered(function: str, patterns: Sequence[str], held: Access) -> str | None:
    """A resource some of `patterns` matches that `held` does not allow; None: all covered."""
    if not patterns:
        return None

    def wanted(flags: tuple[bool, ...]) -> bool:
        return flags[0] and not _holds(held, flags[1], flags[2])

    return first_resource(function, [patterns, held.allow, held.deny], wanted)


def overlap(function: str, first: Sequence[str], second: Sequence[str]) -> str | None:
    """A resource matched by some pattern of `first` and some of `second`; None: disjoint."""
    return first_resource(function, [first, second], lambda flags: flags[0] and flags[1])


def gained(function: str, before: Access, after: Access, held: Access) -> str | None:
    """A resource `after` allows that neither `before` nor `held` allows; None: no such gain."""
    if not after.allow:
        return None

    def wanted(flags: tuple[bool, ...]) -> bool:
        allow_after, deny_after, allow_before, deny_before, allow_held, deny_held = flags
        return (
            _holds(after, allow_after, deny_after)
            and not _holds(before, allow_before, deny_before)
            and not _holds(held, allow_held, deny_held)
        )

    groups = [after.allow, after.deny, before.allow, before.deny, held.allow, held.deny]
    return first_resource(function, groups, wanted)


__all__ = [
    "Access",
    "EXACT_FUNCTIONS",
    "Undecided",
    "exact",
    "first_resource",
    "gained",
    "overlap",
    "pattern_tokens",
    "uncovered",
]
