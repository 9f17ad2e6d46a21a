"""The serving layer under attack, over real HTTP: hostile numbers and headers, forged log lines,
configuration mistakes, probes that must not learn where the database is, and `min_revision`
requests that must not make anybody wait."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import SECRET
from scaleout import ServeProcess, TcpProxy, dedicated_database, wait_for

from rolegate.api.health import STORE_RELOAD_FAILED
from rolegate.config import Settings
from rolegate.identity import mint_token

HUGE_INTEGER = "1" * 4301


def raw_post(live, path: str, body: bytes, headers: dict[str, str] | None = None):
    return live.client.request(
        "POST",
        path,
        raw=body,
        headers={
            "Content-Type": "application/json",
            **live.auth("alice", "acme"),
            **(headers or {}),
        },
    )


# --------------------------------------------------------------------------- hostile JSON


@pytest.mark.parametrize(
    "path,body",
    [
        ("/v1/check", '{"resource": "/projects/1", "action": "read", "min_revision": %s}'),
        ("/v1/check", '{"resource": %s, "action": "read"}'),
        ("/v1/check/batch", '{"checks": [{"resource": "/x", "action": "read"}], "x": [%s]}'),
        ("/v1/orgs", '{"name": %s}'),
        ("/v1/orgs/acme/members/zoe", '{"roles": [%s]}'),
    ],
)
def test_an_integer_of_4301_digits_is_a_400_in_every_body(live, path, body):
    method = "PUT" if "/members/" in path else "POST"
    response = live.client.request(
        method,
        path,
        raw=(body % HUGE_INTEGER).encode(),
        headers={"Content-Type": "application/json", **live.auth("alice", "acme")},
    )
    assert response.status == 400, response.text
    assert response.body["error"]["code"] == "invalid_request"
    assert "digits" in response.body["error"]["message"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_refused(live, constant):
    body = '{"resource": "/projects/1", "action": "read", "min_revision": ' + constant + "}"
    response = raw_post(live, "/v1/check", body.encode())
    assert response.status == 400 and constant in response.body["error"]["message"]


def test_a_revision_sized_integer_still_parses(live):
    body = json.dumps({"resource": "/projects/1", "action": "read", "min_revision": 1})
    response = raw_post(live, "/v1/check", body.encode())
    assert response.status == 200 and response.body["allowed"] is True


# --------------------------------------------------------------------------- min_revision


def test_min_revision_beyond_the_store_fails_at_once_and_does_not_slow_others(
    make_live_server, settings
):
    live = make_live_server(settings.replace(poll_interval=0, min_revision_wait=30))
    results = []

    def ahead(value: int):
        results.append(live.check("alice", "acme", "/projects/1", "read", min_revision=value))

    threads = [threading.Thread(target=ahead, args=(v,)) for v in [10**9] * 6 + [2**62] * 6]
    for thread in threads:
        thread.start()
    normal = live.check("alice", "acme", "/projects/1", "read")
    for thread in threads:
        thread.join(10)  # a waiting request would hold its thread for min_revision_wait (30 s)
    assert not any(thread.is_alive() for thread in threads)
    assert normal.status == 200 and normal.body["allowed"] is True
    assert len(results) == 12
    for response in results:
        assert response.status in (400, 503), response.text
        assert response.body["error"]["code"] in ("revision_ahead", "revision_unavailable")
    assert any(response.body["error"]["code"] == "revision_ahead" for response in results)
    ready = live.client.get("/readyz")
    assert ready.status == 200 and ready.body["ready"] is True


def test_min_revision_waits_are_bounded_per_worker(make_live_server, settings):
    live = make_live_server(settings.replace(poll_interval=0, min_revision_wait=30))
    core = live.core
    core._reload_lock.acquire()  # a reload in progress that takes long (a slow database)
    try:
        results = []

        def behind():
            target = core.engine.revision + 1
            results.append(live.check("alice", "acme", "/projects/1", "read", min_revision=target))

        waiting = [threading.Thread(target=behind) for _ in range(4)]
        for thread in waiting:
            thread.start()
        wait_for(lambda: core._revision_waiters._value == 0, timeout=10)
        refused = live.check(
            "alice", "acme", "/projects/1", "read", min_revision=core.engine.revision + 1
        )
        assert refused.status == 503 and refused.body["error"]["code"] == "revision_unavailable"
        assert "too many" in refused.body["error"]["message"]
        assert live.client.get("/healthz").status == 200
    finally:
        core._reload_lock.release()
    for thread in waiting:
        thread.join(10)
    assert [response.status for response in results] == [400] * 4


# --------------------------------------------------------------------------- what probes learn


def test_readyz_and_503_do_not_tell_where_the_database_is(make_live_server, settings):
    with dedicated_database("probe") as url:
        import sqlalchemy as sa

        target = sa.make_url(url)
        proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
        proxy.start()
        live = make_live_server(settings.replace(database_url=proxy.url_for(url), poll_interval=0))
        try:
            proxy.stop()
            live.core.refresh()
            ready = live.client.get("/readyz")
            write = live.client.request(
                "PUT",
                "/v1/orgs/acme/members/zoe",
                {"roles": ["viewer"]},
                headers=live.auth("alice", "acme"),
            )
        finally:
            live.core.stop_sync()
            proxy.stop()
    assert ready.status == 200 and ready.body["stale"] is True
    assert ready.body["last_reload_error"] == STORE_RELOAD_FAILED
    assert write.status == 503 and write.body["error"]["code"] == "store_unavailable"
    for text in (ready.text, write.text):
        assert "127.0.0.1" not in text and str(proxy.port) not in text
        assert "psycopg" not in text.lower() and "connection" not in text.lower()


# --------------------------------------------------------------------------- configuration


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rolegate.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "variable,value,expected",
    [
        ("ROLEGATE_LOG_LEVEL", "verbose", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("ROLEGATE_LOG_FORMAT", "xml", "json, text"),
        ("ROLEGATE_DATABASE_URL", "postgres://u@db.internal/rolegate", "postgresql+psycopg://"),
        ("ROLEGATE_DATABASE_URL", "mysql://u@db/rolegate", "postgresql+psycopg://"),
        ("ROLEGATE_DATABASE_URL", "not a url", "sqlite:///"),
        ("ROLEGATE_WORKERS", "two", "whole number"),
        ("ROLEGATE_POLL_INTERVAL", "nan", "finite number"),
    ],
)
def test_configuration_errors_are_one_line_exit_2(env, variable, value, expected):
    import os

    environment = {**os.environ, **env, variable: value}
    result = run_cli(environment, "serve", "--port", "1")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: {variable}: ") and expected in lines[0]
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- log lines


FORGED = "2099-01-01 00:00:00,000 ERROR rolegate [-] FORGED-LINE"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_client_cannot_forge_a_log_line(tmp_path, log_format):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    instance = ServeProcess(tmp_path, url, workers=1, ROLEGATE_LOG_FORMAT=log_format)
    instance.start("--sync-policies")
    try:
        for path in (
            "/x%0A" + FORGED.replace(" ", "%20"),
            "/x%0D" + FORGED.replace(" ", "%20"),
            "/x%C2%85" + FORGED.replace(" ", "%20"),  # NEL
            "/x%E2%80%A8" + FORGED.replace(" ", "%20"),  # LINE SEPARATOR
        ):
            assert instance.client.get(path).status == 404
        instance.client.get("/healthz")
    finally:
        assert instance.terminate() == 0
    lines = instance.log_path.read_text(encoding="utf-8").splitlines()
    assert not [line for line in lines if line.startswith("2099-01-01")]
    assert sum("FORGED-LINE" in line for line in lines) == 4
    if log_format == "json":
        for line in lines:
            if line.startswith("{"):
                json.loads(line)


def test_text_tracebacks_stay_on_one_line():
    import logging

    from rolegate.logs import TextFormatter

    record = logging.LogRecord("rolegate", logging.ERROR, __file__, 1, "a\nb", (), None)
    try:
        raise ValueError("line one\nline two")
    except ValueError:
        record.exc_info = sys.exc_info()
    record.request_id = "-"
    text = TextFormatter().format(record)
    assert "\n" not in text and "line one\\nline two" in text


# --------------------------------------------------------------------------- slow clients


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`rolegate serve`: one worker of two threads, so any held thread would show."""
    tmp = tmp_path_factory.mktemp("served")
    instance = ServeProcess(
        tmp, f"sqlite:///{tmp / 'store.db'}", workers=1, ROLEGATE_THREADS="2"
    ).start("--sync-policies")
    yield instance
    instance.kill()


def open_stalled(port: int, first_bytes: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(first_bytes)
    return sock


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass  # a 408 or similar before the close is fine
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def answered_promptly(instance: ServeProcess) -> None:
    started = time.monotonic()
    assert instance.client.get("/healthz").status == 200
    token = mint_token(Settings(jwt_secret=SECRET), subject="alice", org="acme", ttl_seconds=60)
    check = instance.client.post(
        "/v1/check",
        {"resource": "/projects/1", "action": "read"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert check.status == 200 and check.body["allowed"] is True
    assert time.monotonic() - started < 2.0


def test_clients_that_stall_in_their_headers_hold_no_worker(served):
    stalled = [
        open_stalled(served.port, b"POST /v1/check HTTP/1.1\r\nHost: x\r\n") for _ in range(8)
    ]
    try:
        answered_promptly(served)
        # the header-read timeout (5 s) closes them
        assert all(closed_by_server(sock, within=15) for sock in stalled)
    finally:
        for sock in stalled:
            sock.close()


def test_clients_that_stall_in_their_body_hold_no_worker(served):
    head = (
        b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    stalled = [open_stalled(served.port, head) for _ in range(8)]
    try:
        answered_promptly(served)
    finally:
        for sock in stalled:
            sock.close()


def test_idle_connections_hold_no_worker(served):
    idle = [socket.create_connection(("127.0.0.1", served.port), timeout=10) for _ in range(16)]
    try:
        answered_promptly(served)
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize("size", [16 * 1024 + 1, 64 * 1024, 256 * 1024])
def test_an_oversized_authorization_header_gets_the_json_400(served, size):
    response = served.client.post(
        "/v1/check",
        {"resource": "/projects/1", "action": "read"},
        headers={"Authorization": "Bearer " + "a" * size},
    )
    assert response.status == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.body["error"]["code"] == "invalid_request"


def test_envoy_mode_under_the_shipped_server_decodes_the_path_exactly_once(served):
    """granian passes no raw request target: the path is read from PATH_INFO, decoded once."""

    def envoy(method: str, original: str, subject: str, org: str) -> int:
        token = mint_token(Settings(jwt_secret=SECRET), subject=subject, org=org, ttl_seconds=600)
        response = served.client.request(
            method,
            "/v1/forward-auth/envoy" + original,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status in (200, 403), (original, response.text)
        return response.status

    assert envoy("GET", "/projects/1?x=1", "carol", "acme") == 200
    assert envoy("DELETE", "/projects/1", "carol", "acme") == 403
    assert envoy("GET", "/projects/%C3%A9t%C3%A9", "carol", "acme") == 200
    assert envoy("GET", "/documents/x", "frank", "globex") == 200
    for original in (
        "/documents/x/%2e%2e/finance/q3",  # dot segments after one decode
        "/documents/finance%2Fq3",  # an encoded slash is a slash once decoded
        "//documents/finance/q3",
    ):
        assert envoy("GET", original, "frank", "globex") == 403, original
    # decoded once, not twice: %252e%252e stays the literal segment "%2e%2e", under /documents/x/
    assert envoy("GET", "/documents/x/%252e%252e/finance/q3", "frank", "globex") == 200


# --------------------------------------------------------------------------- the worker's app


def test_workers_stop_when_their_master_is_killed(tmp_path):
    import os
    import signal

    instance = ServeProcess(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", workers=2)
    instance.start("--sync-policies")
    workers = set(instance.worker_revisions(2))
    instance.kill()  # SIGKILL: the master gets no chance to stop them

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited too
            return stat.read().split(") ", 1)[1].startswith("Z")

    try:
        wait_for(lambda: all(gone(pid) for pid in workers), timeout=15)
    finally:
        for pid in workers:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
    with pytest.raises(OSError):
        instance.client.get("/healthz")


def test_each_worker_freezes_its_loaded_policy_out_of_the_collector(live, monkeypatch):
    import gc

    from rolegate import server
    from rolegate.server import ServerOptions, worker_app

    monkeypatch.setattr(server, "stop_with_the_master", lambda: None)  # this is pytest itself

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        app = worker_app(lambda: live_app(live), ServerOptions(timeout=0))
        assert gc.get_freeze_count() > 0
        assert app.app is live_app(live)
    finally:
        gc.unfreeze()


_APPS: dict = {}


def live_app(live):
    from rolegate.api import create_app

    return _APPS.setdefault(id(live), create_app(core=live.core, follow_store=False))


def test_answers_with_a_length_are_handed_over_in_one_chunk_streams_untouched(live):
    from rolegate.server import buffered

    app = live_app(live)
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/healthz",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
    }
    statuses = []
    body = buffered(app, environ, lambda status, headers, exc_info=None: statuses.append(status))
    assert statuses == ["200 OK"] and isinstance(body, list) and len(body) == 1
    assert json.loads(body[0]) == {"status": "ok"}

    def stream(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"a", b"b"])

    streamed = buffered(stream, environ, lambda *args: None)
    assert not isinstance(streamed, list) and b"".join(streamed) == b"ab"
