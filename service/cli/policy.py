"""Policy-as-code commands: lint, fmt, diff, import, export, test, changes."""

from __future__ import annotations

import getpass
import json
import os
import sys
from datetime import datetime
from pathlib import Path

import click

from ..config import Settings
from ..engine import Engine
from ..engine.model import ModelShape, classify, load_model
from ..errors import PolicyError
from ..rules import Rule, format_rule
from ..store import PolicyStore, read_policy_dir
from ..store.csvfiles import _policy_files, org_file_name, write_policy_dir
from ..store.policies import ChangeSet

STORE = "store"
LARGE_IMPORT = 5_000
FORMATS = click.Choice(["text", "json"])
DIFF_FORMATS = click.Choice(["text", "json", "markdown"])
TEST_FORMATS = click.Choice(["text", "json", "junit"])

DirArgument = click.Path(path_type=Path, file_okay=False)


def _settings() -> Settings:
    return Settings.from_env()


def _shape(settings: Settings) -> ModelShape:
    return classify(load_model(settings.model_path))


def _policy_dir(settings: Settings, directory: Path | None) -> Path:
    return directory if directory is not None else Path(settings.policy_dir)


def cli_actor() -> str:
    """`cli:<os user>` for the change log."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"cli:{user}"


def _open_store(settings: Settings) -> PolicyStore:
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
    )


# --------------------------------------------------------------------------- lint


@click.command("lint")
@click.argument("directory", required=False, type=DirArgument)
@click.option("--format", "output", type=FORMATS, default="text", show_default=True)
def lint(directory: Path | None, output: str):
    """Check the policy files in DIRECTORY [default: ROLEGATE_POLICY_DIR]. Exit 1 on errors."""
    settings = _settings()
    report = _lint(settings, _policy_dir(settings, directory))
    if output == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for issue in report.issues:
            click.echo(str(issue))
        click.echo(report.summary())
    sys.exit(0 if report.ok else 1)


# --------------------------------------------------------------------------- fmt


@click.command("fmt")
@click.argument("directory", required=False, type=DirArgument)
@click.option("--check", is_flag=True, help="Change nothing; exit 1 when a file would change.")
def fmt(directory: Path | None, check: bool):
    """Rewrite the policy files in canonical order and spacing."""
    from ..policy.fmt import format_policy_dir

    result = format_policy_dir(_policy_dir(_settings(), directory), check=check)
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
    return diff.render_text(max_rules)


@click.command("diff")
@click.argument("old")
@click.argument("new")
@click.option("--format", "output", type=DIFF_FORMATS, default="text", show_default=True)
@click.option(
    "--max-rules",
    default=200,
    show_default=True,
    help="Rules listed per org (0: all; text/markdown).",
)
def diff(old: str, new: str, output: str, max_rules: int):
    """Rule changes from OLD to NEW and who gains or loses access.

    OLD and NEW are policy directories or the word `store` (the configured policy store).
    """
    from ..policy.impact import diff_rules

    settings = _settings()
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


# --------------------------------------------------------------------------- import / export


def _apply_with_progress(store: PolicyStore, changes: ChangeSet, revision: int, actor: str) -> int:
    if len(changes.added) < LARGE_IMPORT:
        return store.apply(changes, actor=actor, expected_revision=revision)
    with click.progressbar(
        length=len(changes.added), label="Writing rules", file=sys.stderr
    ) as bar:
        return store.apply(changes, actor=actor, expected_revision=revision, progress=bar.update)


@click.command("import")
@click.argument("directory", type=DirArgument)
@click.option("--dry-run", is_flag=True, help="Show the diff and impact; change nothing.")
@click.option("--yes", is_flag=True, help="Allow removing rules that exist only in the store.")
@click.option("--max-rules", default=200, show_default=True, help="Rules listed per org (0: all).")
def import_(directory: Path, dry_run: bool, yes: bool, max_rules: int):
    """Make the store equal the policy files in DIRECTORY, in one transaction."""
    from ..policy.impact import diff_rules

    settings = _settings()
    report = _lint(settings, directory)
    for issue in report.issues:
        click.echo(str(issue), err=True)
    if not report.ok:
        raise PolicyError(f"{report.summary()}: nothing imported; fix the errors first")
    wanted = sorted({item.rule for item in report.rules})
    store = _open_store(settings)
    try:
        revision, stored = store.load_all()
        result = diff_rules(
            stored,
            wanted,
            model_path=settings.model_path,
            shape=_shape(settings),
            old_label=f"store@{revision}",
            new_label=str(directory),
        )
        click.echo(result.render_text(max_rules), nl=False)
        if result.empty:
            click.echo(f"The store already equals {directory} (revision {revision}).")
            return
        if dry_run:
            click.echo("Dry run: nothing changed.")
            return
        removed = result.changes.removed
        if removed and not yes:
            click.echo(
                f"{len(removed)} rule(s) exist only in the store and would be removed:", err=True
            )
            for rule in removed:
                click.echo(f"  - {format_rule(rule)}", err=True)
            click.echo("Nothing changed: re-run with --yes to remove them.", err=True)
            sys.exit(1)
        click.echo(
            f"Applying {len(result.changes.added)} additions and {len(removed)} removals...",
            err=True,
        )
        new_revision = _apply_with_progress(store, result.changes, revision, cli_actor())
        click.echo(f"Imported {directory}: store revision {revision} -> {new_revision}.")
    finally:
        store.dispose()


@click.command("export")
@click.argument("directory", type=DirArgument)
@click.option(
    "--clean", is_flag=True, help="Delete policy files of DIRECTORY the export does not write."
)
def export(directory: Path, clean: bool):
    """Write the store as canonical CSV: roles.csv for the templates, <org>.csv per org."""
    from ..rules import domains_of

    settings = _settings()
    store = _open_store(settings)
    try:
        revision, rules = store.load_all()
    finally:
        store.dispose()
    names = {org_file_name(org) for org in domains_of(rules)}
    stale: list[Path] = []
    if directory.is_dir():
        files, _ = _policy_files(directory)
        stale = [path for path in files if path.relative_to(directory).as_posix() not in names]
    if stale and not clean:
        listed = ", ".join(str(path) for path in stale[:5])
        raise PolicyError(
            f"{directory} holds policy files the export would not overwrite ({listed}): they would "
            "change what the directory means; use an empty directory or --clean"
        )
    written = write_policy_dir(directory, rules)
    for path in stale:
        path.unlink()
        click.echo(f"removed {path}")
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"Exported revision {revision}: {len(set(rules))} rules in {len(written)} file(s).")


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
@click.option("--format", "output", type=TEST_FORMATS, default="text", show_default=True)
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
    "--verify", is_flag=True, help="Check the hash chain; exit 1 at the first broken entry."
)
@click.option("--format", "output", type=FORMATS, default="text", show_default=True)
def changes(org: str | None, since: str | None, limit: int, verify: bool, output: str):
    """The policy change log (oldest first), or --verify its hash chain."""
    settings = _settings()
    store = _open_store(settings)
    try:
        if verify:
            broken = store.verify_chain()
            if output == "json":
                click.echo(
                    json.dumps(
                        {"intact": broken is None, "broken": broken.to_dict() if broken else None}
                    )
                )
            elif broken is None:
                click.echo("change log intact")
            else:
                click.echo(
                    f"change log broken at entry {broken.id} (revision {broken.revision}, "
                    f"{broken.operation} {format_rule(broken.rule)}): its hash or its link to "
                    "the previous entry does not match"
                )
            sys.exit(0 if broken is None else 1)
        moment, revision = _parse_since(since)
        entries = store.changes(org=org, since=moment, since_revision=revision, limit=limit)
    finally:
        store.dispose()
    if output == "json":
        click.echo(json.dumps([entry.to_dict() for entry in entries], indent=2))
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
