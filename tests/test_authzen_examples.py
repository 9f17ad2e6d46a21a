"""The AuthZEN examples through their `serve` scripts, over HTTP, as the interop harnesses run them:
the whole interop Todo suite (43 cases) and the certification scenario's levels."""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from conftest import HttpClient, Response

from rolegate.config import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
# Unchanged copy of the openid/authzen interop suite (see docs/authzen.md for its origin).
TODO_CASES = json.loads(
    (EXAMPLES / "authzen-todo" / "decisions-authorization-api-1_0-02.json").read_text()
)
START_TIMEOUT = 60


@dataclass
class Pdp:
    url: str  # AUTHZEN_PDP_URL
    authorization: str  # AUTHZEN_PDP_API_KEY
    client: HttpClient

    @property
    def base_path(self) -> str:
        return urlsplit(self.url).path

    def post(self, path: str, body, **headers) -> Response:
        return self.client.post(
            self.base_path + path, body, headers={"Authorization": self.authorization, **headers}
        )

    def raw(self, path: str, data: bytes, content_type: str | None) -> Response:
        headers = {"Authorization": self.authorization}
        if content_type:
            headers["Content-Type"] = content_type
        return self.client.request("POST", self.base_path + path, raw=data, headers=headers)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_line(process: subprocess.Popen, timeout: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    if not selector.select(timeout):
        raise AssertionError("serve printed nothing in time")
    return process.stdout.readline()


@pytest.fixture(scope="module")
def serve(tmp_path_factory) -> Iterator:
    processes = []

    def start(example: str) -> Pdp:
        port = free_port()
        data_dir = tmp_path_factory.mktemp(example)
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / example / "serve"), str(data_dir)],
            env={**os.environ, "PORT": str(port)},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        processes.append(process)
        line = read_line(process, START_TIMEOUT)
        assert line.endswith("\n") and line.count("\n") == 1
        url_part, key_part = line.rstrip("\n").split(" AUTHZEN_PDP_API_KEY=", 1)
        assert url_part.startswith("AUTHZEN_PDP_URL=")
        url = url_part.removeprefix("AUTHZEN_PDP_URL=")
        assert url.startswith(f"http://127.0.0.1:{port}/")
        return Pdp(url, key_part, HttpClient("127.0.0.1", port))

    yield start
    for process in processes:
        process.terminate()
        assert process.wait(timeout=15) == 0
        assert process.stdout.read() == "", "serve printed more than its one line"


@pytest.fixture(scope="module")
def todo(serve) -> Pdp:
    return serve("authzen-todo")


@pytest.fixture(scope="module")
def cert(serve) -> Pdp:
    return serve("authzen-certification")


# --------------------------------------------------------------------------- the Todo suite


def test_the_todo_suite_has_its_43_cases():
    assert len(TODO_CASES["evaluation"]) == 40 and len(TODO_CASES["evaluations"]) == 3


@pytest.mark.parametrize("case", TODO_CASES["evaluation"], ids=lambda case: None)
def test_todo_evaluation(todo, case):
    response = todo.post("/access/v1/evaluation", case["request"])
    assert response.status == 200
    assert response.body["decision"] is case["expected"]


@pytest.mark.parametrize("case", TODO_CASES["evaluations"])
def test_todo_evaluations_compare_as_the_harness_does(todo, case):
    response = todo.post("/access/v1/evaluations", case["request"])
    assert response.status == 200
    # runner.ts: JSON.stringify equality of the whole array (no extra keys per item).
    assert json.dumps(response.body["evaluations"]) == json.dumps(case["expected"])


def test_todo_without_the_key_is_refused(todo):
    case = TODO_CASES["evaluation"][0]["request"]
    response = todo.client.post(todo.base_path + "/access/v1/evaluation", case)
    assert response.status == 401


# --------------------------------------------------------------------------- certification

ALICE = {"type": "user", "id": "alice"}
BOB = {"type": "user", "id": "bob"}
BOB_ADMIN = {"type": "user", "id": "bob", "properties": {"role": "admin"}}
READ, WRITE = {"name": "read"}, {"name": "write"}
RECORD_1 = {"type": "record", "id": "record-1"}
RECORD_2_ARCHIVED = {"type": "record", "id": "record-2", "properties": {"status": "archived"}}
CONTEXT = {"time": "2025-06-27T18:03-07:00", "ip": "192.168.1.1"}


def evaluation(subject, action, resource, **extra):
    return {"subject": subject, "action": action, "resource": resource, **extra}


BASIC_CORE = {
    "c-2-2-1 permit": (evaluation(ALICE, READ, RECORD_1), True),
    "c-2-2-2 deny": (evaluation(BOB, WRITE, RECORD_1), False),
    "c-2-2-3 context": (evaluation(ALICE, READ, RECORD_1, context=CONTEXT), True),
    "c-2-2-8 additional properties": (
        evaluation(
            {**ALICE, "properties": {"department": "Sales", "role": "manager"}},
            {"name": "read", "properties": {"method": "GET"}},
            {**RECORD_1, "properties": {"status": "active", "owner": "bob"}},
        ),
        True,
    ),
    "c-2-2-9 unknown fields": (
        evaluation(ALICE, READ, RECORD_1, foo="bar", futureField={"nested": True}),
        True,
    ),
    "rule 3": (evaluation(BOB, READ, RECORD_1), True),
    "rule 2": (evaluation(ALICE, WRITE, RECORD_1), True),
}
BASIC_PROPERTIES_PASSING = {
    "c-2-2-4 resource property denies": (
        evaluation(ALICE, WRITE, RECORD_2_ARCHIVED),
        False,
    ),
    "c-2-2-5 subject role property permits": (
        evaluation(BOB_ADMIN, WRITE, RECORD_2_ARCHIVED),
        True,
    ),
    "c-2-2-7 hard delete denied": (
        evaluation(ALICE, {"name": "delete", "properties": {"soft": False}}, RECORD_1),
        False,
    ),
}


@pytest.mark.parametrize("name", [*BASIC_CORE, *BASIC_PROPERTIES_PASSING])
def test_basic_fixture_decisions(cert, name):
    request, expected = {**BASIC_CORE, **BASIC_PROPERTIES_PASSING}[name]
    response = cert.post("/access/v1/evaluation", request)
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.body == {"decision": expected}


def test_c_2_2_6_soft_delete_is_not_mapped(cert):
    """Action properties are not part of Rolegate's mapping: soft delete is denied (documented)."""
    request = evaluation(ALICE, {"name": "delete", "properties": {"soft": True}}, RECORD_1)
    assert cert.post("/access/v1/evaluation", request).body == {"decision": False}


MISSING = {
    "missing subject": {"action": READ, "resource": RECORD_1},
    "missing action": {"subject": ALICE, "resource": RECORD_1},
    "missing resource": {"subject": ALICE, "action": READ},
    "subject without type": evaluation({"id": "alice"}, READ, RECORD_1),
    "subject without id": evaluation({"type": "user"}, READ, RECORD_1),
    "action without name": evaluation(ALICE, {}, RECORD_1),
    "resource without type": evaluation(ALICE, READ, {"id": "record-1"}),
    "resource without id": evaluation(ALICE, READ, {"type": "record"}),
    "subject is a string": evaluation("alice", READ, RECORD_1),
    "action name is a number": evaluation(ALICE, {"name": 123}, RECORD_1),
}


@pytest.mark.parametrize("name", MISSING)
def test_c_2_4_bad_requests_are_400(cert, name):
    for path in ("/access/v1/evaluation", "/access/v1/evaluations"):
        response = cert.post(path, MISSING[name])
        assert response.status == 400, path
        assert response.body["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (json.dumps(evaluation(ALICE, READ, RECORD_1)).encode(), "text/plain"),
        (b'{"subject": {', "application/json"),
        (b"", "application/json"),
        (json.dumps(evaluation(ALICE, READ, RECORD_1)).encode(), None),
    ],
    ids=["content type", "malformed", "empty", "no content type"],
)
def test_c_2_4_3_to_5_bodies_that_are_not_json_objects_are_400(cert, data, content_type):
    assert cert.raw("/access/v1/evaluation", data, content_type).status == 400


def test_c_2_5_x_request_id_is_echoed_and_optional(cert):
    request = evaluation(ALICE, READ, RECORD_1)
    echoed = cert.post("/access/v1/evaluation", request, **{"X-Request-ID": "cert-2-5-1"})
    assert echoed.headers["x-request-id"] == "cert-2-5-1"
    assert cert.post("/access/v1/evaluation", request).status == 200


def test_c_2_6_idempotent(cert):
    request = evaluation(BOB, WRITE, RECORD_1)
    answers = {json.dumps(cert.post("/access/v1/evaluation", request).body) for _ in range(5)}
    assert answers == {'{"decision": false}'}


BATCH = {
    "c-3-2-2 fixture decisions in order": (
        {
            "subject": BOB,
            "resource": RECORD_1,
            "evaluations": [{"action": READ}, {"action": WRITE}],
        },
        [True, False],
    ),
    "c-3-2-5 fully specified": (
        {"evaluations": [evaluation(ALICE, READ, RECORD_1), evaluation(BOB, WRITE, RECORD_1)]},
        [True, False],
    ),
    "c-3-2-3 resource properties per item": (
        {
            "subject": ALICE,
            "action": WRITE,
            "evaluations": [
                {"resource": {**RECORD_1, "properties": {"status": "active"}}},
                {"resource": RECORD_2_ARCHIVED},
            ],
        },
        [True, False],
    ),
    "c-3-2-4 subject properties per item": (
        {
            "action": WRITE,
            "resource": RECORD_2_ARCHIVED,
            "evaluations": [{"subject": ALICE}, {"subject": BOB_ADMIN}],
        },
        [False, True],
    ),
    "c-3-2-7 top-level defaults, whole-entity override": (
        {
            "subject": ALICE,
            "action": WRITE,
            "resource": {**RECORD_1, "properties": {"status": "active"}},
            "evaluations": [{}, {"resource": RECORD_2_ARCHIVED}],
        },
        [True, False],
    ),
}


@pytest.mark.parametrize("name", BATCH)
def test_batch_fixture_decisions(cert, name):
    request, expected = BATCH[name]
    response = cert.post("/access/v1/evaluations", request)
    assert response.status == 200
    assert response.body == {"evaluations": [{"decision": value} for value in expected]}


def test_c_3_2_1_and_c_3_2_6_structure_with_context_inheritance(cert):
    request = {
        "subject": ALICE,
        "action": READ,
        "context": {"time": "2025-06-27T18:03-07:00"},
        "evaluations": [
            {"resource": RECORD_1},
            {
                "resource": {"type": "record", "id": "record-2"},
                "context": {"time": "2025-06-27T19:00-07:00", "source": "batch-override"},
            },
        ],
    }
    response = cert.post("/access/v1/evaluations", request)
    assert response.status == 200
    items = response.body["evaluations"]
    assert len(items) == 2 and all(isinstance(item["decision"], bool) for item in items)
    assert items[0] == {"decision": True}
    assert "decision" not in response.body


def test_c_3_4_1_a_failed_item_is_denied_in_place(cert):
    request = {
        "subject": ALICE,
        "action": READ,
        "options": {"evaluations_semantic": "execute_all"},
        "evaluations": [{"resource": RECORD_1}, {}],
    }
    response = cert.post("/access/v1/evaluations", request)
    assert response.status == 200
    first, second = response.body["evaluations"]
    assert first == {"decision": True}
    assert second["decision"] is False
    assert second["context"]["error"]["message"] == "evaluations[1].resource: required"


@pytest.mark.parametrize("evaluations", [None, []], ids=["absent", "empty"])
def test_c_3_4_2_and_3_no_evaluations_is_a_single_evaluation(cert, evaluations):
    request = evaluation(ALICE, READ, RECORD_1)
    if evaluations is not None:
        request["evaluations"] = evaluations
    response = cert.post("/access/v1/evaluations", request)
    assert response.status == 200 and response.body == {"decision": True}


def names(response: Response, key: str) -> set[str]:
    assert response.status == 200, response.text
    assert isinstance(response.body["results"], list)
    return {item[key] for item in response.body["results"]}


SUBJECT_SEARCH = {"subject": {"type": "user"}, "action": READ, "resource": RECORD_1}


def test_c_4_2_subject_search(cert):
    plain = cert.post("/access/v1/search/subject", SUBJECT_SEARCH)
    assert names(plain, "id") >= {"alice", "bob"}
    assert {item["type"] for item in plain.body["results"]} == {"user"}
    with_context = cert.post("/access/v1/search/subject", {**SUBJECT_SEARCH, "context": CONTEXT})
    with_id = cert.post("/access/v1/search/subject", {**SUBJECT_SEARCH, "subject": ALICE})
    assert with_context.body["results"] == with_id.body["results"] == plain.body["results"]
    archived = {"subject": {"type": "user"}, "action": WRITE, "resource": RECORD_2_ARCHIVED}
    assert names(cert.post("/access/v1/search/subject", archived), "id") == {"bob"}  # c-4-2-4


def test_c_4_3_resource_search(cert):
    request = {"subject": ALICE, "action": READ, "resource": {"type": "record"}}
    plain = cert.post("/access/v1/search/resource", request)
    assert names(plain, "id") >= {"record-1"}
    assert {item["type"] for item in plain.body["results"]} == {"record"}
    with_context = cert.post("/access/v1/search/resource", {**request, "context": CONTEXT})
    with_id = cert.post("/access/v1/search/resource", {**request, "resource": RECORD_1})
    assert with_context.body["results"] == with_id.body["results"] == plain.body["results"]
    admin = {"subject": BOB_ADMIN, "action": WRITE, "resource": {"type": "record"}}
    assert names(cert.post("/access/v1/search/resource", admin), "id") == {"record-2"}  # c-4-3-4


def test_c_4_4_action_search(cert):
    request = {"subject": ALICE, "resource": RECORD_1}
    plain = cert.post("/access/v1/search/action", request)
    assert names(plain, "name") == {"read", "write"}
    with_context = cert.post("/access/v1/search/action", {**request, "context": CONTEXT})
    assert with_context.body["results"] == plain.body["results"]
    admin = {"subject": BOB_ADMIN, "resource": RECORD_2_ARCHIVED}
    assert "write" in names(cert.post("/access/v1/search/action", admin), "name")  # c-4-4-3


def test_c_4_5_pagination_follows_next_token(cert):
    first = cert.post("/access/v1/search/subject", {**SUBJECT_SEARCH, "page": {"limit": 1}})
    assert first.status == 200 and len(first.body["results"]) == 1
    token = first.body["page"]["next_token"]
    assert isinstance(token, str) and token
    second = cert.post("/access/v1/search/subject", {**SUBJECT_SEARCH, "page": {"token": token}})
    assert second.status == 200
    assert second.body["page"]["next_token"] == ""
    seen = [item["id"] for item in first.body["results"] + second.body["results"]]
    assert seen == ["alice", "bob"]


@pytest.mark.parametrize(
    ("path", "request_body"),
    [
        (
            "/search/action",
            {"subject": {"type": "user", "id": "nonexistent-user"}, "resource": RECORD_1},
        ),
        (
            "/search/resource",
            {
                "subject": {"type": "user", "id": "nobody"},
                "action": READ,
                "resource": {"type": "record"},
            },
        ),
        (
            "/search/subject",
            {"subject": {"type": "spaceship"}, "action": READ, "resource": RECORD_1},
        ),
        ("/search/resource", {"subject": ALICE, "action": READ, "resource": {"type": "spaceship"}}),
        ("/search/action", {"subject": {"type": "spaceship", "id": "alice"}, "resource": RECORD_1}),
    ],
)
def test_c_4_6_nothing_matches_is_an_empty_list(cert, path, request_body):
    response = cert.post("/access/v1" + path, request_body)
    assert response.status == 200 and response.body["results"] == []


@pytest.mark.parametrize(
    ("path", "request_body"),
    [
        ("/search/subject", {"subject": {"type": "user"}, "resource": RECORD_1}),
        ("/search/resource", {"action": READ, "resource": {"type": "record"}}),
        ("/search/action", {"subject": ALICE}),
        (
            "/search/subject",
            {"subject": {"type": "user"}, "action": READ, "resource": {"type": "record"}},
        ),
        (
            "/search/resource",
            {"subject": {"type": "user"}, "action": READ, "resource": {"type": "record"}},
        ),
        ("/search/action", {"subject": {"type": "user"}, "resource": RECORD_1}),
    ],
)
def test_c_4_7_search_without_its_inputs_is_400(cert, path, request_body):
    assert cert.post("/access/v1" + path, request_body).status == 400


def test_c_6_discovery(cert):
    base = urlsplit(cert.url)
    response = cert.client.get(f"/.well-known/authzen-configuration{base.path}")
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/json")
    metadata = response.body
    assert metadata["policy_decision_point"] == cert.url
    assert metadata["access_evaluation_endpoint"] == f"{cert.url}/access/v1/evaluation"
    for name, path in [
        ("access_evaluations_endpoint", "/evaluations"),
        ("search_subject_endpoint", "/search/subject"),
        ("search_resource_endpoint", "/search/resource"),
        ("search_action_endpoint", "/search/action"),
    ]:
        assert metadata[name] == f"{cert.url}/access/v1{path}"
    # Each endpoint it names answers.
    endpoint = urlsplit(metadata["access_evaluation_endpoint"]).path
    answer = cert.client.post(
        endpoint, evaluation(ALICE, READ, RECORD_1), headers={"Authorization": cert.authorization}
    )
    assert answer.body == {"decision": True}
