"""Real gateways for tests and benchmarks: nginx and Caddy from Debian, configured with the
snippets of docs/gateways.md (only addresses and ports substituted), and a recording upstream.

    with recording_upstream() as upstream:
        with run_gateway("nginx", tmp, rolegate_address, upstream.address) as gateway:
            ...  # http://gateway.address -> auth request to Rolegate -> upstream
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pg import in_ci

from rolegate.config import REPO_ROOT

GATEWAYS_DOC = REPO_ROOT / "docs" / "gateways.md"
ROLEGATE_PLACEHOLDER = "rolegate:8000"
APP_PLACEHOLDER = "app:8080"
BINARIES = {"nginx": "nginx", "caddy": "caddy"}


def snippet(name: str) -> str:
    """The fenced block after `<!-- gateway-snippet: name -->` in docs/gateways.md, verbatim."""
    text = GATEWAYS_DOC.read_text()
    match = re.search(rf"<!-- gateway-snippet: {name} -->\n```[a-z]*\n(.*?)\n```", text, re.S)
    assert match, f"docs/gateways.md has no gateway-snippet {name!r}"
    return match.group(1) + "\n"


def substitute(text: str, replacements: dict[str, str]) -> str:
    """Replace each placeholder (each must occur: the snippet is what the docs show)."""
    for placeholder, value in replacements.items():
        assert placeholder in text, f"the snippet lost its placeholder {placeholder!r}"
        text = text.replace(placeholder, value)
    return text


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def binary_or_skip(name: str) -> str:
    path = shutil.which(BINARIES[name])
    if path is None:
        message = f"{name} is not installed (Debian: apt-get install -y {BINARIES[name]})"
        if in_ci():
            pytest.fail(f"{message}. CI is set, so the gateway tests must run.", pytrace=False)
        pytest.skip(message)
    return path


# --------------------------------------------------------------------------- configurations


def nginx_config(
    directory: Path, rolegate: str, app: str, listen: str, extra_http: str = ""
) -> Path:
    """nginx.conf: the docs' site (in rolegate-site.conf) plus `extra_http` (benchmarks)."""
    site = substitute(
        snippet("nginx"),
        {ROLEGATE_PLACEHOLDER: rolegate, APP_PLACEHOLDER: app, "listen 80;": f"listen {listen};"},
    )
    (directory / "rolegate-site.conf").write_text(site)
    temp_paths = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = directory / "nginx.conf"
    config.write_text(
        f"""# test harness around the docs' snippet (rolegate-site.conf)
daemon off;
master_process off;
worker_processes 1;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp_paths}
    include {directory / "rolegate-site.conf"};
{extra_http}
}}
"""
    )
    return config


def caddy_config(directory: Path, rolegate: str, app: str, listen: str) -> Path:
    site = substitute(
        snippet("caddy"),
        {
            ROLEGATE_PLACEHOLDER: rolegate,
            APP_PLACEHOLDER: app,
            "app.example.com {": f"http://{listen} {{",
        },
    )
    config = directory / "Caddyfile"
    config.write_text("{\n\tadmin off\n\tauto_https off\n}\n\n" + site)
    return config


def gateway_command(name: str, directory: Path, config: Path) -> list[str]:
    binary = binary_or_skip(name)
    if name == "nginx":
        return [binary, "-p", str(directory), "-c", str(config), "-e", str(directory / "error.log")]
    return [binary, "run", "--config", str(config), "--adapter", "caddyfile"]


@dataclass
class Gateway:
    name: str
    address: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        texts = [self.log_path.read_text(errors="replace")] if self.log_path.exists() else []
        error_log = self.log_path.parent / "error.log"
        if error_log.exists():
            texts.append(error_log.read_text(errors="replace"))
        return "\n".join(texts)


def _wait_listening(gateway: Gateway, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            raise AssertionError(f"{gateway.name} exited early:\n{gateway.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{gateway.name} did not listen on {port}:\n{gateway.log()}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextmanager
def run_gateway(
    name: str, directory: Path, rolegate: str, app: str, *, nginx_extra: str = ""
) -> Iterator[Gateway]:
    """nginx or Caddy in the foreground on a free 127.0.0.1 port, stopped afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    listen = f"127.0.0.1:{port}"
    if name == "nginx":
        config = nginx_config(directory, rolegate, app, listen, nginx_extra)
    else:
        config = caddy_config(directory, rolegate, app, listen)
    command = gateway_command(name, directory, config)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(directory),  # Caddy keeps its data and config under here
        "XDG_DATA_HOME": str(directory / "data"),
        "XDG_CONFIG_HOME": str(directory / "config"),
    }
    log_path = directory / f"{name}.out"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=directory
        )
    gateway = Gateway(name, listen, process, log_path)
    try:
        _wait_listening(gateway, port)
        yield gateway
    finally:
        _stop(process)


# --------------------------------------------------------------------------- upstream


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, list[str]]

    def header(self, name: str) -> list[str]:
        return self.headers.get(name.lower(), [])


@dataclass
class Upstream:
    address: str
    requests: list[Seen] = field(default_factory=list)


@contextmanager
def recording_upstream() -> Iterator[Upstream]:
    """A tiny HTTP server that records every request it gets and answers 200 `upstream`."""
    lock = threading.Lock()
    upstream = Upstream("")

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            headers: dict[str, list[str]] = {}
            for name, value in self.headers.items():
                headers.setdefault(name.lower(), []).append(value)
            with lock:
                upstream.requests.append(Seen(self.command, self.path, headers))
            body = b"upstream"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    upstream.address = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield upstream
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
