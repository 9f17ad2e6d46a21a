"""In-process engine benchmark: load time, RSS, bytes per rule, decision latency vs casbin.Enforcer.

Each size runs in a fresh child process (clean RSS): the synthetic dataset (bench/dataset.py) is
bulk-inserted into a SQLite store, loaded with PolicyStore.load_all + Engine.load, then decided.
Casbin's plain Enforcer is measured in the same run on a sample (it scans every rule per call):
300 decisions at 10 orgs, 40 at 100, 4 at 1,000 (each takes seconds), none at
10,000.

    python bench/engine.py                     # 10,100,1000 orgs + a 50,000-member org
    python bench/engine.py --orgs 10,100,1000,10000 --huge-org 50000
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import dataset  # noqa: E402

DECISIONS = 20_000
CASBIN_SAMPLES = {10: 300, 100: 40, 1000: 4}


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    samples = sorted(samples_ns)
    return {
        "p50_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000,
        "n": len(samples),
    }


def requests_for(orgs: list[str], members: int, count: int, seed: int):
    from rolegate.engine import CheckRequest

    rng = random.Random(seed)
    actions = (*dataset.ACTIONS, "approve")
    for _ in range(count):
        org = rng.choice(orgs)
        yield CheckRequest(
            subject=dataset.member_name(org, rng.randrange(members)),
            org=org,
            resource=f"/kind{rng.randrange(12)}/{rng.randrange(100)}",
            action=rng.choice(actions),
        )


def time_calls(function, requests) -> list[int]:
    clock = time.perf_counter_ns
    samples = []
    for request in requests:
        started = clock()
        function(request)
        samples.append(clock() - started)
    return samples


def measure(orgs: int, huge: int, workdir: Path) -> dict:
    """Runs in the child: build, load and decide for one size."""
    from rolegate.engine import Engine
    from rolegate.store import PolicyStore

    url = f"sqlite:///{workdir / f'bench-{orgs}-{huge}.db'}"
    started = time.perf_counter()
    count = dataset.write_sqlite(url, dataset.dataset(orgs, huge_org=huge))
    result: dict = {
        "orgs": orgs,
        "huge_org_members": huge,
        "rules": count,
        "dataset_insert_s": round(time.perf_counter() - started, 1),
    }
    gc.collect()
    rss_before = rss_mb()
    store = PolicyStore.from_url(url)
    engine = Engine.from_model_file(ROOT / "model.conf")
    started = time.perf_counter()
    revision, rules = store.load_all()
    read_s = time.perf_counter() - started
    engine.load(revision, rules)
    result["load_read_s"] = round(read_s, 2)
    result["load_index_s"] = round(time.perf_counter() - started - read_s, 2)
    result["load_total_s"] = round(time.perf_counter() - started, 2)
    result["rss_peak_mb"] = round(rss_mb(), 0)
    del rules
    gc.collect()
    result["rss_mb"] = round(rss_mb(), 0)
    result["bytes_per_rule"] = round((rss_mb() - rss_before) * 2**20 / count)

    names = [dataset.org_name(index) for index in range(orgs)]
    if names:
        requests = list(requests_for(names, dataset.MEMBERS_PER_ORG, DECISIONS, seed=orgs))
        first = time_calls(engine.check, requests)  # many subjects decided for the first time
        again = time_calls(engine.check, requests)
        result["engine_first"] = percentiles(first)
        result["engine"] = percentiles(again)
        result["allowed_share"] = round(
            sum(engine.check(request).allowed for request in requests) / len(requests), 2
        )
        samples = CASBIN_SAMPLES.get(orgs, 0)
        if samples:
            result["casbin"] = casbin_sample(engine, requests[:samples])
            result["casbin_over_engine_p50"] = round(
                result["casbin"]["p50_us"] / result["engine"]["p50_us"], 1
            )
        else:
            result["casbin"] = "skipped (one decision scans all ~2.1M rules: minutes per sample)"
    if huge:
        members = [
            dataset.member_name("huge", index) for index in range(0, huge, max(1, huge // 200))
        ]
        from rolegate.engine import CheckRequest

        firsts = []
        for member in members:
            request = CheckRequest(member, "huge", "/kind1/5", "read")
            started = time.perf_counter_ns()
            engine.check(request)
            firsts.append(time.perf_counter_ns() - started)
        later = time_calls(
            engine.check,
            [CheckRequest(member, "huge", "/kind1/5", "read") for member in members] * 20,
        )
        result["huge_first"] = percentiles(firsts)
        result["huge_later"] = percentiles(later)
    store.dispose()
    return result


def casbin_sample(engine, requests) -> dict:
    import casbin
    from casbin.util import key_match

    enforcer = casbin.Enforcer(str(ROOT / "model.conf"))
    enforcer.add_named_domain_matching_func("g", key_match)
    model = enforcer.get_model()
    for rule in engine.snapshot.rules():
        model.add_policy(rule[0], rule[0], list(rule[1:]))
    enforcer.build_role_links()
    mismatches = 0
    samples = []
    for request in requests:
        values = (request.subject, request.org, request.resource, request.action, request.owner)
        started = time.perf_counter_ns()
        allowed = enforcer.enforce(*values)
        samples.append(time.perf_counter_ns() - started)
        mismatches += allowed != engine.check(request).allowed
    return {**percentiles(samples), "mismatches": mismatches}


def report(result: dict) -> None:
    huge = result["huge_org_members"]
    title = f"{result['orgs']} orgs" + (f" + one org of {huge} members" if huge else "")
    print(f"\n== {title}: {result['rules']:,} rules")
    print(
        f"load: read {result['load_read_s']} s + index {result['load_index_s']} s"
        f" = {result['load_total_s']} s; RSS {result['rss_mb']:.0f} MB"
        f" (peak during load {result['rss_peak_mb']:.0f} MB), {result['bytes_per_rule']} bytes/rule"
    )
    if "engine" in result:
        first, again = result["engine_first"], result["engine"]
        print(
            f"engine: p50 {again['p50_us']:.1f} us, p99 {again['p99_us']:.1f} us"
            f" (first decision per subject: p50 {first['p50_us']:.1f}, p99 {first['p99_us']:.1f})"
            f"; allowed {result['allowed_share']:.0%}"
        )
        casbin = result["casbin"]
        if isinstance(casbin, dict):
            print(
                f"casbin.Enforcer ({casbin['n']} samples): p50 {casbin['p50_us'] / 1000:.2f} ms,"
                f" p99 {casbin['p99_us'] / 1000:.2f} ms; {casbin['mismatches']} answers differ;"
                f" ratio casbin/engine p50 = {result['casbin_over_engine_p50']:,}x"
            )
        else:
            print(f"casbin.Enforcer: {casbin}")
    if "huge_first" in result:
        print(
            f"huge org: first decision per member p50 {result['huge_first']['p50_us']:.1f} us,"
            f" max-ish p99 {result['huge_first']['p99_us']:.1f} us;"
            f" later p50 {result['huge_later']['p50_us']:.1f} us,"
            f" p99 {result['huge_later']['p99_us']:.1f} us"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", default="10,100,1000", help="comma-separated org counts")
    parser.add_argument(
        "--huge-org", type=int, default=50_000, help="members of the huge org (0: skip)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.child:
        orgs, huge, workdir = args.child.split(":", 2)
        print(json.dumps(measure(int(orgs), int(huge), Path(workdir))))
        return 0
    sizes = [(int(size), 0) for size in args.orgs.split(",") if size]
    if args.huge_org:
        sizes.append((0, args.huge_org))
    results = []
    with tempfile.TemporaryDirectory(prefix="rolegate-bench-") as workdir:
        for orgs, huge in sizes:
            output = subprocess.run(
                [sys.executable, __file__, "--child", f"{orgs}:{huge}:{workdir}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = json.loads(output.strip().splitlines()[-1])
            results.append(result)
            report(result)
    measured = [result for result in results if "engine" in result]
    if len(measured) > 1:
        base, top = measured[0], measured[-1]
        print(
            f"\nno growth with orgs: p50 at {top['orgs']} orgs / at {base['orgs']} orgs = "
            f"{top['engine']['p50_us'] / base['engine']['p50_us']:.2f}x, p99 "
            f"{top['engine']['p99_us'] / base['engine']['p99_us']:.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
