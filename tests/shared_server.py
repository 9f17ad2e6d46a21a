"""One real Rolegate server shared by a test module (tests that only read the sample policy).

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with shared_live_server(tmp_path_factory.mktemp("rolegate")) as server:
        yield server
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import HttpClient, LiveServer, sample_settings, serve_app

from rolegate.api import create_app
from rolegate.core import Rolegate


@contextmanager
def shared_live_server(directory: Path, **changes) -> Iterator[LiveServer]:
    settings = sample_settings(directory, **changes)
    core = Rolegate.from_settings(settings)
    core.start(sync_policies=True)
    server, thread = serve_app(create_app(core=core))
    host, port = server.server_address[:2]
    try:
        yield LiveServer(f"http://{host}:{port}", HttpClient(host, port), core, settings)
    finally:
        server.shutdown()
        thread.join(timeout=5)
        core.close()


@contextmanager
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers (a hung upstream): its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        thread.join(timeout=5)
        listener.close()
        for connection in held:
            connection.close()


def closed_port_url() -> str:
    """The URL of a port nothing listens on (bound, then released)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
