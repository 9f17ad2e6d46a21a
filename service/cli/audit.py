"""`rolegate permissions | who-can | matrix | decisions`: the audit views on the command line.

They read the configured store (or `--policy-dir`), like `rolegate check`, and print JSON, CSV
or an aligned text table (`--format`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ..audit import (
    access_matrix,
    effective_permissions,
    require_org,
    require_subject,
    who_can,
)
from ..audit.decision_log import DecisionLog
from ..config import Settings
from ..core import validate_org, validate_text
from ..engine import reads
from ..errors import ConfigError
from .common import org_first
from .decide import engine_for
from .output import format_option, render, terminal_width


def render_wide(header: Sequence[str], rows: Sequence[Sequence[Any]], width: int) -> str:
    """A text table that fits `width`: column blocks that each repeat the first column."""
    full = render(header, rows, "table", None)
    if max((len(line) for line in full.splitlines()), default=0) <= width or len(header) < 3:
        return full
    blocks, start = [], 1
    while start < len(header):
        end = start + 1
        while end < len(header):
            candidate = render(
                [header[0], *header[start : end + 1]],
                [[row[0], *row[start : end + 1]] for row in rows],
                "table",
                None,
            )
            if max(len(line) for line in candidate.splitlines()) > width:
                break
            end += 1
        blocks.append(
            render(
                [header[0], *header[start:end]],
                [[row[0], *row[start:end]] for row in rows],
                "table",
                None,
            )
        )
        start = end
    note = (
        f"({len(header) - 1} columns in {len(blocks)} blocks to fit {width} characters; "
        "`--format csv` gives one table for a spreadsheet)"
    )
    return "\n\n".join(blocks) + "\n" + note


_policy_dir_option = click.option(
    "--policy-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Read these CSV files instead of the store.",
)
_format_option = format_option()


@click.command("permissions")
@click.argument("org")
@click.argument("subject")
@_policy_dir_option
@_format_option
def permissions(org: str, subject: str, policy_dir: Path | None, output: str) -> None:
    """Every rule SUBJECT holds in ORG, with the role path that grants it.

    (The old order SUBJECT ORG still works when it is unambiguous.)
    """
    engine = engine_for(Settings.from_env(), policy_dir)
    snapshot = engine.snapshot
    org, subject = org_first(snapshot, org, subject)
    validate_text(subject, "subject")
    validate_org(org)
    require_org(snapshot, org)
    require_subject(snapshot, org, subject)
    held = [permission.to_dict() for permission in effective_permissions(snapshot, subject, org)]
    header = ["resource", "action", "effect", "condition", "path", "rule"]
    rows = [[item[name] for name in header] for item in held]
    document = {"org": org, "subject": subject, "revision": snapshot.revision, "permissions": held}
    click.echo(render(header, rows, output, document))


@click.command("who-can")
@click.argument("org")
@click.argument("resource")
@click.argument("action")
@_policy_dir_option
@_format_option
def who_can_command(org: str, resource: str, action: str, policy_dir: Path | None, output: str):
    """Every subject of ORG allowed ACTION on RESOURCE (complete, no paging)."""
    validate_org(org)
    validate_text(resource, "resource", max_length=2048)
    validate_text(action, "action")
    engine = engine_for(Settings.from_env(), policy_dir)
    snapshot = engine.snapshot
    require_org(snapshot, org)
    entries = [entry.to_dict() for entry in who_can(engine, snapshot, org, resource, action)]
    header = ["subject", "kind", "via", "path", "rule"]
    rows = [[item[name] for name in header] for item in entries]
    hint = reads.query_hint(snapshot, org, action=action, resource=resource)
    document = {
        "org": org,
        "resource": resource,
        "action": action,
        "revision": snapshot.revision,
        "subjects": entries,
        "hint": hint,
    }
    click.echo(render(header, rows, output, document))
    if hint and output != "json":
        click.echo(f"hint: {hint}", err=True)


@click.command("matrix")
@click.argument("org")
@_policy_dir_option
@_format_option
def matrix(org: str, policy_dir: Path | None, output: str) -> None:
    """Access matrix of ORG: subjects x (resource, action), allow / deny / none."""
    validate_org(org)
    engine = engine_for(Settings.from_env(), policy_dir)
    snapshot = engine.snapshot
    require_org(snapshot, org)
    result = access_matrix(engine, snapshot, org)
    header, rows = result.to_table()
    if output == "table":
        click.echo(render_wide(header, rows, terminal_width()))
    else:
        click.echo(render(header, rows, output, result.to_dict()))


def _parse_time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("expected an ISO 8601 date or time", param_hint=name) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.command("decisions")
@click.argument("org")
@click.option("--subject", default=None)
@click.option("--resource", default=None, help="Exact resource, or a prefix ending in `*`.")
@click.option("--action", default=None)
@click.option("--allowed/--denied", "allowed", default=None, help="Only allowed / denied.")
@click.option("--since", default=None, help="ISO 8601 time.")
@click.option("--until", default=None, help="ISO 8601 time.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@_format_option
def decisions(org, subject, resource, action, allowed, since, until, limit, output):
    """Search the decision log of ORG (the database log when enabled, else the log file)."""
    validate_org(org)
    settings = Settings.from_env()
    store = None
    if settings.decision_log_db:
        from .common import open_existing_store

        store = open_existing_store(settings)
    try:
        log_rows = None if store is None else store.decision_rows()
        decision_log = DecisionLog.from_settings(settings, log_rows)
        if decision_log is None or decision_log.searchable is None:
            raise ConfigError(
                "no searchable decision log: set ROLEGATE_DECISION_LOG_DB=1 or "
                "ROLEGATE_DECISION_LOG=<file>"
            )
        found = decision_log.search(
            org=org,
            subject=subject,
            resource=resource,
            action=action,
            allowed=allowed,
            since=_parse_time(since, "--since"),
            until=_parse_time(until, "--until"),
            limit=limit,
        )
    finally:
        if store is not None:
            store.dispose()
    header = ["time", "subject", "action", "resource", "allowed", "rule", "client", "request_id"]
    rows = [[record.get(name) for name in header] for record in found]
    click.echo(render(header, rows, output, {"org": org, "decisions": found}))


COMMANDS = (permissions, who_can_command, matrix, decisions)
