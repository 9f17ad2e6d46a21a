"""Change propagation across instances: how long until every worker decides with a new revision.

Starts 2 `rolegate serve` instances x 2 workers against one (new, dropped afterwards)
PostgreSQL database, then makes changes through the org admin API of alternating instances. For
each change and each of the 4 workers, the latency is the worker's own `revision_applied_at`
(from /readyz, same machine clock) minus the moment the write request was sent, so it includes
the write itself. Prints p50/p99/max against the 1 s target, and against the revision poll alone
(ROLEGATE_POLL_INTERVAL), the mechanism a deployment without LISTEN/NOTIFY would rely on.

    python bench/propagation.py --changes 100
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from rolegate.config import Settings  # noqa: E402
from rolegate.identity import mint_token  # noqa: E402

SECRET = "bench-secret-" + "x" * 40
TARGET_S = 1.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request(port: int, method: str, path: str, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    connection.request(method, path, body=data, headers=all_headers)
    response = connection.getresponse()
    payload = json.loads(response.read() or b"null")
    connection.close()
    return response.status, payload


def start_instance(
    url: str, workdir: Path, poll: float, sync: bool
) -> tuple[int, subprocess.Popen]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROLEGATE_")},
        "ROLEGATE_DATABASE_URL": url,
        "ROLEGATE_POLICY_DIR": str(ROOT / "policies"),
        "ROLEGATE_MODEL": str(ROOT / "model.conf"),
        "ROLEGATE_DATA_DIR": str(workdir / "data"),
        "ROLEGATE_JWT_SECRET": SECRET,
        "ROLEGATE_WORKERS": "2",
        "ROLEGATE_POLL_INTERVAL": str(poll),
        "ROLEGATE_LOG_LEVEL": "WARNING",
    }
    args = [sys.executable, "-m", "rolegate.cli", "serve", "--port", str(port)]
    if sync:
        args.append("--sync-policies")
    log = (workdir / f"serve-{port}.log").open("wb")
    process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if request(port, "GET", "/readyz")[0] == 200:
                return port, process
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"instance on port {port} did not start; see {log.name}")


def worker_states(port: int, want: int = 2, timeout: float = 10.0) -> dict[int, dict]:
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < want and time.monotonic() < deadline:
        body = request(port, "GET", "/readyz")[1]
        seen[body["worker"]] = body
    return seen


def measure(url: str, workdir: Path, changes: int, poll: float) -> list[float]:
    """Latencies (s) of every (change, worker) pair."""
    ports, processes = [], []
    try:
        for index in range(2):
            port, process = start_instance(url, workdir, poll, sync=index == 0)
            ports.append(port)
            processes.append(process)
        token = mint_token(
            Settings(jwt_secret=SECRET), subject="alice", org="acme", ttl_seconds=3600
        )
        headers = {"Authorization": f"Bearer {token}"}
        latencies: list[float] = []
        for n in range(changes):
            port = ports[n % 2]
            roles = ["viewer"] if n % 2 else ["editor"]
            sent = time.time()
            status, body = request(
                port, "PUT", "/v1/orgs/acme/members/bench-user", {"roles": roles}, headers
            )
            if status != 200:
                raise SystemExit(f"write failed: {status} {body}")
            revision = body["revision"]
            pending = {p: set() for p in ports}
            deadline = time.monotonic() + 30
            while any(len(done) < 2 for done in pending.values()):
                if time.monotonic() > deadline:
                    raise SystemExit(f"revision {revision} did not reach every worker in 30 s")
                for p in ports:
                    body = request(p, "GET", "/readyz")[1]
                    if body["revision"] >= revision and body["worker"] not in pending[p]:
                        pending[p].add(body["worker"])
                        latencies.append(max(0.0, body["revision_applied_at"] - sent))
        return latencies
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(name: str, samples: list[float]) -> dict:
    result = {
        "name": name,
        "samples": len(samples),
        "p50_ms": percentile(samples, 0.5) * 1000,
        "p99_ms": percentile(samples, 0.99) * 1000,
        "max_ms": max(samples) * 1000,
        "mean_ms": statistics.fmean(samples) * 1000,
    }
    print(
        f"{name:<28} n={result['samples']:<4} p50 {result['p50_ms']:8.1f} ms   "
        f"p99 {result['p99_ms']:8.1f} ms   max {result['max_ms']:8.1f} ms"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument(
        "--server",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="PostgreSQL URL used to create (and drop) the benchmark database",
    )
    parser.add_argument("--poll", type=float, default=2.0, help="ROLEGATE_POLL_INTERVAL")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args(argv)

    name = f"rolegate_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.server, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    results = []
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.make_url(args.server).set(database=name).render_as_string(hide_password=False)
        with tempfile.TemporaryDirectory() as tmp:
            print(f"2 instances x 2 workers, {args.changes} changes, poll {args.poll} s")
            notify = measure(url, Path(tmp), args.changes, args.poll)
            results.append(summary("LISTEN/NOTIFY + poll", notify))
        if not args.skip_baseline:
            # Baseline in the same run: the same topology on one SQLite file, where the revision
            # poll alone propagates changes (no LISTEN/NOTIFY).
            with tempfile.TemporaryDirectory() as tmp:
                sqlite_url = f"sqlite:///{Path(tmp) / 'poll.db'}"
                baseline = measure(sqlite_url, Path(tmp), max(10, args.changes // 5), args.poll)
                results.append(summary("poll only (SQLite)", baseline))
            ratio = results[0]["p99_ms"] / results[1]["p99_ms"]
            print(f"p99 ratio notify/poll-only: {ratio:.3f}")
        verdict = "meets" if results[0]["p99_ms"] <= TARGET_S * 1000 else "MISSES"
        print(f"p99 {results[0]['p99_ms']:.1f} ms {verdict} the {TARGET_S * 1000:.0f} ms target")
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
