"""`rolegate check`: decide offline against the store or a policy directory, through the core
(`Rolegate.offline`, `Rolegate.check`): the same decision `/v1/check` makes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..config import Settings
from ..core import MAX_RESOURCE_CHARS, Rolegate
from ..engine import Engine
from ..validation import validate_org, validate_text
from .common import org_first, require_store
from .output import format_option, render


def offline_core(settings: Settings, policy_dir: Path | None) -> Rolegate:
    """The core offline commands decide with (`Rolegate.offline`): over `policy_dir` when
    given, else over the configured store, which must exist (`store_missing`). Close it."""
    if policy_dir is None:
        require_store(settings)
    return Rolegate.offline(settings, policy_dir)


def engine_for(settings: Settings, policy_dir: Path | None) -> Engine:
    """The loaded engine of `offline_core` (the audit views read it)."""
    core = offline_core(settings, policy_dir)
    core.close()
    return core.engine


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

    (The old order SUBJECT ORG ... still works when it is unambiguous.) The decision is the one
    `/v1/check` makes for SUBJECT asking itself (`Rolegate.check`).
    """
    core = offline_core(Settings.from_env(), policy_dir)
    try:
        org, subject = org_first(core.engine.snapshot, org, subject)
        validate_text(subject, "subject")
        validate_org(org)
        validate_text(resource, "resource", max_length=MAX_RESOURCE_CHARS)
        validate_text(action, "action")
        result = core.check_as(subject, org, resource, action, owner=owner, explain=True)
    finally:
        core.close()
    validate_text(subject, "subject")
    validate_org(org)
    validate_text(resource, "resource", max_length=MAX_RESOURCE_CHARS)
    validate_text(action, "action")
    if as_json:
        click.echo("Warning: --json is deprecated: use --format json", err=True)
        output = "json"
    reason = result.reason  # with what would allow a denial
    if output == "json":
        click.echo(json.dumps({"allowed": result.allowed, "reason": reason}))
    elif output == "csv":
        click.echo(
            render(
                ["org", "subject", "resource", "action", "decision", "summary"],
                [[org, subject, resource, action, _word(result.allowed), reason["summary"]]],
                "csv",
                None,
            )
        )
    else:
        click.echo(_word(result.allowed))
        if explain:
            click.echo(f"  {reason['summary']}")
            if reason.get("path"):
                click.echo(f"  path: {reason['path']}")
            for line in denial_lines(reason):
                click.echo(f"  {line}")
    sys.exit(0 if result.allowed else 1)


def _word(allowed: bool) -> str:
    return "allow" if allowed else "deny"


COMMANDS = (check,)
