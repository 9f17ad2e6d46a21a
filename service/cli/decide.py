"""`rolegate check`: decide offline against the store or a policy directory, through the core
(`Rolegate.offline`, `Rolegate.check`): the same decision `/v1/check` makes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..config import Settings
from ..core import MAX_RESOURCE_BYTES, Rolegate
from ..engine import Engine
from ..validation import validate_org, validate_text


def engine_for(settings: Settings, policy_dir: Path | None) -> Engine:
    """An engine loaded from `policy_dir` when given, else from the configured store (the
    engine of `Rolegate.offline`; the audit views read it)."""
    core = Rolegate.offline(settings, policy_dir)
    core.close()
    return core.engine


@click.command("check")
@click.argument("subject")
@click.argument("org")
@click.argument("resource")
@click.argument("action")
@click.option("--owner", default="", help="Subject id that owns the resource.")
@click.option("--explain", is_flag=True, help="Print the rule and role path that decided.")
@click.option(
    "--policy-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Decide against these CSV files instead of the store.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def check(subject, org, resource, action, owner, explain, policy_dir, as_json):
    """Decide SUBJECT ORG RESOURCE ACTION. Exit 0 allow, 1 deny, 2 error."""
    validate_text(subject, "subject")
    validate_org(org)
    validate_text(resource, "resource", max_bytes=MAX_RESOURCE_BYTES)
    validate_text(action, "action")
    core = Rolegate.offline(Settings.from_env(), policy_dir)
    try:  # the decision /v1/check makes for this subject (Rolegate.check)
        result = core.check_as(subject, org, resource, action, owner=owner, explain=explain)
    finally:
        core.close()
    if as_json:
        click.echo(json.dumps({"allowed": result.allowed, "reason": result.reason}))
    else:
        click.echo("allow" if result.allowed else "deny")
        if explain:
            reason = result.reason
            click.echo(f"  {reason['summary']}")
            if reason.get("path"):
                click.echo(f"  path: {reason['path']}")
    sys.exit(0 if result.allowed else 1)


COMMANDS = (check,)
