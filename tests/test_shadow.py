"""Shadow evaluation (issue 17): a candidate policy decided beside the live one, off the request
path, on a real HTTP server under concurrent load; disagreements counted and logged exactly."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import SAMPLE_POLICIES

from rolegate.audit.decision_log import FileSink
from rolegate.config import REPO_ROOT
from rolegate.engine import CheckRequest, Decision
from rolegate.identity import Principal
from rolegate.shadow import ShadowEvaluator, ShadowPolicy

VIEWER_PROJECTS = "p, viewer, *, /projects/*, read, allow"
CONTRACTOR_DENY = "p, contractor, globex, /documents/finance/*, read, deny"

# (subject, org, resource, action, owner) -> (live answer, disagreement direction or None)
MIX = [
    ("alice", "acme", "/projects/1", "read", None, True, "revoke"),
    ("bob", "globex", "/projects/2", "read", None, True, "revoke"),
    ("frank", "globex", "/documents/finance/q1", "read", None, False, "grant"),
    ("dave", "acme", "/members", "read", None, True, None),
    ("carol", "acme", "/documents/1", "update", "carol", True, None),
]
THREADS, ROUNDS = 8, 25


def drop_lines(directory: Path, file_name: str, line: str) -> None:
    path = directory / file_name
    path.write_text("\n".join(x for x in path.read_text().splitlines() if x != line) + "\n")


@pytest.fixture
def candidate(tmp_path) -> Path:
    directory = tmp_path / "candidate"
    shutil.copytree(SAMPLE_POLICIES, directory)
    drop_lines(directory, "roles.csv", VIEWER_PROJECTS)
    drop_lines(directory, "globex.csv", CONTRACTOR_DENY)
    return directory


@pytest.fixture
def shadowed(make_live_server, settings, tmp_path, candidate):
    log_path = tmp_path / "decisions.jsonl"
    live = make_live_server(
        settings.replace(
            shadow_policy_dir=str(candidate), decision_log=str(log_path), decision_log_db=True
        )
    )
    return live, log_path


def metric(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.partition(" ")[0]))
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def run_load(live) -> None:
    tokens = {(s, o): live.auth(s, o) for s, o, *_ in MIX}
    failures: list[str] = []

    def worker():
        for _ in range(ROUNDS):
            for subject, org, resource, action, owner, expected, _direction in MIX:
                body = {"resource": resource, "action": action}
                if owner:
                    body["owner"] = owner
                answer = live.client.post("/v1/check", body, headers=tokens[(subject, org)])
                if answer.status != 200 or answer.body["allowed"] is not expected:
                    failures.append(f"{subject} {resource}: {answer.status} {answer.body}")

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []  # the live policy alone answers


def test_under_load_every_disagreement_is_counted_and_logged(shadowed):
    live, log_path = shadowed
    run_load(live)
    shadow = live.core.shadow
    assert shadow.flush(10) and live.core.decision_log.flush()
    per_kind = THREADS * ROUNDS

    text = live.client.get("/metrics").text
    assert (
        metric(text, "rolegate_shadow_disagreements_total", org="acme", direction="revoke")
        == per_kind
    )
    assert (
        metric(text, "rolegate_shadow_disagreements_total", org="globex", direction="revoke")
        == per_kind
    )
    assert (
        metric(text, "rolegate_shadow_disagreements_total", org="globex", direction="grant")
        == per_kind
    )
    assert metric(text, "rolegate_shadow_disagreements_total", org="acme", direction="grant") == 0
    assert metric(text, "rolegate_shadow_evaluated_total") == per_kind * len(MIX)
    assert metric(text, "rolegate_shadow_dropped_total") == 0

    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    shadow_records = [r for r in records if r.get("shadow")]
    assert len(records) - len(shadow_records) == per_kind * len(MIX)
    assert len(shadow_records) == 3 * per_kind
    for record in shadow_records:
        assert record["live"]["allowed"] is not record["allowed"]
        assert record["revision"] == shadow.policy.revision and record["v"] == 2
    grants = [r for r in shadow_records if r["allowed"]]
    assert {(r["subject"], r["resource"]) for r in grants} == {("frank", "/documents/finance/q1")}
    assert grants[0]["live"]["rule"] == CONTRACTOR_DENY

    # the decision search shows what was decided, never the shadow's answer
    searched = live.client.get(
        "/v1/orgs/globex/decisions?subject=frank&limit=1000", headers=live.auth("erin", "globex")
    ).body["decisions"]
    assert len(searched) == per_kind and not any(d["allowed"] for d in searched)
    from_file = FileSink(log_path).search(org="globex", subject="frank", limit=1000)
    assert len(from_file) == per_kind and not any(d["allowed"] for d in from_file)

    ready = live.client.get("/readyz").body["shadow"]
    assert ready["revision"].startswith("sha256:") and ready["error"] is None
    assert ready["evaluated"] == per_kind * len(MIX)
    assert ready["disagreements"] == {"grant": per_kind, "revoke": 2 * per_kind}


def test_the_console_view_lists_recent_disagreements_to_auditors_only(shadowed):
    live, _ = shadowed
    for subject, org, resource, action, *_ in MIX[:3]:
        live.check(subject, org, resource, action)
    assert live.core.shadow.flush(10)
    answer = live.client.get(
        "/v1/orgs/globex/shadow/disagreements", headers=live.auth("erin", "globex")
    )
    assert answer.status == 200
    items = answer.body["disagreements"]
    assert [(i["subject"], i["direction"]) for i in items] == [
        ("frank", "grant"),
        ("bob", "revoke"),
    ]
    assert items[0]["live"]["rule"] == CONTRACTOR_DENY and items[0]["shadow"]["allowed"] is True
    refused = live.client.get(
        "/v1/orgs/globex/shadow/disagreements", headers=live.auth("bob", "globex")
    )
    assert refused.status == 403
    other_org = live.client.get(
        "/v1/orgs/acme/shadow/disagreements", headers=live.auth("erin", "globex")
    )
    assert other_org.status == 403


def test_an_edited_candidate_is_picked_up_and_a_broken_one_is_not(shadowed, candidate):
    live, _ = shadowed
    before = live.client.get("/readyz").body["shadow"]["revision"]
    live.check("alice", "acme", "/projects/1", "read")
    assert live.core.shadow.flush(10)
    assert live.core.shadow.disagreements["revoke"] == 1

    with (candidate / "roles.csv").open("a") as handle:
        handle.write(VIEWER_PROJECTS + "\n")
    ready = wait_for_shadow(live, lambda s: s["revision"] != before)
    live.check("alice", "acme", "/projects/1", "read")
    assert live.core.shadow.flush(10)
    assert live.core.shadow.disagreements["revoke"] == 1  # they agree again

    good = ready["revision"]
    with (candidate / "acme.csv").open("a") as handle:
        handle.write("p, bob, acme\n")
    ready = wait_for_shadow(live, lambda s: s["error"] is not None)
    assert ready["revision"] == good and "acme.csv" in ready["error"]


def wait_for_shadow(live, condition, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live.check("dave", "acme", "/members", "read")  # keeps the shadow thread busy
        status = live.client.get("/readyz").body["shadow"]
        if condition(status):
            return status
        time.sleep(0.1)
    raise AssertionError(f"shadow status never matched: {status}")


def test_no_shadow_configured(live):
    assert live.client.get("/readyz").body["shadow"] is None
    answer = live.client.get(
        "/v1/orgs/acme/shadow/disagreements", headers=live.auth("alice", "acme")
    )
    assert answer.status == 404 and answer.body["error"]["code"] == "shadow_disabled"


def test_a_full_queue_drops_and_counts_without_waiting(candidate):
    policy = ShadowPolicy(candidate, model_path=REPO_ROOT / "model.conf")
    entered, release = threading.Event(), threading.Event()
    decide = policy.decide

    def slow(request):
        entered.set()
        release.wait(10)
        return decide(request)

    policy.decide = slow
    evaluator = ShadowEvaluator(policy, capacity=3)
    principal = Principal("alice", "acme", (), None, None)
    request = CheckRequest("alice", "acme", "/projects/1", "read")
    live = Decision(True, 1, ("p", "viewer", "*", "/projects/*", "read", "allow"))
    try:
        evaluator.record(principal, request, live, {})
        assert entered.wait(5)  # the worker holds the first one
        started = time.perf_counter()
        for _ in range(5):
            evaluator.record(principal, request, live, {})
        assert time.perf_counter() - started < 1.0  # never waits for the worker
        assert evaluator.dropped == 2 and len(evaluator.buffer) == 3
        release.set()
        assert evaluator.flush(5)
        assert evaluator.evaluated == 4 and evaluator.disagreements == {"grant": 0, "revoke": 4}
    finally:
        release.set()
        evaluator.close()


def test_a_subject_the_candidate_makes_a_role_disagrees(tmp_path):
    directory = tmp_path / "roles"
    shutil.copytree(SAMPLE_POLICIES, directory)
    with (directory / "acme.csv").open("a") as handle:
        handle.write("g, mallory, bob, acme\n")  # bob becomes a role name
    policy = ShadowPolicy(directory, model_path=REPO_ROOT / "model.conf")
    shadow = policy.decide(CheckRequest("bob", "acme", "/projects/1", "read"))
    assert shadow.allowed is False and shadow.error.startswith("subject_is_role")


def test_every_worker_of_rolegate_serve_shadows_and_metrics_add_up(tmp_path, candidate):
    """`rolegate serve` for real: two worker processes, each with its shadow policy."""
    from conftest import SECRET
    from prometheus_client.parser import text_string_to_metric_families
    from scaleout import ServeProcess, wait_for

    from rolegate.config import Settings
    from rolegate.identity import mint_token

    url = f"sqlite:///{tmp_path / 'serve.db'}"
    instance = ServeProcess(tmp_path, url, workers=2, ROLEGATE_SHADOW_POLICY_DIR=str(candidate))
    instance.start("--sync-policies")
    try:
        token = mint_token(
            Settings(jwt_secret=SECRET), subject="alice", org="acme", ttl_seconds=600
        )
        headers = {"Authorization": f"Bearer {token}"}
        workers, revisions = set(), set()
        for _ in range(60):
            answer = instance.client.post(
                "/v1/check", {"resource": "/projects/1", "action": "read"}, headers=headers
            )
            assert answer.status == 200 and answer.body["allowed"] is True
            workers.add(answer.headers["x-rolegate-worker"])
        assert len(workers) == 2, "the requests should have reached both workers"

        def revokes() -> float:
            text = instance.client.get("/metrics").text
            return sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "rolegate_shadow_disagreements_total"
                and sample.labels == {"org": "acme", "direction": "revoke"}
            )

        wait_for(lambda: revokes() == 60, timeout=15)
        for _ in range(20):
            revisions.add(instance.readyz()["shadow"]["revision"])
        assert len(revisions) == 1 and revisions.pop().startswith("sha256:")
    finally:
        assert instance.terminate() == 0


def test_a_missing_shadow_directory_fails_at_start(settings, tmp_path):
    from rolegate.api import create_app
    from rolegate.errors import ConfigError

    wrong = settings.replace(shadow_policy_dir=str(tmp_path / "typo"))
    with pytest.raises(ConfigError, match="ROLEGATE_SHADOW_POLICY_DIR"):
        create_app(wrong, sync_policies=True, follow_store=False)
