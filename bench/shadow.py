"""Shadow evaluation cost: `Rolegate.check` latency without and with a shadow policy.

The same checks run against the sample policies in one process, alternating baseline and shadow
rounds (so machine noise hits both alike), at two loads:

- paced: one decision every `--interval` µs, sleeping in between (a served worker waiting on
  its socket, the GIL released);
- saturated: back to back (the shadow thread competes with the decisions for the GIL: the worst
  case for a single-process server).

Prints p50/p99 per mode and the shadow/baseline ratios, plus the shadow thread's share (decisions
evaluated, dropped). The shadow candidate drops a template rule, so a fifth of the checks
disagree and are logged.

    python bench/shadow.py [--checks 20000] [--rounds 3] [--interval 200]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from rolegate.config import REPO_ROOT, Settings
from rolegate.core import CheckInput, Rolegate
from rolegate.identity import mint_token
from rolegate.shadow import init_app

CHECKS = [
    CheckInput(resource=f"/projects/{i}", action=("read", "update", "delete", "create", "x")[i % 5])
    for i in range(100)
]


class _App:
    extensions: dict = {}


def build(settings: Settings) -> tuple[Rolegate, object]:
    core = Rolegate.from_settings(settings)
    core.start(sync_policies=True)
    init_app(_App(), core)
    principal = core.authenticate(
        "Bearer " + mint_token(settings, subject="bob", org="acme", ttl_seconds=600)
    )
    for check in CHECKS:
        core.check(principal, check)
    if core.shadow is not None:
        core.shadow.flush(30)
    return core, principal


def measure(core: Rolegate, principal, checks: int, interval_us: int) -> list[float]:
    samples = []
    next_at = time.perf_counter()
    for i in range(checks):
        if interval_us:  # idle like a worker waiting on its socket (the GIL is released)
            next_at += interval_us / 1e6
            pause = next_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        begin = time.perf_counter()
        core.check(principal, CHECKS[i % 100])
        samples.append(time.perf_counter() - begin)
    return samples


def percentile(samples: list[float], fraction: float) -> float:
    return statistics.quantiles(samples, n=100)[int(fraction * 100) - 1] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", type=int, default=200, help="µs between paced checks")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rolegate-shadow-bench-"))
    try:
        candidate = work / "candidate"
        shutil.copytree(REPO_ROOT / "policies", candidate)
        roles = candidate / "roles.csv"
        roles.write_text(roles.read_text().replace("p, viewer, *, /projects/*, read, allow\n", ""))
        base = Settings(
            database_url=f"sqlite:///{work / 'store.db'}",
            policy_dir=str(REPO_ROOT / "policies"),
            model=str(REPO_ROOT / "model.conf"),
            data_dir=str(work / "data"),
            jwt_secret="bench-secret-" + "x" * 40,
            decision_log=str(work / "decisions.jsonl"),
        )
        plain, plain_principal = build(base)
        shadowed, shadow_principal = build(base.replace(shadow_policy_dir=str(candidate)))
        for label, interval in (("paced", args.interval), ("saturated", 0)):
            results: dict[str, list[float]] = {"baseline": [], "shadow": []}
            for _ in range(args.rounds):
                results["baseline"] += measure(plain, plain_principal, args.checks, interval)
                results["shadow"] += measure(shadowed, shadow_principal, args.checks, interval)
            p50 = {name: percentile(values, 0.5) for name, values in results.items()}
            p99 = {name: percentile(values, 0.99) for name, values in results.items()}
            extra = f" (one check every {interval} µs)" if interval else ""
            print(f"{label}{extra}, {args.rounds} x {args.checks} checks each:")
            for name in ("baseline", "shadow"):
                print(f"  {name:8}  p50 {p50[name]:6.1f} µs  p99 {p99[name]:6.1f} µs")
            print(
                f"  shadow / baseline: p50 {p50['shadow'] / p50['baseline']:.2f}x, "
                f"p99 {p99['shadow'] / p99['baseline']:.2f}x"
            )
        shadowed.shadow.flush(60)
        status = shadowed.shadow.status()
        print(
            f"shadow thread: {status['evaluated']:,} evaluated, {status['dropped']:,} dropped, "
            f"disagreements {status['disagreements']}"
        )
        plain.close()
        shadowed.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
