"""The decision fast path against the Flask route and a bare Flask hello, same server, same run.

    python bench/fastpath.py --orgs 100 --rounds 3 --duration 5s

Three servers on granian with `rolegate serve`'s settings (2 workers; `--threads`, default
`rolegate serve`'s own, for all three; the policy loaded once before the fork): the bare Flask
hello of bench/hello_app.py, Rolegate as shipped (the fast path in front of Flask,
rolegate.api.fastpath) and the same Rolegate with the fast path taken off (Flask's own
`wsgi_app`: what shipped before). The store holds bench/dataset.py's shape. Interleaved rounds of
wrk (-t1, -c8, 127.0.0.1 only) on each: a single check, a batch of 100 and the hello. Medians and
ratios are printed; the machine may be shared, so read the ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from cerbos import (  # noqa: E402
    interleaved_rounds,
    median_of,
    medians_table,
    start,
    stop,
    wait_up,
)
from dataset import ACTIONS, KINDS, dataset, member_name, org_name, write_sqlite  # noqa: E402

from rolegate.config import Settings  # noqa: E402


def serve(variant: str, port: int, workers: int) -> None:
    """`rolegate serve` (SQLite store already filled), with or without the fast path."""
    from rolegate.api import create_app
    from rolegate.cli.serve import prepare_metrics_dir, prepare_store
    from rolegate.logs import configure_logging
    from rolegate.server import ServerOptions, run_server

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    engine = prepare_store(settings, sync_policies=False, load=True)

    def build():
        app = create_app(settings, engine=engine)
        if variant == "flask":
            app.wsgi_app = app.wsgi_app.next_app  # Flask's own request path only
        return app

    options = ServerOptions(host="127.0.0.1", port=port, workers=workers, threads=settings.threads)
    prepare_metrics_dir()
    run_server(build, options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", default="5s")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8760)
    parser.add_argument("--threads", type=int, default=None, help="per worker (default: serve's)")
    parser.add_argument("--serve", choices=["fast", "flask"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.workers)
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    args.threads = args.threads or Settings().threads

    work = Path(tempfile.mkdtemp(prefix="rolegate-fastpath-bench-"))
    secret = "bench-" + os.urandom(24).hex()
    (work / "empty-policies").mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROLEGATE_")},
        "ROLEGATE_DATABASE_URL": f"sqlite:///{work / 'store.db'}",
        "ROLEGATE_JWT_SECRET": secret,
        "ROLEGATE_DATA_DIR": str(work / "data"),
        "ROLEGATE_POLICY_DIR": str(work / "empty-policies"),
        "ROLEGATE_LOG_LEVEL": "WARNING",
        "ROLEGATE_THREADS": str(args.threads),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    rules = write_sqlite(env["ROLEGATE_DATABASE_URL"], dataset(args.orgs))
    print(f"dataset: {args.orgs} orgs, {rules} rules")
    ports = {"hello": args.port, "fast": args.port + 1, "flask": args.port + 2}
    processes = []
    try:
        hello = start(
            [sys.executable, str(HERE / "hello_app.py"), "--port", str(ports["hello"])],
            work / "hello.log",
            env,
        )
        processes.append(hello)
        wait_up(f"http://127.0.0.1:{ports['hello']}/", 60, hello)
        for variant in ("fast", "flask"):
            command = [sys.executable, __file__, "--serve", variant, "--port", str(ports[variant])]
            command += ["--workers", str(args.workers)]
            process = start(command, work / f"{variant}.log", env)
            processes.append(process)
            wait_up(f"http://127.0.0.1:{ports[variant]}/readyz", 600, process)

        from rolegate.identity import mint_token

        org = org_name(1)
        token = mint_token(
            Settings.from_env(env), subject=member_name(org, 1), org=org, ttl_seconds=3600
        )
        auth = {"Authorization": f"Bearer {token}"}
        single = {"resource": "/kind3/42", "action": "update"}
        batch = {
            "checks": [
                {"resource": f"/{KINDS[i % len(KINDS)]}/{i}", "action": ACTIONS[i % 4]}
                for i in range(100)
            ]
        }
        shapes = {"flask hello": (f"http://127.0.0.1:{ports['hello']}/", {}, {}, 1)}
        for variant, label in (("fast", "fast path"), ("flask", "Flask route")):
            base = f"http://127.0.0.1:{ports[variant]}"
            shapes[f"single, {label}"] = (f"{base}/v1/check", single, auth, 1)
            shapes[f"batch 100, {label}"] = (f"{base}/v1/check/batch", batch, auth, 100)
        results = interleaved_rounds(shapes, args.rounds, args.duration, work)
        print(report(results, args))
    finally:
        for process in processes:
            stop(process)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(results: dict[str, list[dict]], args) -> str:
    def median(name: str, key: str = "rps") -> float:
        return median_of(results, name, key)

    hello = median("flask hello")
    lines = medians_table(results, args)
    fast_single, flask_single = median("single, fast path"), median("single, Flask route")
    per_round = [
        fast["rps"] / flask["rps"]
        for fast, flask in zip(
            results["single, fast path"], results["single, Flask route"], strict=True
        )
    ]
    lines += [
        "ratios:",
        f"  single / hello: fast path {fast_single / hello:.2f}, "
        f"Flask route {flask_single / hello:.2f} (target >= 0.7)",
        f"  single, fast path / Flask route: {fast_single / flask_single:.2f} "
        f"(per round {', '.join(f'{ratio:.2f}' for ratio in per_round)})",
        f"  batch 100, fast path / Flask route: "
        f"{median('batch 100, fast path') / median('batch 100, Flask route'):.2f}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
