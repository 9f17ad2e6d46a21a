"""The decision fast path (rolegate.api.fastpath) against the Flask route it stands in front of.

Every request is sent twice to the same app: once through `app.wsgi_app` (the fast path) and once
to Flask's own `wsgi_app` behind it. Status line, headers, body bytes, log records (with the
request id each carries), metric changes, what the decision listeners hear (with the request id and
client address of the decision log's context) and the decision-log lines must be equal. Plain
requests must be answered without Flask; anything else falls through."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import SAMPLE_POLICIES
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder, run_wsgi_app

from rolegate import metrics
from rolegate.api import create_app
from rolegate.api.fastpath import FastPath
from rolegate.audit import REQUEST_CONTEXT
from rolegate.core import MAX_BATCH, Rolegate
from rolegate.identity import mint_token
from rolegate.logs import request_id_var

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


# --------------------------------------------------------------------------- the rig


@dataclass
class Exchange:
    status: str
    headers: list[tuple[str, str]]
    body: bytes
    logs: list[tuple]
    heard: list[tuple]
    metric_changes: dict
    flask_called: bool

    def canonical(self, request_id: str | None) -> str:
        """Everything, with a generated request id replaced by a marker (after checking it is
        one id, the same in the header, the logs and the decision context)."""
        text = repr((self.status, self.headers, self.body, self.logs, self.heard))
        text += repr(sorted(self.metric_changes.items()))
        sent = dict(self.headers).get("X-Request-ID")
        if sent is not None and sent != request_id:
            assert GENERATED_ID.fullmatch(sent), sent
            text = text.replace(sent, "<generated>")
        return text


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = {key: getattr(record, key, None) for key in ("method", "path", "status")}
        self.records.append(
            (
                record.name,
                record.levelname,
                record.getMessage(),
                fields,
                request_id_var.get(),
                record.exc_info[0].__name__ if record.exc_info else None,
            )
        )


def metric_values() -> dict:
    """Every sample that does not depend on timing (latency histograms: their counts only)."""
    values = {}
    for family in metrics.get().registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            timed = sample.name.startswith("rolegate_decision_duration_seconds")
            if timed and not sample.name.endswith("_count"):
                continue
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


@dataclass
class Rig:
    core: Rolegate
    app: Any
    fast: FastPath
    recorder: Recorder
    heard: list[tuple] = field(default_factory=list)

    def listen(self, principal, request, decision, result) -> None:
        from rolegate.api.decisions import decision_json

        self.heard.append(
            (
                principal.subject,
                principal.org,
                request,
                decision.allowed,
                decision_json(result),
                REQUEST_CONTEXT.get(),
                request_id_var.get(),
            )
        )

    def exchange(self, wsgi: Callable, environ: dict[str, Any]) -> Exchange:
        calls = []
        inner = self.fast.next_app

        def counting_flask(environ, start_response):
            calls.append(1)
            return inner(environ, start_response)

        self.fast.next_app = counting_flask
        self.recorder.records.clear()
        self.heard.clear()
        assert self.core.shadow.flush()  # its counters move on its own thread
        before = metric_values()
        try:
            app_iter, status, headers = run_wsgi_app(wsgi, environ, buffered=True)
            body = b"".join(app_iter)
        finally:
            self.fast.next_app = inner
        assert self.core.shadow.flush()
        after = metric_values()
        changes = {key: after[key] - before.get(key, 0) for key in after}
        return Exchange(
            status,
            list(headers.items()),
            body,
            list(self.recorder.records),
            list(self.heard),
            {key: value for key, value in changes.items() if value},
            bool(calls),
        )


@pytest.fixture(autouse=True)
def own_metrics(monkeypatch):
    """This module's metrics in a registry of their own (other modules read absolute values)."""
    monkeypatch.setattr(metrics, "_metrics", None)


@pytest.fixture
def rig(settings, tmp_path, monkeypatch):
    candidate = tmp_path / "candidate"
    shutil.copytree(SAMPLE_POLICIES, candidate)
    roles = candidate / "roles.csv"
    roles.write_text(roles.read_text().replace("p, admin, *, /projects/*, delete, allow\n", ""))
    core = Rolegate.from_settings(
        settings.replace(
            decision_log=str(tmp_path / "decisions.jsonl"), shadow_policy_dir=str(candidate)
        )
    )
    core.start(sync_policies=True)
    monkeypatch.setattr("rolegate.core.new_decision_id", lambda: "d" * 32)
    monkeypatch.setattr("rolegate.core.new_decision_ids", lambda count: ["d" * 32] * count)
    app = create_app(core=core, follow_store=False)
    recorder = Recorder()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(recorder)
    root.setLevel(logging.DEBUG)
    rig = Rig(core, app, app.wsgi_app, recorder)
    KEYS.clear()
    admin = credentials(core, "alice")
    for name, roles in (("editor", ["editor"]), ("pep", ["pep"])):
        created = app.test_client().post(
            "/v1/orgs/acme/api-keys", json={"name": name, "roles": roles}, headers=admin
        )
        assert created.status_code == 201, created.get_json()
        KEYS[name] = created.get_json()["key"]
    core.decision_listeners.append(rig.listen)
    yield rig
    root.removeHandler(recorder)
    root.setLevel(old_level)
    core.close()


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Case:
    path: str = "/v1/check"
    body: bytes = b'{"resource": "/projects/1", "action": "read"}'
    auth: str = "alice"
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str | None = "application/json"
    content_length: str | None = "auto"  # "auto": the body's length; None: no header
    terminated: bool = True  # granian and gunicorn set wsgi.input_terminated
    method: str = "POST"
    remote_addr: str = "10.0.0.7"
    stream: Any = None  # a replacement for wsgi.input

    @property
    def plain(self) -> bool:
        return (
            self.method == "POST"
            and self.path in ("/v1/check", "/v1/check/batch")
            and self.content_type == "application/json"
            and self.content_length == "auto"
            and self.stream is None
            and not any(
                name.lower() in ("cookie", "transfer-encoding", "host") for name, _ in self.headers
            )
        )


KEYS: dict[str, str] = {}  # API keys the rig created: editor, pep


def credentials(core: Rolegate, auth: str) -> dict[str, str]:
    def bearer(subject, org, ttl=600):
        token = mint_token(core.settings, subject=subject, org=org, ttl_seconds=ttl)
        return {"Authorization": f"Bearer {token}"}

    table = {
        "alice": lambda: bearer("alice", "acme"),
        "carol": lambda: bearer("carol", "acme"),
        "no-org": lambda: bearer("alice", None),
        "globex": lambda: bearer("bob", "globex"),
        "expired": lambda: bearer("alice", "acme", ttl=-60),
        "garbage": lambda: {"Authorization": "Bearer abc.def.ghi"},
        "none": lambda: {},
        "basic": lambda: {"Authorization": "Basic YWxpY2U6eA=="},
        "huge": lambda: {"Authorization": "Bearer " + "a" * 17_000},
        "api-key": lambda: {"X-API-Key": "rg_" + "0" * 40},
        "key-editor": lambda: {"Authorization": f"ApiKey {KEYS['editor']}"},
        "key-pep": lambda: {"X-API-Key": KEYS["pep"]},
        "apikey-scheme": lambda: {"Authorization": "ApiKey rg_nope"},
        "both": lambda: {**bearer("alice", "acme"), "X-API-Key": "rg_x"},
    }
    return table[auth]()


def environ_for(core: Rolegate, case: Case) -> dict[str, Any]:
    headers = credentials(core, case.auth)
    path, _, query = case.path.partition("?")
    builder = EnvironBuilder(
        path=path,
        query_string=query or None,
        method=case.method,
        headers=headers,
        data=case.body,
        content_type=case.content_type,
        environ_overrides={"REMOTE_ADDR": case.remote_addr},
    )
    environ = builder.get_environ()
    for name, value in case.headers:  # set raw: hostile values the builder would refuse
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    if case.content_type is None:
        environ.pop("CONTENT_TYPE", None)
    if case.content_length is None:
        environ.pop("CONTENT_LENGTH", None)
    else:
        auto = case.content_length == "auto"
        environ["CONTENT_LENGTH"] = str(len(case.body)) if auto else case.content_length
    if case.terminated:
        environ["wsgi.input_terminated"] = True
    if case.stream is not None:
        environ["wsgi.input"] = case.stream()
    return environ


def assert_same(rig: Rig, case: Case) -> Exchange:
    flask = rig.exchange(rig.fast.next_app, environ_for(rig.core, case))
    fast = rig.exchange(rig.app.wsgi_app, environ_for(rig.core, case))
    sent_id = dict(case.headers).get("X-Request-ID")
    assert fast.canonical(sent_id) == flask.canonical(sent_id), case
    if case.plain:
        assert not fast.flask_called, f"the fast path handed a plain request to Flask: {case}"
    return fast


def check(**fields) -> bytes:
    return json.dumps({"resource": "/projects/1", "action": "read", **fields}).encode()


HUGE = "1" * 4301
CHECK_BODIES = [
    check(),
    check(action="delete"),
    check(explain=True),
    check(action="delete", explain=True),
    check(explain=False),
    check(org="acme"),
    check(org="globex"),
    check(subject="carol"),
    check(owner="alice", resource="/documents/7", action="update"),
    check(min_revision=0),
    check(min_revision=1),
    check(min_revision=10**12),
    check(min_revision=2**63),
    check(min_revision=-1),
    check(min_revision="1"),
    check(unknown=1),
    check(explain="yes"),
    b'{"resource": "/projects/1"}',
    b'{"resource": 1, "action": "read"}',
    b'{"resource": "' + b"x" * 5000 + b'", "action": "read"}',
    b'{"resource": "/p", "action": "read", "min_revision": ' + HUGE.encode() + b"}",
    b'{"resource": "/p", "action": "read", "min_revision": NaN}',
    b'{"resource": "/p", "action": "read", "min_revision": -Infinity}',
    b'{"resource": "/p", "action": "read", "min_revision": 1e400}',
    b'{"resource": "/p", "action": "read", "min_revision": 1.5}',
    b"[]",
    b"null",
    b"",
    b"{",
    b'{"resource": "/p\xff", "action": "read"}',
    b"[" * 100_000,
    '{"resource": "/proj\u00e9cts/1", "action": "read"}'.encode("utf-16"),
    b'{"resource": "/projects/1", "action": "read", "resource": "/projects/2"}',
]
BATCH_BODIES = [
    json.dumps({"checks": [json.loads(check()), json.loads(check(action="delete"))]}).encode(),
    json.dumps({"checks": [json.loads(check(explain=True, action="delete"))] * 3}).encode(),
    json.dumps({"checks": [json.loads(check())], "min_revision": 10**12}).encode(),
    json.dumps({"checks": [json.loads(check(min_revision=1))], "min_revision": 0}).encode(),
    json.dumps({"checks": [json.loads(check()), {"resource": "/x"}]}).encode(),
    json.dumps({"checks": [json.loads(check(org="globex"))]}).encode(),
    json.dumps({"checks": []}).encode(),
    json.dumps({"checks": {}}).encode(),
    json.dumps({"checks": [1]}).encode(),
    json.dumps({"checks": [json.loads(check())], "extra": 1}).encode(),
    json.dumps({"checks": [json.loads(check())] * (MAX_BATCH + 1)}).encode(),
    json.dumps({"checks": [json.loads(check())] * MAX_BATCH}).encode(),
    b'{"checks": [' + HUGE.encode() + b"]}",
    b"[]",
    b"{}",
    b"not json",
]
AUTHS = [
    "alice",
    "carol",
    "no-org",
    "globex",
    "expired",
    "garbage",
    "none",
    "basic",
    "huge",
    "api-key",
    "key-editor",
    "key-pep",
    "apikey-scheme",
    "both",
]


@pytest.mark.parametrize("auth", AUTHS)
def test_every_check_body_under_every_credential_is_answered_alike(rig, auth):
    for body in CHECK_BODIES:
        assert_same(rig, Case(body=body, auth=auth))


@pytest.mark.parametrize("auth", AUTHS)
def test_every_batch_body_under_every_credential_is_answered_alike(rig, auth):
    for body in BATCH_BODIES:
        assert_same(rig, Case(path="/v1/check/batch", body=body, auth=auth))


class FailingStream:
    def __init__(self, error: Exception):
        self.error = error

    def read(self, *_args):
        raise self.error


class ShortStream:
    """A client that disconnects after 10 bytes."""

    def __init__(self, data: bytes):
        self.data = data[:10]

    def read(self, size=-1):
        data, self.data = self.data, b""
        return data


TRANSPORT_CASES = [
    *(
        Case(content_type=value)
        for value in [
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            "APPLICATION/JSON",
            "application/merge-patch+json",
            "application/json; charset=latin-1",
            "text/plain",
            "application/x-www-form-urlencoded",
            "",
            None,
        ]
    ),
    *(
        Case(headers=(("X-Request-ID", value),))
        for value in [
            "req-42",
            "a" * 128,
            "a" * 129,
            "bad id <script>",
            "id\nforged",
            "-leading-dash",
            "ÿ-latin",
        ]
    ),
    Case(headers=(("Cookie", "session=abc"),)),
    Case(headers=(("Transfer-Encoding", "chunked"),)),
    Case(headers=(("Host", "a" * 300),)),
    Case(headers=(("Host", "xn--zz.example:99999"),)),
    Case(headers=(("Authorization", "Bearer x\tq"),), auth="none"),
    Case(content_length=None),
    Case(content_length="+45"),
    Case(content_length=" 45"),
    Case(content_length="0"),
    Case(content_length="1"),
    Case(content_length="99"),
    Case(content_length="99", terminated=False),
    Case(content_length="1", terminated=False),
    Case(content_length="١٢"),
    Case(content_length=str(4 * 1024 * 1024)),
    Case(content_length=str(4 * 1024 * 1024 + 1)),
    Case(content_length="9" * 30),
    Case(terminated=False),
    Case(stream=lambda: FailingStream(OSError("reset by peer"))),
    Case(stream=lambda: FailingStream(RuntimeError("server bug"))),
    Case(stream=lambda: ShortStream(check()), terminated=False),
    Case(stream=lambda: ShortStream(check())),
    Case(method="GET"),
    Case(method="PUT"),
    Case(method="post"),
    Case(method="OPTIONS"),
    Case(path="/v1/check/"),
    Case(path="/v1/check?explain=1"),
    Case(path="/v1/check/batch?x=1", body=BATCH_BODIES[0]),
    Case(path="/v1/Check"),
    Case(path="//v1/check"),
    Case(remote_addr=""),
    Case(remote_addr="::1"),
]


@pytest.mark.parametrize("case", TRANSPORT_CASES, ids=lambda case: repr(case)[:80])
def test_headers_lengths_streams_methods_and_paths_are_answered_alike(rig, case):
    assert_same(rig, case)


def test_a_longer_stream_than_declared_is_read_as_werkzeug_reads_it(rig):
    body = check()
    case = Case(body=body + b"   ", content_length=str(len(body)))
    answer = assert_same(rig, case)
    assert not answer.flask_called and answer.status == "200 OK"


class UntouchableStream:
    """A client that sent its headers and stalls in its body: reading would block."""

    reads = 0

    def read(self, *_args):
        UntouchableStream.reads += 1
        raise AssertionError("the body of an unauthenticated request was read")


@pytest.mark.parametrize("auth", ["none", "garbage", "expired", "huge"])
def test_an_unauthenticated_body_is_never_read(rig, auth):
    answer = assert_same(rig, Case(auth=auth, stream=UntouchableStream))
    assert not answer.flask_called and UntouchableStream.reads == 0
    assert answer.status.split()[0] in ("400", "401")


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = ["resource", "action", "org", "owner", "subject", "explain", "min_revision", "x"]
GOOD = {"resource": "/projects/1", "action": "read", "explain": True, "org": "acme"}


@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chosen=st.dictionaries(
        st.sampled_from(FIELDS), JSON_VALUES | st.sampled_from(list(GOOD.values()))
    ),
    batch=st.booleans(),
    auth=st.sampled_from(["alice", "carol", "no-org", "none"]),
)
def test_random_bodies_are_answered_alike(rig, chosen, batch, auth):
    body = {"resource": "/projects/1", "action": "read", **chosen}
    if batch:
        document = {"checks": [body, GOOD]}
        assert_same(
            rig, Case(path="/v1/check/batch", body=json.dumps(document).encode(), auth=auth)
        )
    else:
        assert_same(rig, Case(body=json.dumps(body).encode(), auth=auth))


# --------------------------------------------------------------------------- side effects


def test_the_decision_log_and_the_shadow_hear_both_paths_alike(rig, tmp_path):
    cases = [
        Case(body=check(), headers=(("X-Request-ID", "same-1"),)),
        Case(body=check(action="delete", explain=True), headers=(("X-Request-ID", "same-2"),)),
        Case(
            path="/v1/check/batch",
            body=BATCH_BODIES[0],
            headers=(("X-Request-ID", "same-3"),),
        ),
    ]
    for case in cases:
        assert_same(rig, case)
    assert rig.core.shadow.flush()
    evaluated = rig.core.shadow.evaluated
    rig.core.decision_log.close()
    lines = (tmp_path / "decisions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    live = [record for record in records if not record.get("shadow")]
    for record in live:
        record.pop("ts", None)
        record.pop("time", None)
    # Per case: Flask's records, then the fast path's: 1 + 1, 1 + 1, 2 + 2.
    assert len(live) == 8 and evaluated == 8
    assert [live[0], live[2], live[4], live[5]] == [live[1], live[3], live[6], live[7]]
    assert live[1]["request_id"] == "same-1" and live[1]["client"] == "10.0.0.7"
    # The candidate lacks admin's delete (alice is acme's admin): each path's delete disagrees.
    shadowed = sorted(record["request_id"] for record in records if record.get("shadow"))
    assert shadowed == ["same-2", "same-2", "same-3", "same-3"]


def test_the_fast_path_steps_aside_for_an_app_it_does_not_know(core, caplog):
    app = create_app(core=core, follow_store=False)

    @app.before_request
    def _teapot():
        from flask import request

        if request.path == "/v1/check":
            return {"error": {"code": "teapot", "message": "short and stout"}}, 418

    token = mint_token(core.settings, subject="alice", org="acme")
    response = app.test_client().post(
        "/v1/check",
        json={"resource": "/projects/1", "action": "read"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 418
    assert app.wsgi_app.active is False
    assert "fast path off" in caplog.text and "before_request" in caplog.text


def test_after_the_first_request_the_app_is_as_locked_as_flask_locks_it(core):
    app = create_app(core=core, follow_store=False)
    token = mint_token(core.settings, subject="alice", org="acme")
    response = app.test_client().post(
        "/v1/check",
        json={"resource": "/projects/1", "action": "read"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200 and app.wsgi_app.active is True
    with pytest.raises(AssertionError, match="can no longer be called"):
        app.before_request(lambda: None)


def test_a_request_signal_listener_gets_every_request_through_flask(core):
    from flask import request_finished

    app = create_app(core=core, follow_store=False)
    seen = []

    def finished(sender, response, **_extra):
        seen.append(response.status_code)

    token = mint_token(core.settings, subject="alice", org="acme")
    with request_finished.connected_to(finished, app):
        response = app.test_client().post(
            "/v1/check",
            json={"resource": "/projects/1", "action": "read"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200 and seen == [200]


def test_the_served_app_has_the_fast_path_in_front(core):
    app = create_app(core=core, follow_store=False)
    assert isinstance(app.wsgi_app, FastPath)
    assert app.test_client().get("/healthz").status_code == 200
