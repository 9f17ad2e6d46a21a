"""Shared fixtures: a fresh SQLite store per test, the sample policies, real HTTP servers."""

from __future__ import annotations

import http.client
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from rolegate.api import create_app
from rolegate.config import REPO_ROOT, Settings
from rolegate.core import Rolegate
from rolegate.identity import mint_token

SAMPLE_POLICIES = REPO_ROOT / "policies"
SECRET = "test-secret-" + "x" * 40


def pytest_configure(config: pytest.Config) -> None:
    # No test, and no server a test starts, reads or writes the user's own Rolegate home.
    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="rolegate-test-data-home-")


def sample_settings(directory: Path, **changes: Any) -> Settings:
    """The sample policies over a SQLite store in `directory`, signed with SECRET."""
    return Settings(
        database_url=f"sqlite:///{directory / 'rolegate.db'}",
        policy_dir=str(SAMPLE_POLICIES),
        model=str(REPO_ROOT / "model.conf"),
        data_dir=str(directory / "data"),
        jwt_secret=SECRET,
    ).replace(**changes)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return sample_settings(tmp_path)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean CLI environment: only these ROLEGATE_* variables, working dir `tmp_path`."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("ROLEGATE_"):
            monkeypatch.delenv(name)
    values = {
        "ROLEGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "ROLEGATE_MODEL": str(REPO_ROOT / "model.conf"),
        "ROLEGATE_DATA_DIR": str(tmp_path / "data"),
        "ROLEGATE_POLICY_DIR": str(SAMPLE_POLICIES),
        "ROLEGATE_HOME": str(tmp_path / "home"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def core(settings: Settings) -> Iterator[Rolegate]:
    core = Rolegate.from_settings(settings)
    core.start(sync_policies=True)
    yield core
    core.close()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: Any
    text: str


class HttpClient:
    """Talks to a real server over a socket, the way a client service would."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Response:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        all_headers = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        connection.request(method, path, body=data, headers=all_headers)
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        connection.close()
        try:
            parsed = json.loads(text) if text else None
        except json.JSONDecodeError:
            parsed = None
        return Response(
            response.status, {k.lower(): v for k, v in response.getheaders()}, parsed, text
        )

    def get(self, path: str, **kwargs) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs) -> Response:
        return self.request("POST", path, body, **kwargs)


@dataclass
class LiveServer:
    url: str
    client: HttpClient
    core: Rolegate
    settings: Settings

    def token(self, subject: str, org: str | None = None, roles=(), ttl: int = 600) -> str:
        return mint_token(self.settings, subject=subject, org=org, roles=roles, ttl_seconds=ttl)

    def auth(self, subject: str, org: str | None = None, roles=()) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(subject, org, roles)}"}

    def check(
        self, subject: str, token_org: str | None, resource: str, action: str, **extra
    ) -> Response:
        """POST /v1/check with a token for `subject` in `token_org`; `extra` joins the body."""
        body = {"resource": resource, "action": action, **extra}
        return self.client.post("/v1/check", body, headers=self.auth(subject, token_org))


def serve_app(app) -> tuple[Any, threading.Thread]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def make_live_server(tmp_path: Path):
    """Factory: start the real app on 127.0.0.1 with the given settings; stopped after the test."""
    servers = []

    def start(settings: Settings, *, sync_policies: bool = True) -> LiveServer:
        core = Rolegate.from_settings(settings)
        core.start(sync_policies=sync_policies)
        app = create_app(core=core)
        server, _ = serve_app(app)
        servers.append((server, core))
        host, port = server.server_address[:2]
        return LiveServer(f"http://{host}:{port}", HttpClient(host, port), core, settings)

    yield start
    for server, core in servers:
        server.shutdown()
        core.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path) -> Iterator[str]:
    """Run the test twice: on a SQLite file and on a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    from pg import fresh_schema_url, postgres_url_or_skip

    with fresh_schema_url(postgres_url_or_skip()) as url:
        yield url


@pytest.fixture
def live(make_live_server, settings: Settings) -> LiveServer:
    return make_live_server(settings)
