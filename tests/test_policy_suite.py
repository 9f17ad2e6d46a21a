"""`rolegate test`: the shipped suite passes, failures read like pytest, bad suites fail clearly."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from xml.etree import ElementTree

import pytest
from click.testing import CliRunner

from rolegate.cli import main
from rolegate.config import REPO_ROOT
from rolegate.policy.suite import load_suites
from rolegate.rules import format_rule
from rolegate.store import PolicyStore, read_policy_dir

SAMPLE = REPO_ROOT / "policies"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$")


def run(*args: str):
    return CliRunner().invoke(main, ["test", *args])


def test_shipped_suite_passes(env):
    """The sample policies' own suite (policies/tests/*.yaml): every case must pass."""
    result = run()
    last = result.output.strip().splitlines()[-1]
    assert SUMMARY.match(last), result.output
    passed, failed = map(int, SUMMARY.match(last).groups())
    assert failed == 0, result.output
    assert result.exit_code == 0
    assert passed == len(load_suites(SAMPLE / "tests")) >= 40
    assert result.output.startswith("." * passed + "\n")


def test_shipped_suite_covers_every_seed_member(env):
    cases = load_suites(SAMPLE / "tests")
    members = {
        (rule[1], rule[3])
        for rule in (i.rule for i in read_policy_dir(SAMPLE))
        if rule[0] == "g" and rule[3] != "*"
    }
    users = {(s, o) for s, o in members if s != "contractor"}
    assert users <= {(case.subject, case.org) for case in cases}
    assert {"allow", "deny"} == {case.expect for case in cases}
    assert any(case.owner for case in cases)


def test_suite_against_the_store(env):
    store = PolicyStore.from_url(env["ROLEGATE_DATABASE_URL"])
    try:
        store.replace_all([item.rule for item in read_policy_dir(SAMPLE)], actor="test")
    finally:
        store.dispose()
    result = run("--store")
    assert result.exit_code == 0, result.output
    assert SUMMARY.match(result.output.strip().splitlines()[-1]).group(2) == "0"


def test_failures_are_reported_with_the_explanation(env, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "cases:\n"
        "  - {name: alice deletes, subject: alice, org: acme, resource: /projects/1,\n"
        "     action: delete, expect: allow}\n"
        "  - name: bob deletes\n"
        "    subject: bob\n"
        "    org: acme\n"
        "    resource: /projects/1\n"
        "    action: update\n"
        "    expect: deny\n"
        "  - {subject: frank, org: globex, resource: /documents/finance/q3, action: read,\n"
        "     expect: allow}\n"
    )
    result = run(str(suite))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == ".FF"
    assert lines[-1] == "1 passed, 2 failed"
    assert f"{suite}::bob deletes ({suite}:4)" in result.output
    assert "bob update /projects/1 in acme: expected deny, got allow" in result.output
    assert "allowed by p, editor, *, /projects/*, update, allow" in result.output
    assert "role path: bob -> editor" in result.output
    assert f"{suite}::case 3" in result.output
    assert "denied by p, contractor, globex, /documents/finance/*, read, deny" in result.output
    assert "role path: frank -> contractor" in result.output


def test_suite_against_another_policy_dir(env, tmp_path):
    policies = tmp_path / "p"
    shutil.copytree(SAMPLE, policies)
    (policies / "acme.csv").write_text(
        (policies / "acme.csv").read_text().replace("g, alice, admin, acme\n", "")
    )
    result = run("--policy-dir", str(policies))
    assert result.exit_code == 1
    assert "alice delete /projects/42 in acme: expected allow, got deny" in result.output
    assert "no rule matched" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("cases: [\n", "invalid YAML"),
        ("- just a list\n", "a mapping with a `cases` list"),
        (
            "cases:\n  - {subject: a, org: acme, resource: /x, action: get, expect: deny, x: 1}\n",
            "unknown key 'x'",
        ),
        ("cases:\n  - {subject: a, org: acme, resource: /x, action: read}\n", "expect is required"),
        (
            "cases:\n  - {subject: no, org: acme, resource: /x, action: read, expect: deny}\n",
            "subject must be a non-empty string, got False",
        ),
        (
            "cases:\n  - {subject: a, org: acme, resource: /x, action: read, expect: maybe}\n",
            "use allow or deny",
        ),
    ],
)
def test_bad_suites_fail_with_file_and_line(env, tmp_path, content, message):
    suite = tmp_path / "bad.yaml"
    suite.write_text(content)
    result = run(str(suite))
    assert result.exit_code == 2
    assert message in result.output
    assert re.search(rf"{re.escape(str(suite))}:\d+: ", result.output)


def test_binary_suite_and_missing_path(env, tmp_path):
    suite = tmp_path / "bin.yaml"
    suite.write_bytes(b"cases:\x00\x01")
    assert "binary file" in run(str(suite)).output
    result = run(str(tmp_path / "missing"))
    assert result.exit_code == 2 and "no policy test suite" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no *.yaml suite files" in run(str(empty)).output


def test_suite_directory_reads_every_yaml_file(env, tmp_path):
    directory = tmp_path / "tests"
    (directory / "nested").mkdir(parents=True)
    case = (
        "cases:\n"
        "  - {subject: alice, org: acme, resource: /projects/1, action: delete, expect: allow}\n"
    )
    (directory / "a.yaml").write_text(case)
    (directory / "nested" / "b.yml").write_text(case)
    (directory / "notes.txt").write_text("not a suite")
    result = run(str(directory))
    assert result.exit_code == 0
    assert result.output.strip().splitlines()[-1] == "2 passed, 0 failed"
    assert Path(load_suites(directory)[1].path).name == "b.yml"


def test_run_selects_cases_by_name_regex(env):
    result = run("--run", "contractor")
    assert result.exit_code == 0, result.output
    selected = [case for case in load_suites(SAMPLE / "tests") if "contractor" in case.id]
    assert 0 < len(selected) < len(load_suites(SAMPLE / "tests"))
    assert result.output.strip().splitlines()[-1] == f"{len(selected)} passed, 0 failed"


def test_run_that_selects_nothing_or_is_not_a_regex_fails(env):
    result = run("--run", "no such case")
    assert result.exit_code == 2 and "no test case name matches" in result.output
    result = run("--run", "(")
    assert result.exit_code == 2 and "not a regular expression" in result.output


def _failing_suite(tmp_path) -> Path:
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "cases:\n"
        "  - {name: alice deletes, subject: alice, org: acme, resource: /projects/1,\n"
        "     action: delete, expect: allow}\n"
        "  - {name: bob <deletes> & more, subject: bob, org: acme, resource: /projects/1,\n"
        "     action: update, expect: deny}\n"
    )
    return suite


def test_json_report_has_every_case_with_its_decision(env, tmp_path):
    suite = _failing_suite(tmp_path)
    result = run(str(suite), "--format", "json")
    assert result.exit_code == 1
    document = json.loads(result.output)
    assert (document["passed"], document["failed"]) == (1, 1)
    failed = document["cases"][1]
    assert failed["passed"] is False and failed["expect"] == "deny" and failed["actual"] == "allow"
    assert failed["rule"] == "p, editor, *, /projects/*, update, allow"
    assert failed["path"] == "bob -> editor" and failed["line"] == 4
    assert "coverage" not in document


def test_junit_report_is_xml_with_failures(env, tmp_path):
    suite = _failing_suite(tmp_path)
    result = run(str(suite), "--format", "junit")
    assert result.exit_code == 1
    root = ElementTree.fromstring(result.output.encode())
    assert root.tag == "testsuites" and root.get("tests") == "2" and root.get("failures") == "1"
    cases = root.findall("testsuite/testcase")
    assert [case.get("name") for case in cases] == ["alice deletes", "bob <deletes> & more"]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert "expected deny, got allow" in failure.get("message")
    assert "role path: bob -> editor" in failure.text


def test_coverage_names_the_rules_no_case_exercised(env, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "cases:\n"
        "  - {subject: frank, org: globex, resource: /projects/1, action: read, expect: allow}\n"
    )
    result = run(str(suite), "--coverage", "--format", "json")
    assert result.exit_code == 0, result.output
    coverage = json.loads(result.output)["coverage"]
    missed = {entry["rule"]: entry["location"] for entry in coverage["not_exercised"]}
    # exercised: the deciding rule and every link of its role path
    for rule in (
        "p, viewer, *, /projects/*, read, allow",
        "g, frank, contractor, globex",
        "g, contractor, member, globex",
        "g, member, viewer, *",
    ):
        assert rule not in missed
    where = {format_rule(i.rule): str(i.location) for i in read_policy_dir(SAMPLE)}
    for rule in ("p, admin, *, /projects/*, delete, allow", "g, alice, admin, acme"):
        assert missed[rule] == where[rule]
    assert coverage["exercised"] == 4 == coverage["rules"] - len(missed)

    text = run(str(suite), "--coverage").output
    assert f"coverage: 4 of {coverage['rules']} rules exercised" in text
    assert f"{where['p, admin, *, /projects/*, delete, allow']}: p, admin, *, /projects/*" in text


def test_coverage_of_the_shipped_suite_counts_deny_rules(env):
    result = run("--coverage", "--format", "json")
    coverage = json.loads(result.output)["coverage"]
    missed = {entry["rule"] for entry in coverage["not_exercised"]}
    assert "p, contractor, globex, /documents/finance/*, read, deny" not in missed
    assert "p, platform-admin, *, /orgs, manage, allow" in missed
    assert result.exit_code == 0
