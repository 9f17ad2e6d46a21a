"""Policy test suites: YAML files of expected decisions, run against a policy (`rolegate test`).

    # policies/tests/seed.yaml
    name: seed scenario            # optional
    cases:
      - name: admins delete projects   # optional
        subject: alice
        org: acme
        resource: /projects/42
        action: delete
        owner: alice                   # optional: the resource's owner
        expect: allow                  # allow | deny

Every value is a string (quote YAML's `yes`/`no`/numbers); unknown keys are errors, so a typo
never silently drops an expectation.

Reports: a table (pytest-like text), JSON, CSV and JUnit XML (`RENDERERS`). Coverage lists
the rules no case exercised: a `p` rule is exercised when it decided a case, a role link when the
deciding role path followed it (both as the engine reports them, `Decision.rule`/`.path`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import yaml

from ..engine import CheckRequest, Decision, Engine, Snapshot, reads
from ..errors import PolicyError
from ..rules import Rule, format_rule

SUITE_SUFFIXES = (".yaml", ".yml")
MAX_SUITE_BYTES = 10 * 1024 * 1024
REQUIRED = ("subject", "org", "resource", "action", "expect")
OPTIONAL = ("name", "owner")
EXPECTATIONS = ("allow", "deny")
_LINE = "__line__"


@dataclass(frozen=True)
class SuiteCase:
    """One expected decision, with where it is written."""

    path: str
    line: int
    index: int
    subject: str
    org: str
    resource: str
    action: str
    expect: str
    owner: str = ""
    name: str = ""

    @property
    def id(self) -> str:
        return f"{self.path}::{self.name or f'case {self.index}'}"

    def request(self) -> CheckRequest:
        return CheckRequest(self.subject, self.org, self.resource, self.action, self.owner)

    def describe(self) -> str:
        owner = f" (owner {self.owner})" if self.owner else ""
        return f"{self.subject} {self.action} {self.resource} in {self.org}{owner}"


@dataclass(frozen=True)
class SuiteResult:
    case: SuiteCase
    decision: Decision

    @property
    def actual(self) -> str:
        return "allow" if self.decision.allowed else "deny"

    @property
    def passed(self) -> bool:
        return self.actual == self.case.expect

    def explain(self) -> list[str]:
        """The decision's explanation, as lines."""
        reason = self.decision.reason
        lines = [reason["summary"]]
        if reason.get("path"):
            lines.append(f"role path: {reason['path']}")
        if reason.get("error"):
            lines.append(f"error: {reason['error']}")
        return lines


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping (for file:line errors)."""


def _mapping_with_line(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = loader.construct_mapping(node, deep=True)
    mapping[_LINE] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


def suite_files(path: Path) -> list[Path]:
    """The suite files at `path` (a file, or every *.yaml/*.yml below a directory)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise PolicyError(f"no policy test suite at {path}: give a YAML file or a directory")
    return sorted(
        (item for item in path.rglob("*") if item.suffix in SUITE_SUFFIXES and item.is_file()),
        key=lambda item: item.as_posix(),
    )


def _read_text(path: Path) -> str:
    size = path.stat().st_size
    if size > MAX_SUITE_BYTES:
        raise PolicyError(
            f"the suite is {size} bytes, more than the {MAX_SUITE_BYTES}-byte limit: split it",
            location=f"{path}:1",
        )
    data = path.read_bytes()
    if b"\x00" in data:
        raise PolicyError("binary file, not a YAML suite", location=f"{path}:1")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PolicyError(
            "not valid UTF-8: save the suite as UTF-8", location=f"{path}:{line}"
        ) from None


def load_suite(path: Path) -> list[SuiteCase]:
    """The cases of one suite file; PolicyError with `file:line` when the file is not valid."""
    shown = str(path)
    try:
        document = yaml.load(_read_text(path), Loader=_LineLoader)  # noqa: S506 (safe subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"invalid YAML: {problem}", location=f"{shown}:{line}") from None
    if not isinstance(document, dict) or not isinstance(document.get("cases"), list):
        raise PolicyError(
            "a suite is a mapping with a `cases` list (and an optional `name`)",
            location=f"{shown}:1",
        )
    unknown = sorted(set(document) - {"name", "cases", _LINE})
    if unknown:
        raise PolicyError(
            f"unknown key {unknown[0]!r} (expected name, cases)", location=f"{shown}:1"
        )
    return [_case(shown, index, item) for index, item in enumerate(document["cases"], start=1)]


def _case(shown: str, index: int, item) -> SuiteCase:
    if not isinstance(item, dict):
        raise PolicyError(f"case {index} is not a mapping", location=f"{shown}:1")
    line = item.pop(_LINE)
    where = f"{shown}:{line}"
    unknown = sorted(set(item) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise PolicyError(
            f"case {index}: unknown key {unknown[0]!r} (expected {', '.join(REQUIRED + OPTIONAL)})",
            location=where,
        )
    missing = [key for key in REQUIRED if key not in item]
    if missing:
        raise PolicyError(f"case {index}: {missing[0]} is required", location=where)
    for key, value in item.items():
        if not isinstance(value, str) or (not value and key != "owner"):
            raise PolicyError(
                f"case {index}: {key} must be a non-empty string, got {value!r} "
                "(quote values YAML reads as booleans or numbers)",
                location=where,
            )
    if item["expect"] not in EXPECTATIONS:
        raise PolicyError(
            f"case {index}: expect is {item['expect']!r}: use allow or deny", location=where
        )
    return SuiteCase(path=shown, line=line, index=index, **item)


def load_suites(path: Path) -> list[SuiteCase]:
    """Every case of every suite file at `path`, in file order."""
    files = suite_files(path)
    if not files:
        raise PolicyError(f"no *.yaml suite files under {path}")
    return [case for file in files for case in load_suite(file)]


def select_cases(cases: Sequence[SuiteCase], pattern: str | None) -> list[SuiteCase]:
    """The cases whose id (`file::name`) the regular expression `pattern` finds (all: None).

    PolicyError when the expression is invalid or selects nothing (a filter typo must not pass).
    """
    if pattern is None:
        return list(cases)
    try:
        expression = re.compile(pattern)
    except re.error as exc:
        raise PolicyError(f"--run {pattern!r}: not a regular expression ({exc})") from None
    selected = [case for case in cases if expression.search(case.id)]
    if not selected:
        raise PolicyError(f"--run {pattern!r}: no test case name matches")
    return selected


def run_suites(cases: Sequence[SuiteCase], engine: Engine) -> list[SuiteResult]:
    """Decide every case against the engine's current snapshot."""
    snapshot = engine.snapshot
    return [SuiteResult(case, engine.check(case.request(), snapshot)) for case in cases]


@dataclass(frozen=True)
class Coverage:
    """Which rules of the tested policy the cases exercised, and which they did not."""

    total: int
    missed: tuple[Rule, ...]
    locations: Mapping[Rule, str] = field(default_factory=dict)

    @property
    def exercised(self) -> int:
        return self.total - len(self.missed)

    @property
    def percent(self) -> float:
        return 100.0 if not self.total else round(100 * self.exercised / self.total, 1)

    def where(self, rule: Rule) -> str:
        return self.locations.get(rule, "")

    def to_dict(self) -> dict:
        return {
            "rules": self.total,
            "exercised": self.exercised,
            "percent": self.percent,
            "not_exercised": [
                {"rule": format_rule(rule), "location": self.where(rule) or None}
                for rule in self.missed
            ],
        }


def exercised_rules(snapshot: Snapshot, results: Iterable[SuiteResult]) -> set[Rule]:
    """The deciding rule of every case and the role links of its deciding path."""
    used: set[Rule] = set()
    for result in results:
        decision = result.decision
        if decision.rule is not None:
            used.add(decision.rule)
            links = reads.path_links(snapshot, result.case.org, decision.path)
            used.update(reads.link_rule(link) for link in links)
    return used


def coverage_of(
    snapshot: Snapshot,
    results: Iterable[SuiteResult],
    locations: Mapping[Rule, str] | None = None,
) -> Coverage:
    """Coverage of every `p` rule and role link of `snapshot` by `results`; `locations`: the
    `file:line` of each rule, when it came from policy files."""
    locations = locations or {}
    order = {rule: position for position, rule in enumerate(locations)}
    rules = [
        rule
        for rule in snapshot.rules()
        if reads.grant_of(rule) is not None or reads.link_of(rule) is not None
    ]
    used = exercised_rules(snapshot, results)
    missed = tuple(
        sorted(
            (rule for rule in set(rules) if rule not in used),
            key=lambda rule: (order.get(rule, len(order)), rule),
        )
    )
    return Coverage(len(set(rules)), missed, dict(locations))


def render_results(
    results: Iterable[SuiteResult], coverage: Coverage | None = None
) -> tuple[str, bool]:
    """pytest-like report (dots, failures with explanations, `N passed, N failed`); ok flag."""
    results = list(results)
    dots = "".join("." if result.passed else "F" for result in results)
    failures = [result for result in results if not result.passed]
    out = [dots]
    if failures:
        out += ["", "FAILURES"]
        for result in failures:
            case = result.case
            out += [
                f"_____ {case.id} ({case.path}:{case.line}) _____",
                f"  {case.describe()}: expected {case.expect}, got {result.actual}",
            ]
            out += [f"    {line}" for line in result.explain()]
    if coverage is not None:
        out += ["", *_coverage_lines(coverage)]
    passed = len(results) - len(failures)
    out += ["", f"{passed} passed, {len(failures)} failed"]
    return "\n".join(out) + "\n", not failures


def _coverage_lines(coverage: Coverage) -> list[str]:
    lines = [
        f"coverage: {coverage.exercised} of {coverage.total} rules exercised ({coverage.percent}%)"
    ]
    if coverage.missed:
        lines.append("not exercised by any case:")
        for rule in coverage.missed:
            where = coverage.where(rule)
            lines.append(f"  {where + ': ' if where else ''}{format_rule(rule)}")
    return lines


def _case_dict(result: SuiteResult) -> dict:
    case, reason = result.case, result.decision.reason
    return {
        "id": case.id,
        "name": case.name or None,
        "file": case.path,
        "line": case.line,
        "subject": case.subject,
        "org": case.org,
        "resource": case.resource,
        "action": case.action,
        "owner": case.owner or None,
        "expect": case.expect,
        "actual": result.actual,
        "passed": result.passed,
        "reason": reason["summary"],
        "rule": reason.get("rule"),
        "path": reason.get("path"),
        "error": reason.get("error"),
    }


def render_json(
    results: Iterable[SuiteResult], coverage: Coverage | None = None
) -> tuple[str, bool]:
    """One JSON document: counts, every case with its decision, and coverage when asked."""
    results = list(results)
    failed = sum(not result.passed for result in results)
    document: dict = {
        "passed": len(results) - failed,
        "failed": failed,
        "cases": [_case_dict(result) for result in results],
    }
    if coverage is not None:
        document["coverage"] = coverage.to_dict()
    return json.dumps(document, indent=2) + "\n", not failed


def render_junit(
    results: Iterable[SuiteResult], coverage: Coverage | None = None
) -> tuple[str, bool]:
    """JUnit XML (one `testsuite` per suite file) for CI test reports."""
    results = list(results)
    by_file: dict[str, list[SuiteResult]] = {}
    for result in results:
        by_file.setdefault(result.case.path, []).append(result)
    failed = sum(not result.passed for result in results)
    root = ElementTree.Element(
        "testsuites", name="rolegate test", tests=str(len(results)), failures=str(failed)
    )
    for path, items in by_file.items():
        suite = ElementTree.SubElement(
            root,
            "testsuite",
            name=path,
            tests=str(len(items)),
            failures=str(sum(not item.passed for item in items)),
            errors="0",
        )
        for item in items:
            case = item.case
            element = ElementTree.SubElement(
                suite,
                "testcase",
                classname=path,
                name=case.name or f"case {case.index}",
                file=path,
                line=str(case.line),
            )
            if not item.passed:
                failure = ElementTree.SubElement(
                    element,
                    "failure",
                    message=f"{case.describe()}: expected {case.expect}, got {item.actual}",
                    type="unexpected_decision",
                )
                failure.text = "\n".join(item.explain())
    if coverage is not None:
        suite = ElementTree.SubElement(
            root, "testsuite", name="rolegate coverage", tests="0", failures="0", errors="0"
        )
        properties = ElementTree.SubElement(suite, "properties")
        for name, value in (
            ("rules", coverage.total),
            ("exercised", coverage.exercised),
            ("percent", coverage.percent),
        ):
            ElementTree.SubElement(properties, "property", name=name, value=str(value))
        ElementTree.SubElement(suite, "system-out").text = "\n".join(_coverage_lines(coverage))
    ElementTree.indent(root)
    text = ElementTree.tostring(root, encoding="unicode", xml_declaration=True)
    return text + "\n", not failed


CSV_COLUMNS = (
    "id", "file", "line", "subject", "org", "resource", "action", "owner", "expect", "actual",
    "passed", "rule", "path",
)  # fmt: skip


def render_csv(
    results: Iterable[SuiteResult], coverage: Coverage | None = None
) -> tuple[str, bool]:
    """One row per case (coverage is a list of rules, not cases: table, json or junit)."""
    if coverage is not None:
        raise PolicyError("--coverage is reported in the table, json and junit formats, not csv")
    results = list(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for result in results:
        row = _case_dict(result)
        writer.writerow("" if row[name] is None else str(row[name]) for name in CSV_COLUMNS)
    return buffer.getvalue(), all(result.passed for result in results)


RENDERERS = {
    "table": render_results,
    "json": render_json,
    "csv": render_csv,
    "junit": render_junit,
}
