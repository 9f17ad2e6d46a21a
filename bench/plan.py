"""Data-filtering benchmark: plan latency at many orgs, and the filtered query versus fetching
every row and checking each one.

The policy is bench/dataset.py's shape (per org: 4 chained roles, 160 `p` rules with denies, 50
members) at `--orgs` orgs. The subject `planner` holds a role in `--roles` of them (roles cycle
admin/editor/member/viewer), and `platform` holds one in every org (the worst case: a plan over
all orgs). Then a SQLite table of `--rows` documents spread over 100 orgs (half of them the
planner's) is listed both ways, in the same process and run:

- filtered: `POST /v1/plan`'s computation + one `SELECT ... WHERE plan_filter(...)`;
- baseline: `SELECT` every row, `Engine.check` each (in-process, no HTTP: the cheapest form of
  "ask /v1/check per row").

    python bench/plan.py                       # 10,000 orgs, 20 roles, 100,000 rows
    python bench/plan.py --orgs 1000 --rows 20000
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import dataset  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from rolegate.engine import CheckRequest, Engine  # noqa: E402
from rolegate.engine.plan import PlanRequest, member_orgs, plan_condition  # noqa: E402
from rolegate.sqlalchemy import plan_filter  # noqa: E402

TEMPLATE = "/kind5/:id"
ACTION = "update"


def build_engine(orgs: int, roles: int) -> Engine:
    engine = Engine.from_model_file(ROOT / "model.conf")
    rules = list(dataset.dataset(orgs))
    step = max(1, orgs // roles)
    for number in range(roles):
        org = dataset.org_name(number * step)
        rules.append(("g", "planner", dataset.ROLES[number % len(dataset.ROLES)], org))
    rules.extend(("g", "platform", "admin", dataset.org_name(i)) for i in range(orgs))
    started = time.perf_counter()
    engine.load(1, rules)
    seconds = time.perf_counter() - started
    count = len(rules)
    del rules
    gc.collect()  # the load's garbage would otherwise be collected inside the timed plans
    print(f"policy: {orgs:,} orgs, {count:,} rules, loaded in {seconds:.1f} s")
    return engine


def time_plan(engine: Engine, subject: str, repeats: int) -> tuple[float, dict]:
    """Median seconds of what `POST /v1/plan` computes: the member orgs, then the condition.

    The plan also carries `lookup`: the median seconds of the member-org part alone.
    """
    snapshot = engine.snapshot
    timings, lookups = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        orgs = tuple(member_orgs(snapshot, subject))
        found = time.perf_counter()
        condition = plan_condition(snapshot, PlanRequest(subject, ACTION, TEMPLATE, orgs))
        timings.append(time.perf_counter() - started)
        lookups.append(found - started)
    extra = {"lookup": statistics.median(lookups), "fastest": min(timings)}
    return statistics.median(timings), {"orgs": orgs, "condition": condition, **extra}


def time_check(engine: Engine, org: str, repeats: int = 2000) -> float:
    """Median seconds of one engine check for the same subject (the baseline of this run)."""
    request = CheckRequest("planner", org, "/kind5/d1", ACTION)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        engine.check(request)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def fill_table(url: str, engine: Engine, rows: int) -> sa.Table:
    table = sa.Table(
        "documents",
        sa.MetaData(),
        sa.Column("id", sa.String(20), primary_key=True),
        sa.Column("org", sa.String(20), index=True),
        sa.Column("owner", sa.String(40)),
    )
    planner_orgs = member_orgs(engine.snapshot, "planner")
    others = [dataset.org_name(i) for i in range(1, 200, 2)][: 100 - len(planner_orgs)]
    orgs = [*planner_orgs, *others]
    database = sa.create_engine(url)
    table.metadata.create_all(database)
    with database.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    "id": f"d{i}",
                    "org": orgs[i % len(orgs)],
                    "owner": "planner" if i % 7 == 0 else None,
                }
                for i in range(rows)
            ],
        )
    database.dispose()
    return table


def filtered(database, table, engine: Engine) -> list[str]:
    _, plan = time_plan(engine, "planner", 1)
    plan = {"resource": TEMPLATE, "condition": plan["condition"]}
    columns = {"org": table.c.org, "owner": table.c.owner, "id": table.c.id}
    with database.connect() as conn:
        return list(conn.scalars(sa.select(table.c.id).where(plan_filter(plan, columns))))


def checked(database, table, engine: Engine) -> list[str]:
    allowed = []
    with database.connect() as conn:
        for row_id, org, owner in conn.execute(sa.select(table.c.id, table.c.org, table.c.owner)):
            request = CheckRequest("planner", org, f"/kind5/{row_id}", ACTION, owner or "")
            if engine.check(request).allowed:
                allowed.append(row_id)
    return allowed


def best_of(runs: int, function, *args) -> tuple[float, list]:
    best, result = float("inf"), []
    for _ in range(runs):
        started = time.perf_counter()
        result = function(*args)
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=10_000)
    parser.add_argument("--roles", type=int, default=20)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    engine = build_engine(args.orgs, args.roles)
    median, plan = time_plan(engine, "planner", 50)
    check = time_check(engine, plan["orgs"][0])
    print(
        f"plan, subject in {len(plan['orgs'])} orgs: median {median * 1e3:.2f} ms, "
        f"fastest {plan['fastest'] * 1e3:.2f} ms "
        f"(one check: {check * 1e6:.1f} µs; plan = {median / check:.0f} checks; of which "
        f"finding the member orgs {plan['lookup'] * 1e3:.2f} ms)"
    )
    median_all, plan_all = time_plan(engine, "platform", 5)
    print(f"plan, subject in {len(plan_all['orgs']):,} orgs: median {median_all * 1e3:.0f} ms")
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{directory}/rows.db"
        table = fill_table(url, engine, args.rows)
        database = sa.create_engine(url)
        plan_seconds, plan_rows = best_of(3, filtered, database, table, engine)
        check_seconds, check_rows = best_of(3, checked, database, table, engine)
        database.dispose()
    assert sorted(plan_rows) == sorted(check_rows), "the filter and the checks disagree"
    print(f"{args.rows:,} rows, {len(plan_rows):,} allowed (same set both ways)")
    print(
        f"  filtered query: {plan_seconds * 1e3:8.1f} ms  {args.rows / plan_seconds:12,.0f} rows/s"
    )
    check_rate = args.rows / check_seconds
    print(f"  fetch + check:  {check_seconds * 1e3:8.1f} ms  {check_rate:12,.0f} rows/s")
    print(f"  ratio: filtered is {check_seconds / plan_seconds:.1f}x faster")


if __name__ == "__main__":
    main()
