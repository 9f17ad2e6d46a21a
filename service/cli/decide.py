"""`rolegate check`: decide offline against the store or a policy directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..config import Settings
from ..engine import CheckRequest, Engine
from ..engine.explain import explain_denial
from ..store import read_policy_dir
from .common import org_first
from .output import format_option, render


def engine_for(settings: Settings, policy_dir: Path | None) -> Engine:
    """An engine loaded from `policy_dir` when given, else from the configured store."""
    engine = Engine.from_model_file(settings.model_path, default_role=settings.default_role)
    if policy_dir is not None:
        engine.load(0, [item.rule for item in read_policy_dir(policy_dir)])
        return engine
    from .common import open_existing_store

    store = open_existing_store(settings)
    try:
        engine.load(*store.load_all())
    finally:
        store.dispose()
    return engine


def denial_lines(reason: dict) -> list[str]:
    """The deny explanation (`rolegate.engine.explain`) as lines; none for an allow."""
    if "code" not in reason:
        return []
    lines = [f"reason: {', '.join(reason['codes'])}"]
    would_allow = reason.get("would_allow") or {}
    owner = would_allow.get("as_owner")
    if owner:
        lines.append(f"would be allowed as the owner ({owner['rule']})")
    for item in would_allow.get("roles", ()):
        lines.append(f"would be allowed with role {item['role']} ({item['rule']})")
    return lines


@click.command("check")
@click.argument("org")
@click.argument("subject")
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
@format_option()
@click.option("--json", "as_json", is_flag=True, hidden=True, help="Deprecated: --format json.")
def check(org, subject, resource, action, owner, explain, policy_dir, output, as_json):
    """Decide ORG SUBJECT RESOURCE ACTION. Exit 0 allow, 1 deny, 2 error.

    (The old order SUBJECT ORG ... still works when it is unambiguous.)
    """
    from ..core import validate_org, validate_text

    engine = engine_for(Settings.from_env(), policy_dir)
    org, subject = org_first(engine.snapshot, org, subject)
    validate_text(subject, "subject")
    validate_org(org)
    validate_text(resource, "resource", max_length=2048)
    validate_text(action, "action")
    request = CheckRequest(subject, org, resource, action, owner)
    decision = engine.check(request)
    if as_json:
        click.echo("Warning: --json is deprecated: use --format json", err=True)
        output = "json"
    reason = {**decision.reason, **explain_denial(engine, request, decision)}
    if output == "json":
        click.echo(json.dumps({"allowed": decision.allowed, "reason": reason}))
    elif output == "csv":
        click.echo(
            render(
                ["org", "subject", "resource", "action", "decision", "summary"],
                [[org, subject, resource, action, _word(decision.allowed), reason["summary"]]],
                "csv",
                None,
            )
        )
    else:
        click.echo(_word(decision.allowed))
        if explain:
            click.echo(f"  {reason['summary']}")
            if reason.get("path"):
                click.echo(f"  path: {reason['path']}")
            for line in denial_lines(reason):
                click.echo(f"  {line}")
    sys.exit(0 if decision.allowed else 1)


def _word(allowed: bool) -> str:
    return "allow" if allowed else "deny"


COMMANDS = (check,)
