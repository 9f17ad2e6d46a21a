"""`rolegate org ...`: organisation administration as a local operator.

The operator is not authorised by policy (whoever can run this can reach the database) and is
recorded as actor `cli:<os user>`; every other check of the HTTP API applies (unknown roles,
last admin, bad input). Output is JSON (`--format table|csv` for people and spreadsheets).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ..admin import Caller, OrgAdmin
from ..config import Settings
from ..errors import InvalidRequest
from .common import require_store
from .output import emit, format_option


@contextmanager
def _admin() -> Iterator[tuple[OrgAdmin, Caller]]:
    from ..core import Rolegate

    settings = Settings.from_env()
    require_store(settings)
    core = Rolegate.from_settings(settings, with_identity=False)
    try:
        core.load()
        yield OrgAdmin(core), Caller.operator()
    finally:
        core.close()


def _run(operation: Callable[[OrgAdmin, Caller], Any], output: str = "json") -> Any:
    with _admin() as (admin, caller):
        result = operation(admin, caller)
    emit(result, output)
    return result


@click.group("org")
def org() -> None:
    """Administer organisations: members, org rules, API keys (as a local operator)."""


@org.command("create")
@click.argument("org_id", metavar="ORG")
@click.option("--admin", "admin_subject", required=True, help="Subject of the first admin.")
@click.option("--name", default=None, help="Display name (echoed, not stored).")
@format_option(default="json")
def create(org_id: str, admin_subject: str, name: str | None, output: str):
    """Create ORG with its first admin."""
    _run(lambda admin, caller: admin.create_org(caller, org_id, admin_subject, name), output)


@org.command("delete")
@click.argument("org_id", metavar="ORG")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@format_option(default="json")
def delete(org_id: str, yes: bool, output: str):
    """Offboard ORG: revoke its API keys and remove every rule of it in one transaction."""
    if not yes:
        click.confirm(f"Remove every rule and membership of org {org_id!r}?", abort=True)
    _run(lambda admin, caller: admin.delete_org(caller, org_id), output)


@org.command("members")
@click.argument("org_id", metavar="ORG")
@click.option("--limit", default=1000, show_default=True, type=int, help="Page size.")
@click.option("--after", default=None, help="Cursor: the `next` of the previous page.")
@format_option(default="json")
def members(org_id: str, limit: int, after: str | None, output: str):
    """List the members of ORG with their direct and inherited roles."""
    from ..admin import page_limit

    limit = page_limit(limit)
    _run(lambda admin, caller: admin.list_members(caller, org_id, limit=limit, after=after), output)


@org.command("set-roles")
@click.argument("org_id", metavar="ORG")
@click.argument("subject")
@click.argument("roles", nargs=-1, required=True)
@format_option(default="json")
def set_roles(org_id: str, subject: str, roles: tuple[str, ...], output: str):
    """Make ROLES the direct roles of SUBJECT in ORG (adds the member when new)."""
    _run(lambda admin, caller: admin.set_member_roles(caller, org_id, subject, list(roles)), output)


@org.command("remove-member")
@click.argument("org_id", metavar="ORG")
@click.argument("subject")
@format_option(default="json")
def remove_member(org_id: str, subject: str, output: str):
    """Remove SUBJECT from ORG."""
    _run(lambda admin, caller: admin.remove_member(caller, org_id, subject), output)


@org.command("bulk")
@click.argument("org_id", metavar="ORG")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True))
@format_option(default="json")
def bulk(org_id: str, file: Path, output: str):
    """Set many members' roles from FILE (JSON `{"items": [{"subject", "roles"}]}`; - = stdin).

    Exits 1 when some items failed (the valid ones are applied).
    """
    text = sys.stdin.read() if str(file) == "-" else _read(file)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{file}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    items = data.get("items") if isinstance(data, dict) else data
    result = _run(lambda admin, caller: admin.bulk_set_roles(caller, org_id, items), output)
    if result["applied"] != len(result["results"]):
        sys.exit(1)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{path}: cannot read: {exc}") from None


# --------------------------------------------------------------------------- rules


def _rule_object(values: tuple[str, ...]) -> dict[str, str]:
    if values and values[0] == "p" and len(values) == 5:
        return dict(zip(("type", "subject", "resource", "action", "effect"), values, strict=True))
    if values and values[0] == "g" and len(values) == 3:
        return dict(zip(("type", "member", "role"), values, strict=True))
    raise click.BadParameter(
        "expected `p SUBJECT RESOURCE ACTION allow|deny` or `g ROLE PARENT_ROLE`",
        param_hint="RULE",
    )


@org.group("rules")
def rules() -> None:
    """List, add and remove the org's own rules and role links."""


@rules.command("list")
@click.argument("org_id", metavar="ORG")
@format_option(default="json")
def rules_list(org_id: str, output: str):
    """The org's own p rules and role -> role links."""
    _run(lambda admin, caller: admin.list_rules(caller, org_id), output)


@rules.command("add")
@click.argument("org_id", metavar="ORG")
@click.argument("rule", nargs=-1, required=True)
@format_option(default="json")
def rules_add(org_id: str, rule: tuple[str, ...], output: str):
    """Add RULE: `p SUBJECT RESOURCE ACTION allow|deny` or `g ROLE PARENT_ROLE`."""
    body = [_rule_object(rule)]
    _run(lambda admin, caller: admin.change_rules(caller, org_id, body), output)


@rules.command("remove")
@click.argument("org_id", metavar="ORG")
@click.argument("rule", nargs=-1, required=True)
@format_option(default="json")
def rules_remove(org_id: str, rule: tuple[str, ...], output: str):
    """Remove RULE (same form as `add`)."""
    body = [_rule_object(rule)]
    _run(lambda admin, caller: admin.change_rules(caller, org_id, body, remove=True), output)


# --------------------------------------------------------------------------- API keys


@org.group("keys")
def keys() -> None:
    """Create, list and revoke the org's API keys."""


@keys.command("create")
@click.argument("org_id", metavar="ORG")
@click.option("--name", required=True, help="What the key is for.")
@click.option("--role", "roles", multiple=True, required=True, help="Role (repeatable).")
@click.option("--expires-at", default=None, help="ISO 8601 instant, e.g. 2030-01-31T00:00:00Z.")
@format_option(default="json")
def keys_create(
    org_id: str, name: str, roles: tuple[str, ...], expires_at: str | None, output: str
):
    """Create an API key; the key is printed once and cannot be shown again."""
    _run(
        lambda admin, caller: admin.create_api_key(caller, org_id, name, list(roles), expires_at),
        output,
    )


@keys.command("list")
@click.argument("org_id", metavar="ORG")
@format_option(default="json")
def keys_list(org_id: str, output: str):
    """The org's API keys (never the secrets)."""
    _run(lambda admin, caller: admin.list_api_keys(caller, org_id), output)


@keys.command("revoke")
@click.argument("org_id", metavar="ORG")
@click.argument("key_id", metavar="ID")
@format_option(default="json")
def keys_revoke(org_id: str, key_id: str, output: str):
    """Revoke API key ID: refused from the next request on."""
    _run(lambda admin, caller: admin.revoke_api_key(caller, org_id, key_id), output)


COMMANDS = (org,)
