"""A bare Flask `hello` under the same server settings as `rolegate serve`: the HTTP baseline.

python bench/hello_app.py --port 8101 --workers 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask import Flask  # noqa: E402

from rolegate.config import Settings  # noqa: E402
from rolegate.server import ServerOptions, run_server  # noqa: E402


def create_app() -> Flask:
    app = Flask("hello")

    @app.post("/")
    @app.get("/")
    def hello():
        return {"hello": "world"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    settings = Settings.from_env()
    options = ServerOptions(
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        threads=settings.threads,
        timeout=settings.worker_timeout,
        graceful_timeout=settings.graceful_timeout,
    )
    run_server(create_app, options)


if __name__ == "__main__":
    main()
