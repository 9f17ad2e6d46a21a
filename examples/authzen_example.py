"""Start Rolegate as the AuthZEN PDP of one example (used by `authzen-*/serve`).

    PORT=8080 authzen-todo/serve [DATA_DIR]

Builds a fresh SQLite store under DATA_DIR (default: a temporary directory, removed at exit)
from the example's `model.conf`, `policies/` and `subjects.csv` (if any), mints an API key with
the role `pep` in the example's org, serves on 127.0.0.1:$PORT and, once the service answers,
prints one line on stdout:

    AUTHZEN_PDP_URL=http://127.0.0.1:<port>/orgs/<org> AUTHZEN_PDP_API_KEY=ApiKey rgk_...

It runs until SIGTERM (or SIGINT). Logs go to stderr.
"""

from __future__ import annotations

import http.client
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from rolegate.admin import Caller, OrgAdmin
from rolegate.api import create_app
from rolegate.config import Settings
from rolegate.core import Rolegate
from rolegate.logs import configure_logging

HOST = "127.0.0.1"
DEFAULT_PORT = 8080
PEP_ROLE = "pep"


def settings_for(example: Path, data_dir: Path, overrides: dict[str, Any]) -> Settings:
    attributes = example / "subjects.csv"
    return Settings.from_mapping(
        {
            "database_url": f"sqlite:///{data_dir / 'rolegate.db'}",
            "policy_dir": str(example / "policies"),
            "model": str(example / "model.conf"),
            "subject_attributes": str(attributes) if attributes.is_file() else "",
            "data_dir": str(data_dir / "data"),
            "jwt_secret": secrets.token_urlsafe(48),
            "api_key_secret": secrets.token_urlsafe(48),
            "log_format": "text",
            "log_level": "WARNING",
            **overrides,
        }
    )


def _wait_until_answering(port: int) -> None:
    for _ in range(200):
        connection = http.client.HTTPConnection(HOST, port, timeout=1)
        try:
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        threading.Event().wait(0.05)
    raise SystemExit(f"the service on {HOST}:{port} did not answer")


def serve(example: Path, org: str, overrides: dict[str, Any] | None = None) -> None:
    port = int(os.environ.get("PORT") or DEFAULT_PORT)
    given = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    data_dir = given or Path(tempfile.mkdtemp(prefix="rolegate-authzen-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    if (data_dir / "rolegate.db").exists():
        raise SystemExit(f"{data_dir} already holds a store: give an empty directory")
    settings = settings_for(example, data_dir, overrides or {})
    configure_logging(settings.log_level, settings.log_format)
    core = Rolegate.from_settings(settings)
    try:
        core.start(sync_policies=True)
        key = OrgAdmin(core).create_api_key(
            Caller.operator("authzen-example"), org, "authzen-pep", [PEP_ROLE]
        )
        app = create_app(core=core, follow_store=False)
        server = make_server(HOST, port, app, threaded=True)
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
        signal.signal(signal.SIGINT, lambda *_: threading.Thread(target=server.shutdown).start())
        base = f"http://{HOST}:{server.server_port}"

        def announce() -> None:
            _wait_until_answering(server.server_port)
            line = f"AUTHZEN_PDP_URL={base}/orgs/{org} AUTHZEN_PDP_API_KEY=ApiKey {key['key']}"
            print(line, flush=True)

        threading.Thread(target=announce, daemon=True).start()
        server.serve_forever()
    finally:
        core.close()
        if given is None:
            shutil.rmtree(data_dir, ignore_errors=True)
