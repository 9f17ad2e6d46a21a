"""Engine behaviour: snapshots under threads, bounded memory, fallback mode, explain, errors.

Data-driven cases (input, expected effect and matching rule) live in tests/engine_cases/*.yaml.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import casbin
import pytest
import yaml
from casbin.util import key_match

from rolegate.config import REPO_ROOT
from rolegate.engine import CheckRequest, Engine
from rolegate.engine.fallback import MAX_ENFORCERS
from rolegate.engine.model import classify, load_model
from rolegate.errors import ConfigError
from rolegate.rules import format_rule

MODEL = REPO_ROOT / "model.conf"
CASES = Path(__file__).parent / "engine_cases"
MODEL_TEXT = MODEL.read_text()
MATCHER = MODEL_TEXT.split("m = ", 1)[1].strip()


def model_file(tmp_path: Path, matcher: str = MATCHER, name: str = "model.conf") -> Path:
    path = tmp_path / name
    path.write_text(MODEL_TEXT.replace(MATCHER, matcher))
    return path


@pytest.fixture
def engine() -> Engine:
    return Engine.from_model_file(MODEL)


@pytest.fixture
def fallback_engine(tmp_path) -> Engine:
    engine = Engine.from_model_file(model_file(tmp_path, MATCHER + ' && r.act != "forbidden"'))
    assert engine.mode == "casbin"
    return engine


SAMPLE = [
    ("g", "admin", "editor", "*"),
    ("g", "editor", "viewer", "*"),
    ("g", "alice", "admin", "acme"),
    ("g", "bob", "viewer", "acme"),
    ("g", "bob", "admin", "globex"),
    ("p", "viewer", "*", "/projects/*", "read", "allow"),
    ("p", "editor", "*", "/projects/:id", "update", "allow"),
    ("p", "admin", "acme", "/projects/:id", "delete", "allow"),
    ("p", "viewer", "acme", "/projects/secret", "read", "deny"),
    ("p", "owner", "*", "/projects/:id", "delete", "allow"),
]


# --------------------------------------------------------------------------- data-driven cases


def load_cases() -> list:
    params = []
    for path in sorted(CASES.glob("*.yaml")):
        suite = yaml.safe_load(path.read_text())
        rules = [tuple(part.strip() for part in line.split(",")) for line in suite["rules"]]
        for number, case in enumerate(suite["cases"]):
            params.append(
                pytest.param(suite, rules, case, id=f"{path.stem}-{number}-{case['name']}")
            )
    return params


@pytest.mark.parametrize(("suite", "rules", "case"), load_cases())
def test_engine_case(tmp_path, suite, rules, case):
    model = MODEL
    if suite.get("matcher"):
        model = model_file(tmp_path, suite["matcher"])
    engine = Engine.from_model_file(model, default_role=suite.get("default_role"))
    engine.load(7, rules)
    given = case["input"]
    request = CheckRequest(
        subject=given["subject"],
        org=given["org"],
        resource=given["resource"],
        action=given["action"],
        owner=given.get("owner", ""),
        extra_roles=tuple(given.get("roles", ())),
    )
    decision = engine.check(request)
    want = case["want"]
    assert decision.allowed == (want["effect"] == "allow"), decision
    assert (format_rule(decision.rule) if decision.rule else None) == want.get("rule"), decision
    if "path" in want:
        assert " -> ".join(decision.path) == want["path"]
    assert bool(decision.error) == want.get("error", False), decision
    assert decision.revision == 7


def test_case_files_exist():
    assert len(load_cases()) >= 10


# --------------------------------------------------------------------------- snapshots and threads


def test_snapshot_swap_while_threads_decide(engine):
    """Odd revisions allow alice, even ones deny her: every answer matches its own revision."""
    allow = [("g", "alice", "admin", "acme"), ("p", "admin", "acme", "/x", "read", "allow")]
    deny = [*allow, ("p", "alice", "acme", "/x", "read", "deny")]
    engine.load(1, allow)
    request = CheckRequest("alice", "acme", "/x", "read")
    stop = threading.Event()
    seen: list[tuple[int, bool]] = []
    errors: list[BaseException] = []

    def decide():
        try:
            while not stop.is_set():
                decision = engine.check(request)
                seen.append((decision.revision, decision.allowed))
                snapshot, batch = engine.check_many([request] * 5)
                assert {d.revision for d in batch} == {snapshot.revision}
                seen.extend((d.revision, d.allowed) for d in batch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=decide) for _ in range(4)]
    for thread in threads:
        thread.start()
    for revision in range(2, 122):
        time.sleep(0.001)  # let the readers run between swaps
        if revision % 3 == 0:
            engine.apply(revision, [], [deny[-1]]) if revision % 2 else engine.apply(
                revision, [deny[-1]], []
            )
        else:
            engine.load(revision, allow if revision % 2 else deny)
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors
    assert len({revision for revision, _ in seen}) > 10
    wrong = [(revision, allowed) for revision, allowed in seen if allowed != (revision % 2 == 1)]
    assert not wrong


def test_unknown_subjects_and_orgs_do_not_grow_memory(engine):
    engine.load(1, SAMPLE)
    snapshot = engine.snapshot
    rng = random.Random(3)
    for i in range(50_000):
        org = rng.choice(("acme", "globex", f"org-{i}"))
        engine.check(CheckRequest(f"user-{rng.random()}", org, "/projects/1", "read"))
    for subject in ("alice", "bob", "admin", "editor"):
        engine.check(CheckRequest(subject, "acme", "/projects/1", "read"))
    # Only names that appear in the policy of a known org are cached.
    assert len(snapshot._role_cache) <= 8
    assert all(
        subject in {"alice", "bob", "admin", "editor", "viewer"}
        for subject, _org in snapshot._role_cache
    )


def test_fallback_unknown_orgs_keep_few_enforcers(fallback_engine):
    fallback_engine.load(1, SAMPLE)
    for i in range(MAX_ENFORCERS + 50):
        fallback_engine.check(CheckRequest("alice", f"org-{i}", "/projects/1", "read"))
    state = fallback_engine._fallback_state
    assert state is not None and len(state[1]._enforcers) <= MAX_ENFORCERS


def test_fallback_threaded_decisions_are_correct(fallback_engine):
    """Casbin's enforcer under threads (gh-106905 on 3.11): no exception, right answers."""
    fallback_engine.load(1, SAMPLE)
    rng = random.Random(5)
    requests = [
        CheckRequest(
            rng.choice(("alice", "bob", "carol")),
            rng.choice(("acme", "globex")),
            rng.choice(("/projects/1", "/projects/secret")),
            rng.choice(("read", "update", "delete", "forbidden")),
        )
        for _ in range(200)
    ]
    expected = [fallback_engine.check(request) for request in requests]
    assert any(decision.allowed for decision in expected)
    failures: list = []

    def work():
        for request, want in zip(requests, expected, strict=True):
            got = fallback_engine.check(request)
            if got.allowed != want.allowed or got.error:
                failures.append((request, got, want))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_fallback_token_role_already_in_policy_is_kept(fallback_engine):
    """A granted role equal to a policy link must not remove that link after the check."""
    fallback_engine.load(1, SAMPLE)
    alice = CheckRequest("alice", "acme", "/projects/1", "delete")
    assert fallback_engine.check(alice).allowed
    granted = CheckRequest("alice", "acme", "/projects/1", "delete", extra_roles=("admin",))
    assert fallback_engine.check(granted).allowed
    assert fallback_engine.check(alice).allowed


# --------------------------------------------------------------------------- model classification


def test_shipped_model_is_fast():
    shape = classify(load_model(MODEL))
    assert shape.fast and shape.owner_role and shape.deny_override and shape.template_domain
    assert shape.resource_function == "keyMatch2"


def test_unknown_matcher_term_selects_casbin_mode_with_reason(tmp_path):
    shape = classify(load_model(model_file(tmp_path, MATCHER + " && r.sub != r.owner")))
    assert not shape.fast
    assert "r_sub != r_owner" in shape.reason


def test_resource_term_before_action_selects_casbin_mode(tmp_path):
    matcher = (
        'keyMatch2(r.obj, p.obj) && (p.dom == r.dom || p.dom == "*") && r.act == p.act '
        "&& g(r.sub, p.sub, r.dom)"
    )
    shape = classify(load_model(model_file(tmp_path, matcher)))
    assert not shape.fast and "resource term" in shape.reason


def test_missing_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="model file not found"):
        Engine.from_model_file(tmp_path / "nope.conf")


# --------------------------------------------------------------------------- explain and errors


def test_explain_allow_deny_and_owner(engine):
    engine.load(1, SAMPLE)
    allowed = engine.check(CheckRequest("alice", "acme", "/projects/1", "read"))
    assert allowed.allowed
    assert allowed.rule == ("p", "viewer", "*", "/projects/*", "read", "allow")
    assert allowed.path == ("alice", "admin", "editor", "viewer")
    assert allowed.reason["path"] == "alice -> admin -> editor -> viewer"

    denied = engine.check(CheckRequest("alice", "acme", "/projects/secret", "read"))
    assert not denied.allowed
    assert denied.rule == ("p", "viewer", "acme", "/projects/secret", "read", "deny")
    assert denied.reason["effect"] == "deny"

    owner = engine.check(CheckRequest("carol", "acme", "/projects/9", "delete", owner="carol"))
    assert owner.allowed and owner.path == ("carol", "owner")
    not_owner = engine.check(CheckRequest("carol", "acme", "/projects/9", "delete", owner="dave"))
    assert not not_owner.allowed and not_owner.rule is None
    assert not_owner.reason == {"summary": "no rule matched"}


def test_invalid_regex_denies_with_error(tmp_path):
    engine = Engine.from_model_file(
        model_file(tmp_path, MATCHER.replace("keyMatch2", "regexMatch"))
    )
    engine.load(
        1,
        [
            ("g", "alice", "admin", "acme"),
            ("p", "admin", "acme", "^/projects/.*", "read", "allow"),
            ("p", "nobody", "acme", "/projects/[0-9", "read", "allow"),
        ],
    )
    decision = engine.check(CheckRequest("alice", "acme", "/projects/1", "read"))
    assert not decision.allowed and "invalid resource pattern" in decision.error
    assert decision.reason["summary"] == "denied: the policy could not be evaluated"
    # Casbin raises on this request too (the engine's answer stands for that failure).
    enforcer = casbin.Enforcer(str(tmp_path / "model.conf"))
    enforcer.add_named_domain_matching_func("g", key_match)
    for rule in engine.snapshot.rules():
        enforcer.get_model().add_policy(rule[0], rule[0], list(rule[1:]))
    enforcer.build_role_links()
    with pytest.raises(Exception, match="unterminated character set"):
        enforcer.enforce("alice", "acme", "/projects/1", "read", "")
    # Other actions are unaffected.
    assert not engine.check(CheckRequest("alice", "acme", "/projects/1", "update")).error


def test_granted_role_counts_as_one_link(engine):
    """default/token roles behave like `g, subject, role, org`: 9 links in all, as in Casbin."""
    chain = [("g", f"c{i}", f"c{i + 1}", "acme") for i in range(9)]
    engine.load(
        1,
        [
            *chain,
            ("p", "c8", "acme", "/x", "read", "allow"),
            ("p", "c9", "acme", "/y", "read", "allow"),
        ],
    )
    assert engine.check(CheckRequest("bob", "acme", "/x", "read", extra_roles=("c0",))).allowed
    assert not engine.check(CheckRequest("bob", "acme", "/y", "read", extra_roles=("c0",))).allowed
    assert engine.check(CheckRequest("c0", "acme", "/y", "read")).allowed  # 9 links: allowed
    assert not engine.check(CheckRequest("c0", "acme", "/z", "read")).allowed


def test_check_many_shares_role_work_and_matches_single_checks(engine, monkeypatch):
    engine.load(1, SAMPLE)
    requests = [
        CheckRequest(subject, org, resource, action)
        for subject in ("alice", "bob")
        for org in ("acme", "globex")
        for resource in ("/projects/1", "/projects/secret")
        for action in ("read", "update", "delete")
    ]
    singles = [engine.check(request) for request in requests]
    calls = []
    original = type(engine.snapshot).request_roles
    monkeypatch.setattr(
        type(engine.snapshot),
        "request_roles",
        lambda self, request: calls.append(request) or original(self, request),
    )
    snapshot, batch = engine.check_many(requests)
    assert batch == singles
    assert snapshot.revision == 1
    assert len(calls) == 4  # one per (subject, org)


def test_apply_reindexes_only_touched_orgs(engine):
    engine.load(1, SAMPLE)
    before = engine.snapshot
    after = engine.apply(2, [("g", "carol", "viewer", "globex")], [("g", "bob", "viewer", "acme")])
    assert after.domains["*"] is before.domains["*"]
    assert after.domains["acme"] is not before.domains["acme"]
    assert not engine.check(CheckRequest("bob", "acme", "/projects/1", "read")).allowed
    assert engine.check(CheckRequest("carol", "globex", "/projects/1", "read")).allowed
    assert before.decide(CheckRequest("bob", "acme", "/projects/1", "read")).allowed
    replaced = engine.replace_domains(3, ["globex"], [("g", "dave", "admin", "globex")])
    assert replaced.rules("globex") == (("g", "dave", "admin", "globex"),)
    assert replaced.orgs() == ["acme", "globex"]
