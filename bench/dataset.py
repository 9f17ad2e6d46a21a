"""Synthetic multi-tenant policy: the shape of issue 3, as CSV files and/or straight into a store.

Per org: 4 chained roles (admin > editor > member > viewer: 3 links), 160 `p` rules (4 roles x
10 resource kinds x 4 actions, 8 of them deny) and 50 members: 213 rules, so 10,000 orgs hold
~2.1M rules. `--huge-org MEMBERS` adds one org `huge` with that many members.

    python bench/dataset.py --orgs 1000 --sqlite sqlite:////tmp/rolegate-1k.db
    python bench/dataset.py --orgs 10 --huge-org 50000 --csv /tmp/policies
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402

from rolegate.rules import Rule  # noqa: E402

ROLES = ("admin", "editor", "member", "viewer")  # each inherits the next one
ACTIONS = ("read", "list", "update", "delete")
KINDS = tuple(f"kind{k}" for k in range(10))
# What each role grants on every kind: admin everything, viewer only reading.
ROLE_ACTIONS = {"admin": ACTIONS, "editor": ACTIONS, "member": ACTIONS, "viewer": ACTIONS}
MEMBERS_PER_ORG = 50
INSERT_CHUNK = 50_000


def org_name(index: int) -> str:
    return f"org{index:05d}"


def member_name(org: str, index: int) -> str:
    return f"user{index}@{org}"


def resource_pattern(kind: str, role: str, action: str) -> str:
    """Patterns in keyMatch2 form: a mix of `/:id` and `/*` forms, shared by every org."""
    if action in ("read", "list"):
        return f"/{kind}/*"
    return f"/{kind}/:id"


def org_rules(org: str, members: int = MEMBERS_PER_ORG) -> Iterator[Rule]:
    """The 213 rules of one org (with the default 50 members)."""
    for upper, lower in zip(ROLES, ROLES[1:], strict=False):
        yield ("g", upper, lower, org)
    for index in range(members):
        yield ("g", member_name(org, index), ROLES[index % len(ROLES)], org)
    for role in ROLES:
        for number, kind in enumerate(KINDS):
            for action in ROLE_ACTIONS[role]:
                # Viewers may not delete or update the first two kinds: explicit denies.
                deny = role == "viewer" and number < 2 and action in ("update", "delete")
                yield (
                    "p",
                    role,
                    org,
                    resource_pattern(kind, role, action),
                    action,
                    "deny" if deny else "allow",
                )


def dataset(orgs: int, members: int = MEMBERS_PER_ORG, huge_org: int = 0) -> Iterator[Rule]:
    for index in range(orgs):
        yield from org_rules(org_name(index), members)
    if huge_org:
        yield from org_rules("huge", huge_org)


def write_sqlite(url: str, rules: Iterator[Rule], *, chunk: int = INSERT_CHUNK) -> int:
    """Bulk insert into a fresh store's casbin_rule (executemany per chunk); revision = 1."""
    from rolegate.store import PolicyStore, casbin_rule, policy_state
    from rolegate.store.db import STATE_ROW_ID, VALUE_COLUMNS

    store = PolicyStore.from_url(url)
    count = 0
    try:
        with store.engine.begin() as conn:
            conn.execute(sa.delete(casbin_rule))
            batch: list[dict] = []
            for rule in rules:
                row = {"ptype": rule[0]}
                for position, name in enumerate(VALUE_COLUMNS, start=1):
                    row[name] = rule[position] if position < len(rule) else None
                batch.append(row)
                if len(batch) >= chunk:
                    conn.execute(sa.insert(casbin_rule), batch)
                    count += len(batch)
                    batch = []
            if batch:
                conn.execute(sa.insert(casbin_rule), batch)
                count += len(batch)
            conn.execute(
                sa.update(policy_state).where(policy_state.c.id == STATE_ROW_ID).values(revision=1)
            )
    finally:
        store.dispose()
    return count


def write_csv(directory: Path, rules: Iterator[Rule]) -> int:
    from rolegate.store import write_policy_dir

    rules = list(rules)
    write_policy_dir(directory, rules)
    return len(rules)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, required=True, help="number of orgs")
    parser.add_argument("--members", type=int, default=MEMBERS_PER_ORG, help="members per org")
    parser.add_argument(
        "--huge-org",
        type=int,
        default=0,
        metavar="MEMBERS",
        help="add one org `huge` with this many members",
    )
    parser.add_argument("--csv", type=Path, help="write policy CSV files into this directory")
    parser.add_argument("--sqlite", help="bulk-insert into this store URL (its rules replaced)")
    args = parser.parse_args(argv)
    if not args.csv and not args.sqlite:
        parser.error("give --csv DIR and/or --sqlite URL")
    if args.csv:
        started = time.perf_counter()
        count = write_csv(args.csv, dataset(args.orgs, args.members, args.huge_org))
        print(f"{count} rules written to {args.csv} in {time.perf_counter() - started:.1f} s")
    if args.sqlite:
        started = time.perf_counter()
        count = write_sqlite(args.sqlite, dataset(args.orgs, args.members, args.huge_org))
        print(f"{count} rules inserted into {args.sqlite} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
