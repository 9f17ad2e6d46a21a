"""`rolegate check`: decide offline against the store or a policy directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..config import Settings
from ..engine import CheckRequest, Engine
from ..store import read_policy_dir


def engine_for(settings: Settings, policy_dir: Path | None) -> Engine:
    """An engine loaded from `policy_dir` when given, else from the configured store."""
    engine = Engine.from_model_file(settings.model_path, default_role=settings.default_role)
    if policy_dir is not None:
        engine.load(0, [item.rule for item in read_policy_dir(policy_dir)])
        return engine
    from ..store import PolicyStore

    store = PolicyStore.from_url(settings.database_url)
    try:
        engine.load(*store.load_all())
    finally:
        store.dispose()
    return engine


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
    from ..core import validate_org, validate_text

    validate_text(subject, "subject")
    validate_org(org)
    validate_text(resource, "resource", max_length=2048)
    validate_text(action, "action")
    engine = engine_for(Settings.from_env(), policy_dir)
    decision = engine.check(CheckRequest(subject, org, resource, action, owner))
    if as_json:
        click.echo(json.dumps({"allowed": decision.allowed, "reason": decision.reason}))
    else:
        click.echo("allow" if decision.allowed else "deny")
        if explain:
            reason = decision.reason
            click.echo(f"  {reason['summary']}")
            if reason.get("path"):
                click.echo(f"  path: {reason['path']}")
    sys.exit(0 if decision.allowed else 1)


COMMANDS = (check,)
