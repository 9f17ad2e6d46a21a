"""Policy CSV files: reading (with `file:line` errors) and the canonical export.

A policy file holds one Casbin rule per line, in Casbin's line form:

    # comment lines and blank lines are skipped
    g, alice, admin, acme
    p, viewer, *, /projects/*, read, allow
    # rolegate: managed-by api
    g, bob, editor, acme

Rules are managed by the files, except below a `# rolegate: managed-by api` line (until a
`# rolegate: managed-by files` line or the end of the file): those are seeds, added once as
API-managed rules (or, in an export made with `--include-api`, a copy of the API's rules).

We read with a real CSV reader (quotes honoured, values stripped) and refuse every value that
Casbin's own tokenizer (`casbin.persist.adapter.load_policy_line`) would read differently: it does
not honour quotes, does not split on commas inside `()`/`[]`, aborts on an unmatched `)` and keeps
a trailing `# comment` inside the last value. `scan_*` collect every problem (for linters);
`read_*` raise PolicyError for the first one, in file order.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import PolicyError
from ..rules import TEMPLATE_DOMAIN, Rule, format_rule, rule_domain, sort_key
from .db import MANAGED_BY_API, MANAGED_BY_FILES
from .policies import _control_char, rule_problem, validate_rule

__all__ = [
    "MAX_POLICY_FILE_BYTES",
    "GLOBAL_MEMBERSHIP_MARKER",
    "HELD_ELSEWHERE_MARKER",
    "MANAGED_BY_MARKER",
    "ROLES_FILE",
    "Location",
    "PolicyProblem",
    "SourcedRule",
    "format_rule_line",
    "held_elsewhere",
    "managed_by_marker",
    "read_policy_dir",
    "read_policy_file",
    "role_names",
    "scan_policy_dir",
    "scan_policy_file",
    "write_policy_dir",
]

MAX_POLICY_FILE_BYTES = 10 * 1024 * 1024
GLOBAL_MEMBERSHIP_MARKER = "# rolegate: global-membership"
HELD_ELSEWHERE_MARKER = "# rolegate: held-elsewhere"  # rolegate.policy.lint reads it
MANAGED_BY_MARKER = "# rolegate: managed-by {owner}"
_MANAGED_BY = re.compile(r"#\s*rolegate:\s*managed-by\s+(files|api)")
ROLES_FILE = "roles.csv"  # rules of the template domain `*`
EXCLUDED_DIRS = frozenset({"tests"})
_SAFE_ORG_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
)


@dataclass(frozen=True)
class Location:
    path: str
    line: int
    column: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class SourcedRule:
    rule: Rule
    location: Location
    managed_by: str = MANAGED_BY_FILES  # "api": below a `# rolegate: managed-by api` line


def managed_by_marker(line: str) -> str | None:
    """`files` / `api` for a `# rolegate: managed-by <owner>` line, else None."""
    match = _MANAGED_BY.fullmatch(line.strip().lower())
    return match.group(1) if match else None


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong in a policy file. `code` is stable (for linters), `message` says the fix."""

    location: Location
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"

    def to_error(self) -> PolicyError:
        error = PolicyError(self.message, location=str(self.location))
        error.problem = self  # type: ignore[attr-defined]
        error.problem_code = self.code  # type: ignore[attr-defined]
        return error


def format_rule_line(rule: Rule) -> str:
    """Casbin's line form with its `, ` spacing: `p, editor, *, /projects/*, update, allow`."""
    return format_rule(tuple(rule))


# --------------------------------------------------------------------------- reading


def _field_starts(line: str) -> list[int]:
    """0-based offsets where each CSV field's text starts (leading spaces skipped)."""
    starts = []
    position = 0
    in_quotes = False
    field_start = 0
    for position, char in enumerate(line):
        if char == '"':
            in_quotes = not in_quotes
        elif char == "," and not in_quotes:
            starts.append(field_start)
            field_start = position + 1
    starts.append(field_start)
    result = []
    for start in starts:
        while start < len(line) and line[start] in " \t":
            start += 1
        result.append(start)
    return result


def _parse_line(line: str, path: str, number: int) -> SourcedRule | PolicyProblem:
    def problem(code: str, message: str, column: int = 1) -> PolicyProblem:
        return PolicyProblem(Location(path, number, column), code, message)

    # Control characters first: str.strip() and the csv module would silently eat some of them.
    char = _control_char(line.replace("\t", " "))
    if char is not None:
        return problem(
            "control-char",
            f"control or invisible character U+{ord(char):04X}: remove it (save the file as "
            "plain text)",
            line.index(char) + 1,
        )
    try:
        fields = next(csv.reader([line], skipinitialspace=True, strict=True))
    except csv.Error as exc:
        return problem(
            "syntax",
            f'malformed quoting ({exc}): quote a whole value as "..." or, better, use no quotes',
        )
    values = tuple(value.strip() for value in fields)
    found = rule_problem(values)
    if found is not None:
        code, message, index = found
        starts = _field_starts(line)
        column = starts[index] + 1 if index < len(starts) else 1
        return problem(code, message, column)
    return SourcedRule(values, Location(path, number))


def _line_of(data: bytes, offset: int) -> tuple[int, int]:
    """1-based (line, byte column) of byte `offset`, counting \r\n, \r and \n as line ends."""
    before = data[:offset].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    line_start = before.rfind(b"\n") + 1
    return before.count(b"\n") + 1, len(before) - line_start + 1


def _read_bytes(path: Path, shown: str) -> bytes | PolicyProblem:
    limit = MAX_POLICY_FILE_BYTES
    try:
        size = path.stat().st_size
        if size <= limit:
            with path.open("rb") as handle:
                data = handle.read(limit + 1)
            size = len(data)
    except FileNotFoundError:
        return PolicyProblem(Location(shown, 1), "unreadable", "file not found")
    except OSError as exc:
        return PolicyProblem(
            Location(shown, 1), "unreadable", f"cannot read the file: {exc.strerror or exc}"
        )
    if size > limit:
        return PolicyProblem(
            Location(shown, 1),
            "too-large",
            f"the file is {size} bytes, more than the {limit}-byte limit: split it per org",
        )
    return data


def scan_policy_file(
    path: Path, *, display: str | None = None
) -> tuple[list[SourcedRule], list[PolicyProblem]]:
    """Every rule of one file and every problem found in it (file-level problems stop the scan)."""
    path = Path(path)
    shown = display if display is not None else str(path)
    data = _read_bytes(path, shown)
    if isinstance(data, PolicyProblem):
        return [], [data]
    nul = data.find(b"\x00")
    if nul >= 0:
        at_line, column = _line_of(data, nul)
        return [], [
            PolicyProblem(
                Location(shown, at_line, column),
                "binary",
                "the file contains NUL bytes: it is binary (or UTF-16), not a policy CSV file; "
                "save it as UTF-8 text",
            )
        ]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        at_line, column = _line_of(data, exc.start)
        return [], [
            PolicyProblem(
                Location(shown, at_line, column),
                "encoding",
                f"not valid UTF-8 (byte 0x{data[exc.start]:02X} at column {column}): "
                "save the file as UTF-8",
            )
        ]
    rules: list[SourcedRule] = []
    problems: list[PolicyProblem] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    owner = MANAGED_BY_FILES
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            owner = managed_by_marker(stripped) or owner
            continue
        parsed = _parse_line(line, shown, number)
        if isinstance(parsed, PolicyProblem):
            problems.append(parsed)
        elif owner != MANAGED_BY_FILES:
            rules.append(replace(parsed, managed_by=owner))
        else:
            rules.append(parsed)
    return rules, problems


def read_policy_file(path: Path) -> list[SourcedRule]:
    """The rules of one file; PolicyError (`file:line: what is wrong`) for the first problem."""
    rules, problems = scan_policy_file(Path(path))
    if problems:
        raise problems[0].to_error()
    return rules


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # dangling link loops
        return False


def _policy_files(directory: Path) -> tuple[list[Path], list[PolicyProblem]]:
    """`*.csv` under `directory` (not in `tests/` or hidden directories), sorted by path."""
    root = directory.resolve()
    files: list[Path] = []
    problems: list[PolicyProblem] = []
    for current, dirnames, filenames in os.walk(directory, followlinks=False):
        current_path = Path(current)
        kept = []
        for name in sorted(dirnames):
            if name in EXCLUDED_DIRS or name.startswith("."):
                continue
            child = current_path / name
            if child.is_symlink():
                # Never followed; one pointing outside is reported, one inside is read directly.
                if not _inside(child, root):
                    problems.append(
                        PolicyProblem(
                            Location(str(child), 1),
                            "symlink-outside",
                            f"symbolic link to {os.readlink(child)!r}, outside {directory}: "
                            "copy the files into the policy directory instead",
                        )
                    )
                continue
            kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            if not name.endswith(".csv"):
                continue
            path = current_path / name
            if path.is_symlink() and not _inside(path, root):
                problems.append(
                    PolicyProblem(
                        Location(str(path), 1),
                        "symlink-outside",
                        f"symbolic link to {os.readlink(path)!r}, outside {directory}: "
                        "copy the file into the policy directory instead",
                    )
                )
                continue
            files.append(path)
    files.sort(key=lambda path: path.relative_to(directory).as_posix())
    return files, problems


def scan_policy_dir(directory: Path) -> tuple[list[SourcedRule], list[PolicyProblem]]:
    """Every rule and every problem of the policy files under `directory`, in path order.

    Raises PolicyError only when `directory` itself is missing or not a directory.
    """
    directory = Path(directory)
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise PolicyError(
            f"the policy directory {directory} {what}: create it or set ROLEGATE_POLICY_DIR",
            location=str(directory),
        )
    files, problems = _policy_files(directory)
    rules: list[SourcedRule] = []
    for path in files:
        file_rules, file_problems = scan_policy_file(path)
        rules.extend(file_rules)
        problems.extend(file_problems)
    problems.sort(
        key=lambda problem: (
            Path(problem.location.path).relative_to(directory).as_posix(),
            problem.location.line,
        )
    )
    return rules, problems


def read_policy_dir(directory: Path) -> list[SourcedRule]:
    """The rules of every policy file under `directory`; PolicyError for the first problem."""
    rules, problems = scan_policy_dir(directory)
    if problems:
        raise problems[0].to_error()
    return rules


# --------------------------------------------------------------------------- writing


def org_file_name(org: str) -> str:
    """`roles.csv` for the template domain, `<org>.csv` otherwise; PolicyError when unsafe."""
    if org == TEMPLATE_DOMAIN:
        return ROLES_FILE
    if (
        not _SAFE_ORG_FILE_NAME.fullmatch(org)
        or org.lower() == ROLES_FILE.removesuffix(".csv")
        or org.lower().split(".")[0] in _WINDOWS_RESERVED
    ):
        raise PolicyError(
            f"cannot export org {org!r} to a file: an org file name uses letters, digits, "
            "`.`, `_` and `-` (starting with a letter or digit, at most 100 characters) and "
            "may not be `roles` (the template file); rename the org"
        )
    return f"{org}.csv"


def _is_role_name(rule: Rule, roles: set[str]) -> bool:
    return rule[1] in roles


def _lines(rules: list[Rule], roles: set[str]) -> list[str]:
    """g lines, a blank line, p lines; a user's `*` membership gets its marker line above."""
    groups = []
    for ptype in ("g", "p"):
        lines = []
        for rule in rules:
            if rule[0] != ptype:
                continue
            if ptype == "g" and rule[3] == TEMPLATE_DOMAIN and not _is_role_name(rule, roles):
                lines.append(GLOBAL_MEMBERSHIP_MARKER)
            lines.append(format_rule_line(rule))
        if lines:
            groups.append("\n".join(lines))
    return groups


def held_elsewhere(rules: Iterable[Rule], owner_role: str | None = "owner") -> list[str]:
    """Roles granted permissions that no `g` rule names (held via API keys, tokens, operators)."""
    rules = list(rules)
    linked = {name for rule in rules if rule[0] == "g" for name in rule[1:3]}
    granted = {rule[1] for rule in rules if rule[0] == "p"}
    return sorted(granted - linked - {owner_role})


def _render(
    files_rules: list[Rule], api_rules: list[Rule], roles: set[str], held: Sequence[str] = ()
) -> str:
    parts = [f"{HELD_ELSEWHERE_MARKER} {', '.join(held)}"] if held else []
    parts += _lines(files_rules, roles)
    if api_rules:
        parts.append(
            "\n".join(
                [
                    "# Managed by the admin API (exported with --include-api): importing adds",
                    "# these as API-managed rules when the store never held them.",
                    MANAGED_BY_MARKER.format(owner=MANAGED_BY_API),
                    *_lines(api_rules, roles),
                ]
            )
        )
    return "\n\n".join(parts) + "\n"


def role_names(rules: Iterable[Rule], owner_role: str | None = "owner") -> set[str]:
    """Names used as roles: every `g` rule's role and every `p` rule's subject."""
    names = {owner_role} if owner_role else set()
    for rule in rules:
        names.add(rule[2] if rule[0] == "g" else rule[1])
    return names


def write_policy_dir(
    directory: Path, rules: Iterable[Rule], api_rules: Iterable[Rule] = ()
) -> list[Path]:
    """Canonical export: `roles.csv` for `*` and `<org>.csv` per org, sorted, g lines first.

    Byte-identical for the same rule sets. A user's membership in `*` gets the
    `# rolegate: global-membership` marker; `api_rules` go in a `# rolegate: managed-by api`
    section at the end of their org's file. Every rule is validated and every file name checked
    before anything is written; files are replaced atomically. Files of orgs not in the rules
    are left alone (remove them yourself when they should go). Returns the written paths.
    """
    directory = Path(directory)
    by_org: dict[str, tuple[set[Rule], set[Rule]]] = {}
    api_rules = list(api_rules)
    rules = list(rules)
    for owned, items in ((0, rules), (1, api_rules)):
        for rule in items:
            rule = validate_rule(rule)
            by_org.setdefault(rule_domain(rule), (set(), set()))[owned].add(rule)
    roles = role_names([*rules, *api_rules])
    held = held_elsewhere([*rules, *api_rules])
    names = {org: org_file_name(org) for org in by_org}
    folded: dict[str, str] = {}
    for org, name in names.items():
        other = folded.setdefault(name.lower(), org)
        if other != org:
            raise PolicyError(
                f"orgs {other!r} and {org!r} differ only in case: their files would collide on "
                "case-insensitive file systems"
            )
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for org in sorted(by_org, key=lambda org: (org != TEMPLATE_DOMAIN, org)):
        path = directory / names[org]
        files_rules, api_only = (sorted(group, key=sort_key) for group in by_org[org])
        marked = [name for name in held if any(r[0] == "p" and r[1] == name for r in files_rules)]
        content = _render(files_rules, api_only, roles, marked).encode("utf-8")
        temporary = directory / f".{names[org]}.tmp"
        temporary.write_bytes(content)
        os.replace(temporary, path)
        written.append(path)
    return written
