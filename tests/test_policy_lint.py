"""`rolegate lint`: every check, its location and severity, output formats and bad input."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from rolegate.cli import main
from rolegate.config import REPO_ROOT
from rolegate.engine.snapshot import MAX_LINKS_FOLLOWED
from rolegate.policy.lint import GLOBAL_MEMBERSHIP_MARKER, lint_policy_dir
from rolegate.store import csvfiles

SAMPLE = REPO_ROOT / "policies"
LINE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<code>[a-z-]+): .+$")


def write(directory: Path, files: dict[str, str | bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = directory / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return directory


def found(directory: Path) -> set[tuple[str, int, str, str]]:
    """(file name, line, code, severity) of every issue."""
    report = lint_policy_dir(directory)
    return {(Path(i.path).name, i.line, i.code, i.severity) for i in report.issues}


def codes(directory: Path) -> set[str]:
    return {code for _, _, code, _ in found(directory)}


def test_sample_policies_have_no_errors(env):
    result = CliRunner().invoke(main, ["lint", str(SAMPLE)])
    assert result.exit_code == 0, result.output
    assert re.search(r"^0 errors, \d+ warnings? in \d+ rules$", result.output, re.M)
    report = lint_policy_dir(SAMPLE)
    assert report.ok and len(report.rules) >= 25


@pytest.mark.parametrize(
    ("line", "code", "column"),
    [
        ("p, a, acme, /x, read", "field-count", 1),
        ("q, a, acme, /x, read, allow", "unknown-ptype", 1),
        ("p, a, acme, , read, allow", "empty-value", 13),
        ("p, a, acme, /x, read, permit", "bad-effect", 23),
        ('p, a, acme, "/x,y", read, allow', "casbin-misread", 13),
        ("p, a, acme, /x, read, allow # trailing", "casbin-misread", 23),
        ('p, a, acme, "/x, read, allow', "syntax", 1),
    ],
)
def test_reader_problems_have_file_line_column(tmp_path, line, code, column):
    directory = write(tmp_path / "p", {"acme.csv": f"# comment\n{line}\n"})
    [issue] = lint_policy_dir(directory).issues
    assert (issue.line, issue.code, issue.column, issue.severity) == (2, code, column, "error")


def test_resource_pattern_checks(tmp_path):
    directory = write(
        tmp_path / "p",
        {
            "roles.csv": "g, alice, viewer, acme\n"
            "p, viewer, *, /projects*, read, allow\n"
            "p, viewer, *, /files/a.pdf, read, allow\n"
            "p, viewer, *, projects/*, read, allow\n"
            "p, viewer, *, /**, read, allow\n"
        },
    )
    assert found(directory) >= {
        ("roles.csv", 2, "pattern-star", "error"),
        ("roles.csv", 3, "pattern-regex", "error"),
        ("roles.csv", 4, "pattern-relative", "warning"),
        ("roles.csv", 5, "pattern-invalid", "error"),
    }
    issue = next(i for i in lint_policy_dir(directory).issues if i.code == "pattern-star")
    assert issue.column == 15  # the resource value


def test_regex_patterns_are_errors_unless_allowed(tmp_path):
    directory = write(
        tmp_path / "p",
        {
            "roles.csv": "g, alice, viewer, acme\n"
            "p, viewer, acme, /finance/x|/payroll, read, allow\n"
            "p, viewer, acme, /projects/.*.*.*.*!, read, allow\n"
            "p, viewer, acme, /files/\\d+, read, allow\n"
            "p, viewer, acme, /projects/:id/*, read, allow\n"
        },
    )
    assert {(i.line, i.code, i.severity) for i in lint_policy_dir(directory).issues} >= {
        (2, "pattern-regex", "error"),
        (3, "pattern-star", "error"),
        (4, "pattern-regex", "error"),
    }
    allowed = {
        (i.line, i.code, i.severity)
        for i in lint_policy_dir(directory, allow_regex=True).issues
        if i.code.startswith("pattern")
    }
    assert allowed == {
        (2, "pattern-regex", "warning"),
        (3, "pattern-star", "warning"),  # the API accepts it too: one rule for both
        (3, "pattern-regex", "warning"),
        (4, "pattern-unsupported", "error"),  # `\\d` is Unicode in Python's re, ASCII in RE2
    }


def test_role_cycle_is_an_error_with_the_cycle(tmp_path):
    directory = write(
        tmp_path / "p",
        {"roles.csv": "g, admin, editor, *\ng, editor, member, *\ng, member, admin, *\n"},
    )
    issues = [i for i in lint_policy_dir(directory).issues if i.code == "role-cycle"]
    assert len(issues) == 1
    assert issues[0].severity == "error" and issues[0].line == 1
    assert "admin -> editor -> member -> admin" in issues[0].message


def test_org_local_cycle_through_a_template_link(tmp_path):
    directory = write(
        tmp_path / "p",
        {"roles.csv": "g, editor, member, *\n", "acme.csv": "g, member, editor, acme\n"},
    )
    issue = next(i for i in lint_policy_dir(directory).issues if i.code == "role-cycle")
    assert "org 'acme'" in issue.message


def chain(length: int, domain: str) -> str:
    return "".join(f"g, r{i}, r{i + 1}, {domain}\n" for i in range(length))


def test_role_chain_deeper_than_casbin_follows(tmp_path):
    # alice -> r0 is one link, then MAX links among roles: the last role is one link too far.
    deep = write(
        tmp_path / "deep",
        {
            "acme.csv": f"g, alice, r0, acme\n{chain(MAX_LINKS_FOLLOWED, 'acme')}"
            f"p, r{MAX_LINKS_FOLLOWED}, acme, /x, read, allow\n"
        },
    )
    issues = [i for i in lint_policy_dir(deep).issues if i.code == "role-depth"]
    assert [(i.line, i.severity) for i in issues] == [(MAX_LINKS_FOLLOWED + 1, "error")]
    assert (
        f"r{MAX_LINKS_FOLLOWED}` is {MAX_LINKS_FOLLOWED + 1} links from `alice`"
        in issues[0].message
    )
    ok = write(
        tmp_path / "ok",
        {
            "acme.csv": f"g, alice, r0, acme\n{chain(MAX_LINKS_FOLLOWED - 1, 'acme')}"
            f"p, r{MAX_LINKS_FOLLOWED - 1}, acme, /x, read, allow\n"
        },
    )
    assert "role-depth" not in codes(ok)


def test_template_chain_counts_the_membership_link(tmp_path):
    directory = write(
        tmp_path / "p",
        {
            "roles.csv": chain(MAX_LINKS_FOLLOWED, "*")
            + f"p, r{MAX_LINKS_FOLLOWED}, *, /x, read, allow\n"
        },
    )
    assert ("roles.csv", MAX_LINKS_FOLLOWED, "role-depth", "error") in found(directory)


def test_duplicates_across_files_are_warnings(tmp_path):
    directory = write(
        tmp_path / "p",
        {
            "a.csv": "g, alice, viewer, acme\np, viewer, acme, /x, read, allow\n",
            "b.csv": "p, viewer,acme, /x ,read, allow\n",
        },
    )
    issue = next(i for i in lint_policy_dir(directory).issues if i.code == "duplicate-rule")
    assert (Path(issue.path).name, issue.line, issue.severity) == ("b.csv", 1, "warning")
    assert "a.csv:2" in issue.message


def test_contradicted_allow_through_inherited_role(tmp_path):
    directory = write(
        tmp_path / "p",
        {
            "roles.csv": "g, editor, viewer, *\n"
            "p, viewer, *, /docs/*, read, deny\n"
            "p, editor, *, /docs/:id, read, allow\n"  # always denied: error
            "p, editor, *, /other/*, read, allow\n"
            "p, viewer, *, /f/:id, write, deny\n"
            "p, editor, *, /f/*, write, allow\n"  # /f/a/b still allowed: fine
            "p, viewer, *, /g/.*, write, deny\n"
            "p, editor, *, /g/:id, write, allow\n"  # regex deny: cannot prove, warning
            "p, viewer, acme, /h/*, read, deny\n"
            "p, editor, *, /h/:id, read, allow\n"  # denied in acme only: fine
            "g, u, editor, acme\n"
        },
    )
    issues = {
        (i.line, i.severity)
        for i in lint_policy_dir(directory).issues
        if i.code == "contradicted-allow"
    }
    assert issues == {(3, "error"), (8, "warning")}


def test_broader_deny_on_a_child_role_does_not_contradict(tmp_path):
    # The deny is on a role that inherits the allowing one: other holders keep the allow.
    directory = write(
        tmp_path / "p",
        {
            "roles.csv": "g, member, viewer, *\np, viewer, *, /docs/*, read, allow\n",
            "globex.csv": "g, frank, contractor, globex\ng, contractor, member, globex\n"
            "p, contractor, globex, /docs/*, read, deny\n",
        },
    )
    assert "contradicted-allow" not in codes(directory)


def test_unassigned_and_unknown_roles_are_warnings(tmp_path):
    directory = write(
        tmp_path / "p",
        {
            "roles.csv": "p, viewer, *, /x, read, allow\np, ghost, *, /x, read, allow\n"
            "p, owner, *, /d/:id, update, allow\n",
            "acme.csv": "g, alice, viewer, acme\ng, bob, veiwer, acme\n",
        },
    )
    assert found(directory) == {
        ("roles.csv", 2, "role-unassigned", "warning"),
        ("acme.csv", 2, "role-unknown", "warning"),
    }


def test_global_membership_needs_the_marker(tmp_path):
    directory = write(
        tmp_path / "p",
        {
            "roles.csv": "g, admin, editor, *\n"
            "g, root, admin, *\n"
            f"{GLOBAL_MEMBERSHIP_MARKER}\n"
            "g, ops, admin, *\n"
            "p, editor, *, /x, read, allow\n"
        },
    )
    issues = [i for i in lint_policy_dir(directory).issues if i.code == "global-membership"]
    assert [(i.line, i.severity) for i in issues] == [(2, "error")]
    assert GLOBAL_MEMBERSHIP_MARKER in issues[0].message


def test_p_rule_with_org_pattern_never_applies(tmp_path):
    directory = write(
        tmp_path / "p",
        {"acme.csv": "g, a, r, acme\np, r, acme*, /x, read, allow\np, r, acme, /x, read, allow\n"},
    )
    assert ("acme.csv", 2, "org-pattern", "warning") in found(directory)


def test_cli_text_and_json_output(env, tmp_path):
    directory = write(
        tmp_path / "p",
        {
            "acme.csv": "g, alice, viewer, acme\n"
            "p, viewer, acme, /x, read, maybe\n"
            "p, ghost, acme, /y, read, allow\n"
        },
    )
    result = CliRunner().invoke(main, ["lint", str(directory)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert all(LINE.match(line) for line in lines[:-1]), lines
    assert lines[0].startswith(f"{directory / 'acme.csv'}:1:11: role-unknown: ")
    assert lines[1].startswith(f"{directory / 'acme.csv'}:2:28: bad-effect: ")
    assert lines[-1] == "1 error, 2 warnings in 2 rules"

    result = CliRunner().invoke(main, ["lint", str(directory), "--format", "json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["errors"] == 1 and data["warnings"] == 2
    assert {issue["code"] for issue in data["issues"]} == {
        "bad-effect",
        "role-unassigned",
        "role-unknown",
    }
    assert {"path", "line", "column", "code", "severity", "message"} <= set(data["issues"][0])


def test_warnings_alone_exit_zero(env, tmp_path):
    directory = write(tmp_path / "p", {"acme.csv": "p, ghost, acme, /y, read, allow\n"})
    assert CliRunner().invoke(main, ["lint", str(directory)]).exit_code == 0


# -- bad input through the command ---------------------------------------------------------


def test_binary_and_non_utf8_files(env, tmp_path):
    directory = write(
        tmp_path / "p",
        {
            "bin.csv": b"g, a, b, acme\n\x00\x01\x02",
            "latin.csv": "g, jos\xe9, b, acme\n".encode("latin-1"),
        },
    )
    result = CliRunner().invoke(main, ["lint", str(directory)])
    assert result.exit_code == 1
    assert re.search(r"bin\.csv:2:1: binary: .*NUL", result.output)
    assert re.search(r"latin\.csv:1:\d+: encoding: not valid UTF-8", result.output)


def test_huge_file_is_refused(env, tmp_path, monkeypatch):
    monkeypatch.setattr(csvfiles, "MAX_POLICY_FILE_BYTES", 64)
    directory = write(tmp_path / "p", {"acme.csv": "g, alice, viewer, acme\n" * 10})
    result = CliRunner().invoke(main, ["lint", str(directory)])
    assert result.exit_code == 1
    assert "too-large" in result.output and "64-byte limit" in result.output


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_out_of_the_directory(env, tmp_path):
    outside = write(tmp_path / "outside", {"secret.csv": "g, mallory, admin, acme\n"})
    directory = write(
        tmp_path / "p", {"acme.csv": "g, alice, viewer, acme\np, viewer, acme, /x, read, allow\n"}
    )
    (directory / "linked.csv").symlink_to(outside / "secret.csv")
    result = CliRunner().invoke(main, ["lint", str(directory)])
    assert result.exit_code == 1
    assert "symlink-outside" in result.output
    assert "mallory" not in result.output


def test_missing_directory_is_a_clear_error(env, tmp_path):
    result = CliRunner().invoke(main, ["lint", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
