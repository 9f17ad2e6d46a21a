"""Decision replay throughput and memory: `rolegate replay` over a large decision-log file.

Writes N synthetic format-2 records (the sample orgs, their members, owners, token roles) to a
temporary JSON-lines file (and, with --table, to a SQLite `decision_log` table), then replays them
against a candidate that drops one template rule, in this process. Prints records/s, the peak RSS
after a tenth of the records and after all of them (bounded memory: the two stay close), and the
rate of reading alone (JSON decoding) as the baseline in the same run.

    python bench/replay.py [--records 1000000] [--table]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

from rolegate.audit.decision_log import DatabaseSink, format_time
from rolegate.cli.replay import file_records, load_candidate, table_records
from rolegate.config import REPO_ROOT, Settings
from rolegate.policy.replay import candidate_decider, replay
from rolegate.store import make_engine
from rolegate.store.decisions import DecisionRows

SUBJECTS = {
    "acme": ["alice", "bob", "carol", "dave", "ivan", "zed"],
    "globex": ["bob", "erin", "frank", "yann"],
}
ACTIONS = ("read", "update", "delete", "create")
RESOURCES = ("/projects/{}", "/documents/{}", "/documents/finance/{}", "/members")


def synthetic(count: int, seed: int = 7):
    rng = random.Random(seed)
    start = time.time() - 86_400
    for i in range(count):
        org = rng.choice(("acme", "globex"))
        subject = rng.choice(SUBJECTS[org])
        token_roles = ["editor"] if subject in ("zed", "yann") else []
        resource = rng.choice(RESOURCES).format(rng.randrange(1000))
        yield {
            "v": 2,
            "time": format_time(start + i * 0.01),
            "decision_id": f"{i:032x}",
            "subject": subject,
            "org": org,
            "resource": resource,
            "action": rng.choice(ACTIONS),
            "owner": subject if rng.random() < 0.2 else "",
            "token_roles": token_roles,
            "default_role": None,
            "allowed": rng.random() < 0.6,
            "rule": "p, viewer, *, /projects/*, read, allow",
            "path": None,
            "revision": 1,
        }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """The current resident set (Linux), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--table", action="store_true", help="Also replay from a SQLite table.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rolegate-replay-bench-"))
    try:
        log_path = work / "decisions.jsonl"
        with log_path.open("w") as handle:
            for record in synthetic(args.records):
                handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        candidate = work / "candidate"
        shutil.copytree(REPO_ROOT / "policies", candidate)
        roles = candidate / "roles.csv"
        roles.write_text(roles.read_text().replace("p, viewer, *, /projects/*, read, allow\n", ""))
        settings = Settings(model=str(REPO_ROOT / "model.conf"))
        decide = candidate_decider(load_candidate(settings, candidate))
        filters = {"org": None, "since": None, "until": None, "limit": None}

        started = time.perf_counter()
        decoded = sum(1 for _ in file_records(log_path, **filters))
        read_rate = decoded / (time.perf_counter() - started)

        tenth = args.records // 10
        rss_tenth = []

        def note(_count: int, seen=[0]) -> None:  # noqa: B006 - a counter
            seen[0] += _count
            if not rss_tenth and seen[0] >= tenth:
                rss_tenth.append(peak_rss_mb())

        started = time.perf_counter()
        report = replay(file_records(log_path, **filters), decide, progress=note)
        seconds = time.perf_counter() - started
        print(f"records: {report.read:,} ({log_path.stat().st_size / 1e6:.0f} MB file)")
        print(f"decoding alone: {read_rate:,.0f} records/s (baseline)")
        print(
            f"replay from file: {report.read / seconds:,.0f} records/s ({seconds:.1f} s), "
            f"{report.read / seconds / read_rate:.2f}x the decoding rate"
        )
        print(
            f"peak RSS after {tenth:,} records: {rss_tenth[0] if rss_tenth else 0:.0f} MB, "
            f"after {report.read:,}: {peak_rss_mb():.0f} MB"
        )
        print(
            f"flips: {report.flips():,} in {len(report.groups)} groups; "
            f"unchanged {report.unchanged:,}"
        )
        if args.table:
            url = f"sqlite:///{work / 'log.db'}"
            engine = make_engine(url)
            sink = DatabaseSink(DecisionRows(engine), retention_days=0)
            batch_records, lines = [], []
            for record in synthetic(args.records):
                batch_records.append(record)
                lines.append(json.dumps(record, separators=(",", ":")))
                if len(lines) == 50_000:
                    sink.write(batch_records, lines)
                    batch_records, lines = [], []
            if lines:
                sink.write(batch_records, lines)
            del batch_records, lines
            before = rss_mb()
            started = time.perf_counter()
            table_report = replay(table_records(DecisionRows(engine), **filters), decide)
            seconds = time.perf_counter() - started
            print(
                f"replay from the SQLite table: {table_report.read / seconds:,.0f} records/s "
                f"({seconds:.1f} s); same flips: {table_report.flips() == report.flips()}; "
                f"RSS {before:.0f} MB before, {rss_mb():.0f} MB after"
            )
            engine.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
