"""Rolegate against the real Cerbos server on the same machine, in the same run.

    python bench/cerbos.py --orgs 1000 --rounds 5 --duration 6s

The Cerbos server binary comes from the npm registry (`npm pack @cerbos/cerbos-linux-x64` into a
scratch folder under /tmp, reused by later runs, never committed). Both get bench/dataset.py's
shape: per org 4 chained roles (admin > editor > member > viewer), 10 resource kinds x 4 actions,
denies for viewers on kind0/kind1 updates and deletes (inherited upwards, as Casbin's role links
do), 50 members. Cerbos gets one scoped resource policy per org and kind (scope = the org) plus
an unscoped base policy per kind, and the caller's role in the request (its model: the principal
carries its roles); Rolegate gets the memberships in its store and a token naming only subject
and org. Before measuring, >= 2,000 random (member, kind, id, action) tuples are decided by both
and must agree.

Then interleaved rounds of wrk (-t1, -c8, only 127.0.0.1): a single check on each, a batch
(Rolegate 100 checks; Cerbos 50 resources x 2 and x 4 actions), and a bare Flask hello under the
same server as `rolegate serve`. Medians and ratios are printed; the machine may be shared, so
read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dataset import (  # noqa: E402
    ACTIONS,
    KINDS,
    MEMBERS_PER_ORG,
    ROLES,
    dataset,
    member_name,
    org_name,
    write_sqlite,
)

CERBOS_PACKAGE = "@cerbos/cerbos-linux-x64"
SCRATCH = Path(tempfile.gettempdir()) / "rolegate-bench-cerbos"
ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- the Cerbos side


def cerbos_binary() -> Path:
    """The server binary from the npm package, unpacked once into the scratch folder."""
    binary = SCRATCH / "package" / "cerbos-linux-x64"
    if binary.is_file():
        return binary
    SCRATCH.mkdir(parents=True, exist_ok=True)
    subprocess.run(["npm", "pack", CERBOS_PACKAGE], cwd=SCRATCH, check=True, capture_output=True)
    [tarball] = SCRATCH.glob("cerbos-cerbos-linux-x64-*.tgz")
    with tarfile.open(tarball) as archive:
        archive.extractall(SCRATCH, filter="data")
    binary.chmod(0o755)
    return binary


def roles_at_or_above(role: str) -> list[str]:
    """The roles that hold `role` through the chain (admin holds everything below it)."""
    return list(ROLES[: ROLES.index(role) + 1])


def role_of(member_index: int) -> str:
    return ROLES[member_index % len(ROLES)]  # as bench/dataset.py assigns them


def kind_rules(kind_number: int) -> list[dict]:
    """One kind's rules: the dataset's allows and denies, with role inheritance spelled out."""
    rules = []
    for role in ROLES:
        rules.append(
            {"actions": list(ACTIONS), "effect": "EFFECT_ALLOW", "roles": roles_at_or_above(role)}
        )
    if kind_number < 2:  # viewers (and so everyone above them) may not update or delete
        rules.append(
            {
                "actions": ["update", "delete"],
                "effect": "EFFECT_DENY",
                "roles": roles_at_or_above("viewer"),
            }
        )
    return rules


def write_cerbos_policies(directory: Path, orgs: int) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for number, kind in enumerate(KINDS):
        base = {
            "apiVersion": "api.cerbos.dev/v1",
            "resourcePolicy": {
                "resource": kind,
                "version": "default",
                "rules": [{"actions": ["*"], "effect": "EFFECT_DENY", "roles": ["nobody"]}],
            },
        }
        (directory / f"{kind}.json").write_text(json.dumps(base))
        rules = kind_rules(number)
        for index in range(orgs):
            org = org_name(index)
            policy = {
                "apiVersion": "api.cerbos.dev/v1",
                "resourcePolicy": {
                    "resource": kind,
                    "version": "default",
                    "scope": org,
                    "scopePermissions": "SCOPE_PERMISSIONS_OVERRIDE_PARENT",
                    "rules": rules,
                },
            }
            (directory / f"{org}-{kind}.json").write_text(json.dumps(policy))
            count += 1
    return count


def cerbos_config(path: Path, policies: Path, port: int) -> None:
    path.write_text(
        "server:\n"
        f'  httpListenAddr: "127.0.0.1:{port}"\n'
        f'  grpcListenAddr: "127.0.0.1:{port + 1}"\n'
        "storage:\n"
        "  driver: disk\n"
        "  disk:\n"
        f"    directory: {policies}\n"
        "    watchForChanges: false\n"
        "audit:\n"
        "  enabled: false\n"
    )


def cerbos_body(org: str, member_index: int, items: list[tuple[str, str, list[str]]]) -> dict:
    """A CheckResources request: the member's role in the principal, resources scoped to org."""
    return {
        "requestId": "bench",
        "principal": {"id": member_name(org, member_index), "roles": [role_of(member_index)]},
        "resources": [
            {"actions": actions, "resource": {"kind": kind, "id": rid, "scope": org}}
            for kind, rid, actions in items
        ],
    }


# --------------------------------------------------------------------------- processes


def post_json(url: str, body: dict, headers: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_up(url: str, timeout: float, process: subprocess.Popen) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited ({process.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up within {timeout} s")


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with log.open("wb") as handle:
        return subprocess.Popen(
            args, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


# --------------------------------------------------------------------------- wrk


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * UNITS[unit]


def wrk(url: str, body: dict, headers: dict[str, str], duration: str, work: Path) -> dict:
    script = work / "wrk.lua"
    lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()]
    lines.append(f"wrk.body = [[{json.dumps(body)}]]")
    script.write_text("\n".join(lines) + "\n")
    output = subprocess.run(
        ["wrk", "-t1", "-c8", f"-d{duration}", "--latency", "-s", str(script), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p99 = milliseconds(re.search(r"\s99%\s+(\S+)", output).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        raise SystemExit(f"{url}: {non2xx.group(1)} non-2xx answers\n{output}")
    return {"rps": rps, "p99_ms": p99}


# --------------------------------------------------------------------------- the run


def random_tuples(orgs: int, count: int, rng: random.Random) -> list[tuple[str, int, str, str]]:
    return [
        (
            org_name(rng.randrange(orgs)),
            rng.randrange(MEMBERS_PER_ORG),
            rng.choice(KINDS),
            rng.choice(ACTIONS),
        )
        for _ in range(count)
    ]


def verify_equivalence(core, cerbos_url: str, tuples, rng: random.Random) -> int:
    """Every tuple decided by both; the number of disagreements (0 expected)."""
    disagreements = 0
    for org, member, kind, action in tuples:
        rid = str(rng.randrange(1, 10_000))
        ours = core.is_allowed(member_name(org, member), org, f"/{kind}/{rid}", action).allowed
        answer = post_json(
            f"{cerbos_url}/api/check/resources", cerbos_body(org, member, [(kind, rid, [action])])
        )
        theirs = answer["results"][0]["actions"][action] == "EFFECT_ALLOW"
        if ours != theirs:
            disagreements += 1
            print(f"  disagree: {org} member {member} {action} /{kind}/{rid}: {ours} vs {theirs}")
    return disagreements


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", default="6s")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=None, help="per worker (default: rolegate serve's own)"
    )
    parser.add_argument("--tuples", type=int, default=2000)
    parser.add_argument("--port", type=int, default=8700)
    args = parser.parse_args(argv)
    if args.threads is None:
        from rolegate.config import Settings

        args.threads = Settings().threads
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")

    work = Path(tempfile.mkdtemp(prefix="rolegate-cerbos-bench-"))
    binary = cerbos_binary()
    rolegate_port, hello_port, cerbos_port = args.port, args.port + 1, args.port + 2
    secret = "bench-" + os.urandom(24).hex()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROLEGATE_")},
        "ROLEGATE_DATABASE_URL": f"sqlite:///{work / 'store.db'}",
        "ROLEGATE_JWT_SECRET": secret,
        "ROLEGATE_DATA_DIR": str(work / "data"),
        "ROLEGATE_POLICY_DIR": str(work / "empty-policies"),
        "ROLEGATE_LOG_LEVEL": "WARNING",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    print(f"dataset: {args.orgs} orgs")
    rules = write_sqlite(env["ROLEGATE_DATABASE_URL"], dataset(args.orgs))
    policies = write_cerbos_policies(work / "cerbos-policies", args.orgs)
    print(
        f"  Rolegate store: {rules} rules; Cerbos: {policies} scoped policies + {len(KINDS)} base"
    )
    cerbos_config(work / "cerbos.yaml", work / "cerbos-policies", cerbos_port)

    processes = []
    try:
        rolegate = start(
            [
                sys.executable,
                "-m",
                "rolegate.cli",
                "serve",
                "--port",
                str(rolegate_port),
                "--workers",
                str(args.workers),
                "--threads",
                str(args.threads),
            ],
            work / "rolegate.log",
            env,
        )
        processes.append(rolegate)
        rolegate_start = wait_up(f"http://127.0.0.1:{rolegate_port}/readyz", 600, rolegate)
        cerbos = start([str(binary), "server", f"--config={work / 'cerbos.yaml'}"], work / "c.log")
        processes.append(cerbos)
        cerbos_start = wait_up(f"http://127.0.0.1:{cerbos_port}/_cerbos/health", 900, cerbos)
        hello = start(
            [sys.executable, str(HERE / "hello_app.py"), "--port", str(hello_port)],
            work / "hello.log",
            {**env, "ROLEGATE_THREADS": str(args.threads)},
        )
        processes.append(hello)
        wait_up(f"http://127.0.0.1:{hello_port}/", 60, hello)
        print(f"start-up to first answer: Rolegate {rolegate_start:.1f} s, ", end="")
        print(f"Cerbos {cerbos_start:.1f} s")

        from rolegate.config import Settings
        from rolegate.core import Rolegate
        from rolegate.identity import mint_token

        settings = Settings.from_env(env)
        core = Rolegate.from_settings(settings, with_identity=False)
        core.load()
        rng = random.Random(12)
        tuples = random_tuples(args.orgs, args.tuples, rng)
        disagreements = verify_equivalence(core, f"http://127.0.0.1:{cerbos_port}", tuples, rng)
        core.close()
        print(f"equivalence: {len(tuples) - disagreements} of {len(tuples)} tuples agree")
        if disagreements:
            return 1

        org, member = org_name(1), 1  # an editor
        token = mint_token(settings, subject=member_name(org, member), org=org, ttl_seconds=3600)
        auth = {"Authorization": f"Bearer {token}"}
        items = [(KINDS[i % len(KINDS)], str(i), ACTIONS) for i in range(50)]
        shapes = {
            "rolegate single": (
                f"http://127.0.0.1:{rolegate_port}/v1/check",
                {"resource": "/kind3/42", "action": "update"},
                auth,
                1,
            ),
            "cerbos single": (
                f"http://127.0.0.1:{cerbos_port}/api/check/resources",
                cerbos_body(org, member, [("kind3", "42", ["update"])]),
                {},
                1,
            ),
            "rolegate batch 100": (
                f"http://127.0.0.1:{rolegate_port}/v1/check/batch",
                {
                    "checks": [
                        {"resource": f"/{kind}/{rid}", "action": ACTIONS[i % 4]}
                        for i, (kind, rid, _) in enumerate(items * 2)
                    ]
                },
                auth,
                100,
            ),
            "cerbos 50x2": (
                f"http://127.0.0.1:{cerbos_port}/api/check/resources",
                cerbos_body(org, member, [(k, r, ["read", "update"]) for k, r, _ in items]),
                {},
                100,
            ),
            "cerbos 50x4": (
                f"http://127.0.0.1:{cerbos_port}/api/check/resources",
                cerbos_body(org, member, [(k, r, list(ACTIONS)) for k, r, _ in items]),
                {},
                200,
            ),
            "flask hello": (f"http://127.0.0.1:{hello_port}/", {}, {}, 1),
        }
        results = interleaved_rounds(shapes, args.rounds, args.duration, work)
        print(report(results, args))
    finally:
        for process in processes:
            stop(process)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def interleaved_rounds(
    shapes: dict[str, tuple[str, dict, dict, int]], rounds: int, duration: str, work: Path
) -> dict[str, list[dict]]:
    """wrk over every shape (url, body, headers, decisions per request) once per round, in turn,
    so machine noise falls on all shapes alike; prints each round's req/s."""
    results: dict[str, list[dict]] = {name: [] for name in shapes}
    for number in range(rounds):
        for name, (url, body, headers, decisions) in shapes.items():
            measured = wrk(url, body, headers, duration, work)
            measured["decisions"] = measured["rps"] * decisions
            results[name].append(measured)
        print(
            f"round {number + 1}: "
            + ", ".join(f"{name} {runs[-1]['rps']:.0f}" for name, runs in results.items())
        )
    return results


def median_of(results: dict[str, list[dict]], name: str, key: str = "rps") -> float:
    """The median over the rounds of one shape's `key` (rps, decisions, p99_ms)."""
    return statistics.median(r[key] for r in results[name])


def medians_table(results: dict[str, list[dict]], args) -> list[str]:
    """The heading and one line of medians per shape, as both benchmarks print them."""
    width = max(len(name) for name in results) + 2
    threads = getattr(args, "threads", None)
    lines = [
        f"\n{args.orgs} orgs, {args.rounds} interleaved rounds of wrk -t1 -c8 -d{args.duration}, "
        f"{args.workers} workers{f' x {threads} threads' if threads else ''}; medians:",
        f"{'shape':{width}} {'req/s':>10} {'decisions/s':>12} {'p99 ms':>8}",
    ]
    for name in results:
        lines.append(
            f"{name:{width}} {median_of(results, name):>10.0f} "
            f"{median_of(results, name, 'decisions'):>12.0f} "
            f"{median_of(results, name, 'p99_ms'):>8.1f}"
        )
    return lines


def report(results: dict[str, list[dict]], args) -> str:
    def median(name: str, key: str) -> float:
        return median_of(results, name, key)

    lines = medians_table(results, args)
    best_cerbos_batch = max(median("cerbos 50x2", "decisions"), median("cerbos 50x4", "decisions"))
    lines += [
        "ratios:",
        f"  single req/s Rolegate / Cerbos: "
        f"{median('rolegate single', 'rps') / median('cerbos single', 'rps'):.2f} (target >= 1.5)",
        f"  single p99 Rolegate / Cerbos: "
        f"{median('rolegate single', 'p99_ms') / median('cerbos single', 'p99_ms'):.2f} "
        "(target <= 1)",
        f"  batch decisions/s Rolegate / best Cerbos shape: "
        f"{median('rolegate batch 100', 'decisions') / best_cerbos_batch:.2f} (target >= 2)",
        f"  single req/s Rolegate / bare Flask hello, same server: "
        f"{median('rolegate single', 'rps') / median('flask hello', 'rps'):.2f} (target >= 0.7)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
