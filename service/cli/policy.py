"""Policy-as-code commands: lint, fmt, diff, import, export, test, changes."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import click

from ..admin import operator_actor
from ..config import Settings
from ..engine import Engine
from ..engine.model import ModelShape, classify, load_model
from ..errors import PolicyError
from ..rules import Rule, format_rule
from ..store import PolicyStore, read_policy_dir
from ..store.csvfiles import _policy_files, write_policy_dir
from ..store.db import MANAGED_BY_FILES
from ..store.policies import is_api_key_link
from .common import require_store
from .output import emit, format_option, render

STORE = "store"
LARGE_IMPORT = 5_000

DirArgument = click.Path(path_type=Path, file_okay=False)


def _settings() -> Settings:
    return Settings.from_env()


def _shape(settings: Settings) -> ModelShape:
    return classify(load_model(settings.model_path))


def _policy_dir(settings: Settings, directory: Path | None) -> Path:
    return directory if directory is not None else Path(settings.policy_dir)


def cli_actor() -> str:
    """`cli:<os user>` for the change log (the same actor as `rolegate org`'s)."""
    return operator_actor()


def _open_store(settings: Settings, *, create: bool = False) -> PolicyStore:
    """The configured store; only `create` (import) may make a new SQLite database."""
    if not create:
        require_store(settings)
    return PolicyStore.from_url(settings.database_url)


def _load_source(settings: Settings, source: str) -> tuple[str, list[Rule]]:
    """(label, rules) of a directory or, for the literal `store`, of the configured store."""
    if source == STORE:
        store = _open_store(settings)
        try:
            revision, rules = store.load_all()
        finally:
            store.dispose()
        return f"store@{revision}", list(rules)
    return source, [item.rule for item in read_policy_dir(Path(source))]


def _lint(settings: Settings, directory: Path):
    from ..policy.lint import lint_policy_dir

    return lint_policy_dir(
        directory,
        resource_function=_shape(settings).resource_function,
        default_role=settings.default_role,
        allow_regex=settings.allow_regex_patterns,
    )


# --------------------------------------------------------------------------- lint


@click.command("lint")
@click.argument("directory", required=False, type=DirArgument)
@format_option(aliases=("text",))
def lint(directory: Path | None, output: str):
    """Check the policy files in DIRECTORY [default: ROLEGATE_POLICY_DIR]. Exit 1 on errors."""
    settings = _settings()
    report = _lint(settings, _policy_dir(settings, directory))
    if output == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
    elif output == "csv":
        header = ["path", "line", "column", "code", "severity", "message"]
        rows = [[getattr(issue, name) for name in header] for issue in report.issues]
        click.echo(render(header, rows, "csv", None))
    else:
        for issue in report.issues:
            click.echo(str(issue))
        click.echo(report.summary())
    sys.exit(0 if report.ok else 1)


# --------------------------------------------------------------------------- fmt


@click.command("fmt")
@click.argument("directory", required=False, type=DirArgument)
@click.option("--check", is_flag=True, help="Change nothing; exit 1 when a file would change.")
@format_option(aliases=("text",))
def fmt(directory: Path | None, check: bool, output: str):
    """Rewrite the policy files in canonical order and spacing."""
    from ..policy.fmt import format_policy_dir

    result = format_policy_dir(_policy_dir(_settings(), directory), check=check)
    if output != "table":
        rows = [{"path": str(path), "status": "changed"} for path in result.changed]
        rows += [{"path": str(path), "status": "unchanged"} for path in result.unchanged]
        rows += [
            {"path": str(problem.location), "status": f"{problem.code}: {problem.message}"}
            for problem in result.problems
        ]
        emit(rows, output)
        sys.exit(1 if result.problems or (check and result.changed) else 0)
    for problem in result.problems:
        location = problem.location
        click.echo(
            f"{location.path}:{location.line}:{location.column}: {problem.code}: "
            f"{problem.message} (file left unchanged)",
            err=True,
        )
    verb = "would reformat" if check else "reformatted"
    for path in result.changed:
        click.echo(f"{verb} {path}")
    click.echo(
        f"{len(result.changed)} file(s) {verb}, {len(result.unchanged)} unchanged"
        + (f", {len(result.problems)} problem(s)" if result.problems else "")
    )
    sys.exit(1 if result.problems or (check and result.changed) else 0)


# --------------------------------------------------------------------------- diff


def _render(diff, output: str, max_rules: int) -> str:
    if output == "json":
        return json.dumps(diff.to_dict(), indent=2) + "\n"
    if output == "markdown":
        return diff.render_markdown(max_rules)
    if output == "csv":
        header = ["org", "subject", "resource", "action", "as_owner", "change", "before", "after"]
        rows = [[getattr(change, name) for name in header] for change in diff.impact]
        return render(header, rows, "csv", None) + "\n"
    return diff.render_text(max_rules)


def _file_rules(directory: Path) -> tuple[list[Rule], list[Rule]]:
    """(file-managed rules, `managed-by api` seed rules) of a policy directory."""
    sourced = read_policy_dir(directory)
    return (
        [item.rule for item in sourced if item.managed_by == MANAGED_BY_FILES],
        [item.rule for item in sourced if item.managed_by != MANAGED_BY_FILES],
    )


def _as_imported(settings: Settings, directory: Path) -> tuple[str, list[Rule]]:
    """The store as `rolegate import DIRECTORY` would leave it (API-managed rules kept)."""
    files, seeds = _file_rules(directory)
    store = _open_store(settings)
    try:
        owned, plan = store.plan_sync(files, seeds=seeds)
    finally:
        store.dispose()
    after = (set(owned) - set(plan.changes.removed)) | set(plan.changes.added)
    return f"{directory} (imported)", sorted(after)


def fail_on_hits(diff, fail_on: str | None) -> list:
    """The access changes that `--fail-on gain|loss|any` reports (mixed counts as both)."""
    if fail_on is None:
        return []
    wanted = {"gain": {"gain", "mixed"}, "loss": {"loss", "mixed"}}.get(fail_on)
    return [change for change in diff.impact if wanted is None or change.change in wanted]


@click.command("diff")
@click.argument("old")
@click.argument("new")
@format_option(default="table", extra=("markdown",), aliases=("text",))
@click.option(
    "--max-rules",
    default=200,
    show_default=True,
    help="Rules listed per org (0: all; table/markdown).",
)
@click.option(
    "--fail-on",
    type=click.Choice(["gain", "loss", "any"]),
    default=None,
    help="Exit 1 when someone gains (loses, either) access: for CI review of policy changes.",
)
def diff(old: str, new: str, output: str, max_rules: int, fail_on: str | None):
    """Rule changes from OLD to NEW and who gains or loses access.

    OLD and NEW are policy directories or the word `store` (the configured policy store).
    Against `store`, a directory stands for the store after `rolegate import` of it: the rules
    the admin API manages stay on both sides.
    """
    from ..policy.impact import diff_rules

    settings = _settings()
    if (old == STORE) != (new == STORE):
        old_label, old_rules = (
            _load_source(settings, old) if old == STORE else _as_imported(settings, Path(old))
        )
        new_label, new_rules = (
            _load_source(settings, new) if new == STORE else _as_imported(settings, Path(new))
        )
    else:
        old_label, old_rules = _load_source(settings, old)
        new_label, new_rules = _load_source(settings, new)
    result = diff_rules(
        old_rules,
        new_rules,
        model_path=settings.model_path,
        shape=_shape(settings),
        old_label=old_label,
        new_label=new_label,
    )
    click.echo(_render(result, output, max_rules), nl=False)
    hits = fail_on_hits(result, fail_on)
    if hits:
        click.echo(
            f"--fail-on {fail_on}: {len(hits)} access change(s) found, e.g. "
            f"{hits[0].subject} in {hits[0].org}: {hits[0].describe()}",
            err=True,
        )
        sys.exit(1)


# --------------------------------------------------------------------------- import / export


class _Stages:
    """`Reading...`, `Linting...`: one line per stage on stderr, from the first second."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        click.echo(f"[{time.monotonic() - self.started:5.1f}s] {message}", err=True)


def _apply_with_progress(store: PolicyStore, files, seeds, plan, actor: str):
    added = len(plan.changes.added)
    if added < LARGE_IMPORT:
        return store.sync_files(files, seeds=seeds, actor=actor, expected_revision=plan.revision)
    with click.progressbar(length=added, label="Writing rules", file=sys.stderr) as bar:
        return store.sync_files(
            files, seeds=seeds, actor=actor, expected_revision=plan.revision, progress=bar.update
        )


def _plan_lines(plan, max_rules: int) -> list[str]:
    seeded = set(plan.seeded)
    listed: list[tuple[str, Rule]] = [("-", rule) for rule in plan.changes.removed]
    listed += [("+", rule) for rule in plan.changes.added if rule not in seeded]
    listed += [("+ (API-managed seed)", rule) for rule in plan.seeded]
    listed += [("= (now managed by the files)", rule) for rule in plan.adopted]
    listed += [("= (handed to the admin API)", rule) for rule in plan.released]
    limit = len(listed) if max_rules == 0 else max_rules
    lines = [f"  {sign} {format_rule(rule)}" for sign, rule in listed[:limit]]
    if len(listed) > limit:
        lines.append(f"  ... and {len(listed) - limit} more (--max-rules 0 lists all)")
    return lines


@click.command("import")
@click.argument("directory", type=DirArgument)
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--yes", is_flag=True, help="Allow removing file-managed rules gone from the files.")
@click.option("--verbose", is_flag=True, help="Also print the full access impact (slow when big).")
@click.option("--max-rules", default=20, show_default=True, help="Rule changes listed (0: all).")
@format_option(aliases=("text",), extra=())
def import_(directory: Path, dry_run: bool, yes: bool, verbose: bool, max_rules: int, output):
    """Make the store's file-managed rules equal the policy files in DIRECTORY (one transaction).

    Rules managed by the admin API (members added through the API or console, API keys' role
    links) are kept; lines below `# rolegate: managed-by api` are seeds, added once as
    API-managed rules. See docs/policy-as-code.md.
    """
    from ..policy.impact import diff_rules

    stage = _Stages()
    settings = _settings()
    stage(f"Reading and linting {directory}...")
    report = _lint(settings, directory)
    for issue in report.issues:
        click.echo(str(issue), err=True)
    if not report.ok:
        raise PolicyError(f"{report.summary()}: nothing imported; fix the errors first")
    files = sorted({item.rule for item in report.rules if item.managed_by == MANAGED_BY_FILES})
    seeds = sorted({item.rule for item in report.rules if item.managed_by != MANAGED_BY_FILES})
    stage(f"{len(files)} file rules, {len(seeds)} seed rules; comparing with the store...")
    store = _open_store(settings, create=True)
    try:
        owned, plan = store.plan_sync(files, seeds=seeds)
        document: dict = {"directory": str(directory), "plan": plan.to_dict(), "applied": False}
        if output == "table":
            click.echo(f"Import {directory} into store@{plan.revision}: {plan.summary()}.")
            for line in _plan_lines(plan, max_rules):
                click.echo(line)
        if verbose:
            stage("Computing the access impact...")
            after = (set(owned) - set(plan.changes.removed)) | set(plan.changes.added)
            impact = diff_rules(
                owned,
                after,
                model_path=settings.model_path,
                shape=_shape(settings),
                old_label=f"store@{plan.revision}",
                new_label=str(directory),
            )
            document["impact"] = [change.to_dict() for change in impact.impact]
            if output == "table":
                click.echo(impact.render_text(max_rules), nl=False)
        if plan.is_empty():
            _finish(
                output,
                document,
                f"The store already equals {directory} (revision "
                f"{plan.revision}; {plan.kept} API-managed rule(s) kept).",
            )
            return
        if dry_run:
            _finish(output, document, "Dry run: nothing changed.")
            return
        removed = plan.changes.removed
        if removed and not yes:
            click.echo(
                f"{len(removed)} file-managed rule(s) are gone from {directory} and would be "
                "removed:",
                err=True,
            )
            for rule in removed[: max_rules or len(removed)]:
                click.echo(f"  - {format_rule(rule)}", err=True)
            click.echo("Nothing changed: re-run with --yes to remove them.", err=True)
            if output == "json":
                click.echo(json.dumps(document, indent=2))
            sys.exit(1)
        click.echo(
            f"Applying {len(plan.changes.added)} additions and {len(removed)} removals...",
            err=True,
        )
        result = _apply_with_progress(store, files, seeds, plan, cli_actor())
        document.update(applied=True, plan=result.to_dict())
        _finish(
            output,
            document,
            f"Imported {directory}: store revision {plan.revision} -> {result.revision}.",
        )
    finally:
        store.dispose()


def _finish(output: str, document: dict, message: str) -> None:
    if output == "json":
        click.echo(json.dumps(document, indent=2))
    elif output == "csv":
        rows = [[key, value] for key, value in document["plan"].items()]
        click.echo(render(["field", "value"], rows, "csv", None))
    else:
        click.echo(message)


def _export_plan(directory: Path, files: dict[str, bytes], force: bool, clean: bool) -> list[Path]:
    """Files of DIRECTORY the export would overwrite with other content or leave stale;
    raises unless `force` / `clean` allow it. Returns the stale files to delete."""
    existing, _ = _policy_files(directory) if directory.is_dir() else ([], [])
    stale = [path for path in existing if path.relative_to(directory).as_posix() not in files]
    if stale and not clean:
        listed = ", ".join(str(path) for path in stale[:5])
        raise PolicyError(
            f"{directory} holds policy files the export would not overwrite ({listed}): they would "
            "change what the directory means; use an empty directory or --clean"
        )
    changed = [
        directory / name
        for name, content in files.items()
        if (directory / name).is_file() and (directory / name).read_bytes() != content
    ]
    if changed and not force:
        listed = ", ".join(str(path) for path in changed[:5])
        raise PolicyError(
            f"the export would overwrite {len(changed)} file(s) with other content ({listed}); "
            "comments and layout in them would be lost: export to an empty directory, or "
            "--force to overwrite",
            code="would_overwrite",
        )
    return stale


@click.command("export")
@click.argument("directory", type=DirArgument)
@click.option(
    "--clean", is_flag=True, help="Delete policy files of DIRECTORY the export does not write."
)
@click.option("--force", is_flag=True, help="Overwrite files whose content differs.")
@click.option(
    "--include-api",
    is_flag=True,
    help="Also export API-managed rules (in a `# rolegate: managed-by api` section).",
)
@format_option(aliases=("text",))
def export(directory: Path, clean: bool, force: bool, include_api: bool, output: str):
    """Write the store as canonical CSV: roles.csv for the templates, <org>.csv per org.

    File-managed rules always; API-managed rules with --include-api (importing the export then
    changes nothing). API keys' role links are never written: a key lives in the database.
    """
    import tempfile

    settings = _settings()
    store = _open_store(settings)
    try:
        revision, owned = store.load_owners()
    finally:
        store.dispose()
    file_rules = [rule for rule, owner in owned.items() if owner == MANAGED_BY_FILES]
    api_rules = [
        rule
        for rule, owner in owned.items()
        if owner != MANAGED_BY_FILES and not is_api_key_link(rule)
    ]
    key_links = sum(1 for rule in owned if is_api_key_link(rule))
    file_rules = [rule for rule in file_rules if not is_api_key_link(rule)]
    with tempfile.TemporaryDirectory() as scratch:
        written = write_policy_dir(Path(scratch), file_rules, api_rules if include_api else ())
        files = {path.name: path.read_bytes() for path in written}
    stale = _export_plan(directory, files, force, clean)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in files.items():
        target = directory / name
        temporary = directory / f".{name}.tmp"
        temporary.write_bytes(content)
        os.replace(temporary, target)
        paths.append(target)
    for path in stale:
        path.unlink()
    exported = len(file_rules) + (len(api_rules) if include_api else 0)
    left_out = []
    if api_rules and not include_api:
        left_out.append(
            f"{len(api_rules)} API-managed rule(s) not exported (--include-api exports them)"
        )
    if key_links:
        left_out.append(
            f"{key_links} API-key role link(s) not exported (API keys live in the database: "
            "back it up)"
        )
    document = {
        "directory": str(directory),
        "revision": revision,
        "files": [str(path) for path in paths],
        "removed": [str(path) for path in stale],
        "file_rules": len(file_rules),
        "api_rules": len(api_rules) if include_api else 0,
        "api_rules_not_exported": 0 if include_api else len(api_rules),
        "api_key_links_not_exported": key_links,
    }
    if output == "json":
        click.echo(json.dumps(document, indent=2))
        return
    if output == "csv":
        click.echo(render(["field", "value"], list(document.items()), "csv", None))
        return
    for path in stale:
        click.echo(f"removed {path}")
    for path in paths:
        click.echo(f"wrote {path}")
    click.echo(
        f"Exported revision {revision}: {exported} rules in {len(paths)} file(s)"
        + (f" ({len(api_rules)} API-managed)" if include_api and api_rules else "")
        + "."
    )
    for line in left_out:
        click.echo(f"Note: {line}.")


# --------------------------------------------------------------------------- test


@click.command("test")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option(
    "--policy-dir",
    type=DirArgument,
    default=None,
    help="Policy files to test [default: ROLEGATE_POLICY_DIR].",
)
@click.option("--store", "use_store", is_flag=True, help="Test the configured store instead.")
@click.option(
    "--run",
    "run_pattern",
    metavar="REGEX",
    default=None,
    help="Only the cases whose id (`file::name`) this regular expression finds.",
)
@format_option(extra=("junit",), aliases=("text",))
@click.option(
    "--coverage", is_flag=True, help="Also list the rules and role links no case exercised."
)
def test(
    path: Path | None,
    policy_dir: Path | None,
    use_store: bool,
    run_pattern: str | None,
    output: str,
    coverage: bool,
):
    """Run the policy test suites in PATH [default: <policy dir>/tests]. Exit 1 on failure."""
    from ..policy.suite import RENDERERS, coverage_of, load_suites, run_suites, select_cases

    settings = _settings()
    directory = _policy_dir(settings, policy_dir)
    suites = path if path is not None else directory / "tests"
    cases = select_cases(load_suites(suites), run_pattern)
    engine = Engine.from_model_file(settings.model_path, default_role=settings.default_role)
    locations: dict[Rule, str] = {}
    if use_store:
        store = _open_store(settings)
        try:
            engine.load(*store.load_all())
        finally:
            store.dispose()
    else:
        sourced = read_policy_dir(directory)
        for item in sourced:  # file order; a repeated rule keeps its first place
            locations.setdefault(item.rule, str(item.location))
        engine.load(0, [item.rule for item in sourced])
    results = run_suites(cases, engine)
    report = coverage_of(engine.snapshot, results, locations) if coverage else None
    text, ok = RENDERERS[output](results, report)
    click.echo(text, nl=False)
    sys.exit(0 if ok else 1)


# --------------------------------------------------------------------------- changes


def _parse_since(value: str | None) -> tuple[datetime | None, int | None]:
    if value is None:
        return None, None
    if value.isdigit():
        return None, int(value)
    try:
        return datetime.fromisoformat(value), None
    except ValueError:
        raise click.BadParameter(
            "a revision number or an ISO 8601 date/time (2025-01-31 or 2025-01-31T12:00:00Z)",
            param_hint="--since",
        ) from None


@click.command("changes")
@click.option("--org", default=None, help="Only this org's entries (`*` for the templates).")
@click.option("--since", default=None, help="A revision (entries after it) or an ISO date/time.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--verify",
    is_flag=True,
    help="Check the hash chain and its recorded head; exit 1 when broken or truncated.",
)
@format_option(aliases=("text",))
def changes(org: str | None, since: str | None, limit: int, verify: bool, output: str):
    """The policy change log (oldest first), or --verify its hash chain."""
    settings = _settings()
    store = _open_store(settings)
    try:
        if verify:
            verdict = store.verify_log()
            broken, truncated = verdict.broken, verdict.truncated
            if output == "json":
                click.echo(
                    json.dumps(
                        {
                            "intact": verdict.intact,
                            "broken": broken.to_dict() if broken else None,
                            "truncated": truncated.to_dict() if truncated else None,
                        }
                    )
                )
            elif broken is not None:
                click.echo(
                    f"change log broken at entry {broken.id} (revision {broken.revision}, "
                    f"{broken.operation} {format_rule(broken.rule)}): its hash or its link to "
                    "the previous entry does not match"
                )
            elif truncated is not None:
                click.echo(f"change log truncated: {truncated.describe()}")
            else:
                click.echo("change log intact")
            sys.exit(0 if verdict.intact else 1)
        moment, revision = _parse_since(since)
        entries = store.changes(org=org, since=moment, since_revision=revision, limit=limit)
    finally:
        store.dispose()
    if output == "json":
        click.echo(json.dumps([entry.to_dict() for entry in entries], indent=2))
        return
    if output == "csv":
        emit([entry.to_dict() for entry in entries], "csv")
        return
    for entry in entries:
        sign = "+" if entry.operation == "add" else "-"
        click.echo(
            f"r{entry.revision}  {entry.at.isoformat(timespec='seconds')}  {entry.actor}  "
            f"{sign} {format_rule(entry.rule)}"
        )
    if len(entries) == limit:
        click.echo(f"(first {limit} entries shown: use --since or --limit for more)", err=True)


COMMANDS = (lint, fmt, diff, import_, export, test, changes)
