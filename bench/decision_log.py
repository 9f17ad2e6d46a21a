"""Decision-log overhead: `Rolegate.check` with no log vs a file (and optionally database) log.

Runs the same checks against the sample policies three ways in one process and prints the
per-decision cost and ratios. The "drained" figure includes waiting for the writer thread to
hand every record to the sink, so the work moved off the request path is counted too.

    python bench/decision_log.py [--checks 50000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rolegate.config import REPO_ROOT, Settings
from rolegate.core import CheckInput, Rolegate
from rolegate.identity import mint_token

CHECKS = [
    CheckInput(resource=f"/projects/{i}", action=("read", "update", "delete", "create")[i % 4])
    for i in range(100)
]


def run(settings: Settings, checks: int) -> tuple[float, float, list[float]]:
    core = Rolegate.from_settings(settings)
    core.start(sync_policies=True)
    principal = core.authenticate(
        "Bearer " + mint_token(settings, subject="bob", org="acme", ttl_seconds=600)
    )
    for check in CHECKS:
        core.check(principal, check)
    if core.decision_log is not None:
        core.decision_log.flush()
    samples = []
    started = time.perf_counter()
    for i in range(checks):
        begin = time.perf_counter()
        core.check(principal, CHECKS[i % 100])
        samples.append(time.perf_counter() - begin)
    on_path = time.perf_counter() - started
    if core.decision_log is not None:
        core.decision_log.flush(timeout=120)
    drained = time.perf_counter() - started
    core.close()
    return on_path, drained, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checks", type=int, default=50_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rolegate-declog-"))
    base = Settings(
        database_url=f"sqlite:///{work / 'store.db'}",
        policy_dir=str(REPO_ROOT / "policies"),
        model=str(REPO_ROOT / "model.conf"),
        data_dir=str(work / "data"),
        jwt_secret="bench-" + "x" * 40,
        log_level="WARNING",
    )
    variants = {
        "no log": base,
        "file log": base.replace(decision_log=str(work / "decisions.jsonl")),
        "file + db log": base.replace(
            decision_log=str(work / "decisions2.jsonl"), decision_log_db=True
        ),
    }
    baseline = None
    print(f"{args.checks:,} checks per variant (core.check, sample policies)")
    for name, settings in variants.items():
        on_path, drained, samples = run(settings, args.checks)
        per_check = drained / args.checks * 1e6
        p50 = statistics.median(samples) * 1e6
        p99 = statistics.quantiles(samples, n=100)[98] * 1e6
        baseline = baseline or per_check
        print(
            f"{name:14} p50 {p50:6.1f} µs  p99 {p99:6.1f} µs  "
            f"throughput incl. draining {per_check:6.1f} µs/decision  "
            f"ratio to no log {per_check / baseline:4.2f}x"
        )


if __name__ == "__main__":
    main()
