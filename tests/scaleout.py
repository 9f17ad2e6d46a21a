"""Helpers for the scale-out tests: a PostgreSQL database per test module, a TCP proxy that plays
"the database is down", and real `rolegate serve` (granian) processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import sqlalchemy as sa
from conftest import SAMPLE_POLICIES, SECRET, HttpClient
from pg import postgres_url_or_skip

from rolegate.config import REPO_ROOT


def wait_for(predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.02):
    """Poll `predicate` until it returns something truthy; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


# --------------------------------------------------------------------------- databases


@contextmanager
def dedicated_database(label: str) -> Iterator[str]:
    """A new PostgreSQL database (`rolegate_test_<label>_<random>`), dropped afterwards."""
    server_url = postgres_url_or_skip()
    name = f"rolegate_test_{label}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def terminate_backends(url: str, application_prefix: str) -> int:
    """pg_terminate_backend every connection whose application_name starts with the prefix."""
    database = sa.make_url(url).database
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            return len(
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND application_name LIKE :prefix "
                        "AND pid <> pg_backend_pid()"
                    ),
                    {"db": database, "prefix": application_prefix + "%"},
                ).all()
            )
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- "database down"


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `stop()` refuses new connections and cuts the
    open ones (what clients see when the database host goes away), `start()` serves again."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._holding = threading.Event()

    def start(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            with suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            server.close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def hold(self) -> None:
        """Black-hole the database: connections stay open and new ones are accepted, but no
        byte goes through either way (packets silently dropped) until `release()`."""
        self._holding.set()

    def release(self) -> None:
        self._holding.clear()

    def _wait_while_held(self) -> None:
        while self._holding.is_set():
            time.sleep(0.01)

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            self._wait_while_held()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._server is not server:
                    client.close()
                    upstream.close()
                    return
                self._connections.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self._wait_while_held()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def url_for(self, url: str) -> str:
        return (
            sa.make_url(url)
            .set(host="127.0.0.1", port=self.port)
            .render_as_string(hide_password=False)
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --------------------------------------------------------------------------- rolegate serve


class ServeProcess:
    """`rolegate serve` (granian workers) in a subprocess on a free port."""

    def __init__(self, tmp_path: Path, database_url: str, *, workers: int = 2, **env: str):
        self.port = free_port()
        self.client = HttpClient("127.0.0.1", self.port)
        self.log_path = tmp_path / f"serve-{self.port}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ROLEGATE_")},
            "ROLEGATE_DATABASE_URL": database_url,
            "ROLEGATE_POLICY_DIR": str(SAMPLE_POLICIES),
            "ROLEGATE_MODEL": str(REPO_ROOT / "model.conf"),
            "ROLEGATE_DATA_DIR": str(tmp_path / "data"),
            "ROLEGATE_JWT_SECRET": SECRET,
            "ROLEGATE_WORKERS": str(workers),
            "ROLEGATE_POLL_INTERVAL": "1",
            **env,
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.process: subprocess.Popen | None = None

    def start(self, *args: str, wait: bool = True) -> ServeProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rolegate.cli", "serve", "--port", str(self.port), *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(self.log_path.parent),
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"rolegate serve exited early:\n{self.log()}")
            try:
                return self.client.get("/readyz").status == 200
            except OSError:
                return False

        wait_for(ready, timeout, 0.1)

    def readyz(self) -> dict:
        return self.client.get("/readyz").body

    def worker_revisions(self, want_workers: int, timeout: float = 15.0) -> dict[int, int]:
        """{worker pid: revision} once `want_workers` distinct workers have answered."""
        seen: dict[int, int] = {}

        def enough():
            body = self.readyz()
            seen[body["worker"]] = body["revision"]
            return len(seen) >= want_workers

        wait_for(enough, timeout, 0.0)
        return seen

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 30.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
