"""`rolegate fmt`: canonical spacing and order inside policy files, so that diffs stay minimal.

What changes: rule lines get Casbin's `, ` spacing and no quotes; each run of consecutive rule
lines (a block between blank or comment lines) is sorted in canonical order (g before p, then by
values) and exact duplicates inside a run are dropped; trailing spaces go; runs of blank lines
collapse to one; the file is UTF-8 without BOM with `\\n` line ends and one final newline.

What stays: which rules live in which file, comment lines and where blocks start. A rule directly
below a `# rolegate: ...` directive comment stays directly below it (it is never sorted away).
A file with any problem the reader reports is left untouched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..rules import Rule, sort_key
from ..store.csvfiles import (
    PolicyProblem,
    _policy_files,
    format_rule_line,
    scan_policy_dir,
    scan_policy_file,
)

DIRECTIVE_PREFIX = "# rolegate:"


def format_policy_text(text: str, rules_by_line: dict[int, Rule]) -> str:
    """The canonical text of a file whose rule lines (1-based line -> rule) already parsed."""
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    output: list[str] = []
    run: list[Rule] = []
    pinned = False

    def flush() -> None:
        output.extend(format_rule_line(rule) for rule in sorted(dict.fromkeys(run), key=sort_key))
        run.clear()

    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip()
        rule = rules_by_line.get(number)
        if rule is None:
            flush()
            stripped = line.strip()
            if not stripped:
                if output and output[-1] != "":
                    output.append("")
            else:
                output.append(stripped if stripped.startswith("#") else line)
            pinned = stripped.lower().startswith(DIRECTIVE_PREFIX)
            continue
        run.append(rule)
        if pinned:
            flush()
            pinned = False
    flush()
    while output and output[-1] == "":
        output.pop()
    return "\n".join(output) + "\n" if output else ""


@dataclass
class FormatResult:
    """Files whose content changes (or changed), and problems that kept files untouched."""

    changed: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    problems: list[PolicyProblem] = field(default_factory=list)


def format_policy_file(path: Path) -> tuple[bytes | None, bytes | None, list[PolicyProblem]]:
    """(current bytes, canonical bytes, problems); bytes are None when the file has problems."""
    rules, problems = scan_policy_file(path)
    if problems:
        return None, None, problems
    data = path.read_bytes()
    by_line = {item.location.line: item.rule for item in rules}
    text = data.decode("utf-8-sig")
    return data, format_policy_text(text, by_line).encode("utf-8"), []


def format_policy_dir(directory: Path | str, *, check: bool = False) -> FormatResult:
    """Format every policy file under `directory`; with `check`, only report what would change."""
    directory = Path(directory)
    scan_policy_dir(directory)  # PolicyError when the directory is missing
    files, problems = _policy_files(directory)
    result = FormatResult(problems=list(problems))
    for path in files:
        current, canonical, file_problems = format_policy_file(path)
        if file_problems:
            result.problems.extend(file_problems)
            continue
        if current == canonical:
            result.unchanged.append(path)
            continue
        result.changed.append(path)
        if not check and canonical is not None:
            _replace(path, canonical)
    return result


def _replace(path: Path, content: bytes) -> None:
    """Write through a temporary file in the same directory, then rename (atomic)."""
    target = path.resolve()
    temporary = target.with_name(f".{target.name}.fmt.tmp")
    temporary.write_bytes(content)
    try:
        os.chmod(temporary, target.stat().st_mode & 0o7777)
        os.replace(temporary, target)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
