"""One grammar for org ids and subjects: the module, the admin API (routes included), the policy
files (lint, file:line) and the CLI."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner

from rolegate.cli import main
from rolegate.config import REPO_ROOT
from rolegate.errors import InvalidRequest
from rolegate.identifiers import (
    ORG_ID_PATTERN,
    SUBJECT_MAX_LENGTH,
    SUBJECT_PATTERN,
    check_org_id,
    org_id_problem,
    subject_problem,
)
from rolegate.policy.lint import lint_policy_dir

PLATFORM_CSV = "# rolegate: global-membership\ng, root, platform-admin, *\n"
REFUSED_ORG_IDS = ["ACME", "Acme", "../x", ".hidden", "a/b", "roles", "", "-x", "a" * 64, "a b"]


@pytest.mark.parametrize("org", ["acme", "a", "org-1", "team_2", "0x", "a" * 63])
def test_valid_org_ids(org):
    assert org_id_problem(org) is None
    assert re.fullmatch(ORG_ID_PATTERN, org)


@pytest.mark.parametrize("org", REFUSED_ORG_IDS)
def test_refused_org_ids(org):
    assert org_id_problem(org) is not None
    with pytest.raises(InvalidRequest) as caught:
        check_org_id(org)
    assert caught.value.code == "invalid_org_id"


@pytest.mark.parametrize("subject", ["alice", "team/ops", "bulk", "a@b.example", "x" * 255])
def test_valid_subjects(subject):
    assert subject_problem(subject) is None
    assert re.fullmatch(SUBJECT_PATTERN, subject)


@pytest.mark.parametrize(
    "subject",
    ["", "*", "a,b", 'a"b', "a(b", " a", "a ", "a #b", "a\x00b", "a\u200bb", "x" * 256],
)
def test_refused_subjects(subject):
    assert subject_problem(subject) is not None


def test_the_schema_pattern_agrees_with_the_function_on_ascii():
    samples = ["a", "*", "a b", "a #x", "a,b", "x" * SUBJECT_MAX_LENGTH, "x" * 256, "/x/"]
    for sample in samples:
        assert (re.fullmatch(SUBJECT_PATTERN, sample) is not None) == (
            subject_problem(sample) is None
        ), sample


# -- API ------------------------------------------------------------------------------------


def _policies(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", target, ignore=shutil.ignore_patterns("tests"))
    (target / "platform.csv").write_text(PLATFORM_CSV)
    return target


@pytest.fixture
def live(make_live_server, settings, tmp_path):
    return make_live_server(settings.replace(policy_dir=str(_policies(tmp_path))))


def call(live, method, path, body=None, *, who=("alice", "acme")):
    return live.client.request(method, path, body, headers=live.auth(*who))


@pytest.mark.parametrize("org", ["ACME", "../rt-escape", ".hidden", "roles", "a/b"])
def test_api_refuses_org_ids_outside_the_grammar(live, org):
    response = call(live, "POST", "/v1/orgs", {"id": org, "admin": "zed"}, who=("root", None))
    assert response.status == 400, response.text
    assert response.body["error"]["code"] == "invalid_org_id"
    assert org not in live.core.engine.snapshot.domains


def test_api_creates_a_valid_org(live):
    response = call(live, "POST", "/v1/orgs", {"id": "initech", "admin": "zed"}, who=("root", None))
    assert response.status == 201, response.text


@pytest.mark.parametrize("subject", ["team/ops", "a/b/c", "bulk/x"])
def test_every_valid_subject_is_addressable_by_the_member_and_audit_routes(live, subject):
    encoded = quote(subject, safe="")
    response = call(live, "PUT", f"/v1/orgs/acme/members/{encoded}", {"roles": ["viewer"]})
    assert response.status == 200, response.text
    assert response.body["subject"] == subject
    assert ("g", subject, "viewer", "acme") in live.core.engine.snapshot.rules("acme")
    response = call(live, "GET", f"/v1/orgs/acme/subjects/{encoded}/permissions")
    assert response.status == 200, response.text
    assert response.body["subject"] == subject
    response = call(live, "DELETE", f"/v1/orgs/acme/members/{encoded}")
    assert response.status == 200, response.text
    assert not any(rule[1] == subject for rule in live.core.engine.snapshot.rules("acme"))


def test_a_member_named_bulk_does_not_capture_the_bulk_endpoint(live):
    body = {"items": [{"subject": "zoe", "roles": ["viewer"]}]}
    response = call(live, "POST", "/v1/orgs/acme/members/bulk", body)
    assert response.status == 200, response.text
    assert response.body["applied"] == 1
    assert not any(rule[1] == "bulk" for rule in live.core.engine.snapshot.rules("acme"))


def test_a_member_named_bulk_is_managed_through_the_bulk_endpoint(live):
    """`/members/bulk` is the bulk endpoint for every method (no route collision): PUT and
    DELETE there are 405 with `Allow: POST`, and a member named `bulk` is set and removed by a
    bulk item (an empty role list removes)."""
    for method in ("PUT", "DELETE"):
        response = call(live, method, "/v1/orgs/acme/members/bulk", {"roles": ["viewer"]})
        assert response.status == 405, response.text
        allow = {method.strip() for method in response.headers["allow"].split(",")}
        assert "POST" in allow and not allow & {"PUT", "DELETE"}, allow

    def held() -> set[str]:
        return {rule[2] for rule in live.core.engine.snapshot.rules("acme") if rule[1] == "bulk"}

    body = {"items": [{"subject": "bulk", "roles": ["viewer"]}]}
    response = call(live, "POST", "/v1/orgs/acme/members/bulk", body)
    assert response.status == 200 and response.body["applied"] == 1, response.text
    assert held() == {"viewer"}
    response = call(live, "GET", "/v1/orgs/acme/subjects/bulk/permissions")
    assert response.status == 200 and response.body["subject"] == "bulk", response.text
    body = {"items": [{"subject": "bulk", "roles": []}]}  # an empty role list removes
    response = call(live, "POST", "/v1/orgs/acme/members/bulk", body)
    assert response.status == 200 and response.body["applied"] == 1, response.text
    assert held() == set()
    # removing by bulk is guarded like DELETE: the org's last admin stays
    response = call(
        live, "POST", "/v1/orgs/acme/members/bulk", {"items": [{"subject": "alice", "roles": []}]}
    )
    assert response.body["applied"] == 0, response.text
    assert response.body["results"][0]["error"]["code"] == "last_admin", response.text


def test_api_refuses_a_star_subject(live):
    response = call(live, "PUT", "/v1/orgs/acme/members/%2A", {"roles": ["viewer"]})
    assert response.status == 400
    assert response.body["error"]["code"] == "invalid_subject"


# -- files and CLI --------------------------------------------------------------------------


def test_lint_reports_bad_org_ids_with_file_and_line(tmp_path):
    directory = tmp_path / "p"
    directory.mkdir()
    (directory / "acme.csv").write_text("g, alice, viewer, acme\ng, bob, viewer, ACME\n")
    issues = [i for i in lint_policy_dir(directory).issues if i.code == "invalid-org-id"]
    assert [(Path(i.path).name, i.line, i.column, i.severity) for i in issues] == [
        ("acme.csv", 2, 17, "error")
    ]


def test_lint_refuses_api_key_links_in_files(tmp_path):
    directory = tmp_path / "p"
    directory.mkdir()
    (directory / "acme.csv").write_text("g, alice, viewer, acme\ng, apikey:abc, viewer, acme\n")
    issues = [i for i in lint_policy_dir(directory).issues if i.code == "api-key-in-files"]
    assert [(i.line, i.severity) for i in issues] == [(2, "error")]


def test_cli_refuses_bad_org_ids_and_creates_nothing(env, tmp_path):
    result = CliRunner().invoke(main, ["import", str(REPO_ROOT / "policies")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["org", "create", "ACME", "--admin", "zed"])
    assert result.exit_code == 2
    assert "invalid_org_id" in result.output or "not an org id" in result.output
