"""Forward-auth through real nginx: req/s with `auth_request` to Rolegate vs the same nginx
proxying with no auth, in the same run. Not a test: it prints numbers and the ratio.

One nginx process (the docs' snippet from docs/gateways.md, plus a no-auth server and an
upstream that answers `return 200`), `rolegate serve` on SQLite with the sample
policies, wrk on the same machine. Only 127.0.0.1. Needs nginx and wrk (Debian packages).

    python bench/forward_auth.py [--duration 10s] [--connections 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from gateways import free_port, run_gateway  # noqa: E402

from rolegate.config import Settings  # noqa: E402
from rolegate.identity import mint_token  # noqa: E402

SECRET = "bench-secret-" + "y" * 40


def start_rolegate(work: Path, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROLEGATE_")},
        "ROLEGATE_DATABASE_URL": f"sqlite:///{work / 'store.db'}",
        "ROLEGATE_POLICY_DIR": str(ROOT / "policies"),
        "ROLEGATE_MODEL": str(ROOT / "model.conf"),
        "ROLEGATE_DATA_DIR": str(work / "data"),
        "ROLEGATE_JWT_SECRET": SECRET,
        "ROLEGATE_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "rolegate.cli", "serve", "--port", str(port)]
    command += ["--workers", str(workers), "--sync-policies"]
    log = (work / "serve.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"rolegate serve exited:\n{(work / 'serve.log').read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return process, port
        except OSError:
            time.sleep(0.2)
    process.kill()
    sys.exit("rolegate serve did not become ready")


def wrk(url: str, args: argparse.Namespace, token: str | None) -> dict[str, str]:
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}"]
    command += ["--latency"]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    output = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": re.search(r"Requests/sec:\s+([\d.]+)", output).group(1),
        "p50": re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1),
        "p99": re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1),
        "non_2xx": non_2xx.group(1) if non_2xx else "0",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="10s")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="worker processes of Rolegate")
    args = parser.parse_args()
    for binary in ("nginx", "wrk"):
        if shutil.which(binary) is None:
            sys.exit(f"{binary} not found: apt-get install -y {binary}")

    with tempfile.TemporaryDirectory(prefix="rolegate-fa-bench-") as tmp:
        work = Path(tmp)
        rolegate, rolegate_port = start_rolegate(work, args.workers)
        upstream_port, plain_port = free_port(), free_port()
        extra = f"""
    server {{  # the upstream: nginx answering by itself
        listen 127.0.0.1:{upstream_port};
        location / {{ return 200 "upstream"; }}
    }}
    server {{  # the baseline: the same proxying, no auth
        listen 127.0.0.1:{plain_port};
        location / {{ proxy_pass http://127.0.0.1:{upstream_port}; }}
    }}"""
        token = mint_token(Settings(jwt_secret=SECRET), subject="carol", org="acme")
        try:
            with run_gateway(
                "nginx",
                work / "nginx",
                f"127.0.0.1:{rolegate_port}",
                f"127.0.0.1:{upstream_port}",
                nginx_extra=extra,
            ) as gateway:
                authed_url = f"http://{gateway.address}/projects/1"
                request = urllib.request.Request(
                    authed_url, headers={"Authorization": f"Bearer {token}"}
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    assert response.status == 200, "the auth path must allow before we time it"
                print(
                    f"wrk: {args.threads} threads, {args.connections} connections, "
                    f"{args.duration} each; nginx 1 worker; rolegate serve {args.workers} workers"
                )
                runs = [
                    (
                        "nginx, no auth",
                        wrk(f"http://127.0.0.1:{plain_port}/projects/1", args, None),
                    ),
                    ("nginx + forward-auth", wrk(authed_url, args, token)),
                    (
                        "nginx, no auth (again)",
                        wrk(f"http://127.0.0.1:{plain_port}/projects/1", args, None),
                    ),
                ]
        finally:
            rolegate.terminate()
            rolegate.wait(30)
    print(f"{'target':<24} {'req/s':>10} {'p50':>9} {'p99':>9}  non-2xx")
    for name, result in runs:
        print(
            f"{name:<24} {result['rps']:>10} {result['p50']:>9} {result['p99']:>9}  "
            f"{result['non_2xx']}"
        )
    baseline = max(float(runs[0][1]["rps"]), float(runs[2][1]["rps"]))
    print(f"forward-auth / no auth: {float(runs[1][1]['rps']) / baseline:.1%}")


if __name__ == "__main__":
    main()
