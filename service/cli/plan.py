"""`rolegate plan`: the data-filtering plan for a subject, offline (store or --policy-dir)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..config import Settings
from ..engine.plan import (
    PlanNotExpressible,
    PlanRequest,
    TemplateError,
    member_orgs,
    parse_template,
    plan_condition,
)
from ..errors import InvalidRequest, RolegateError
from .decide import engine_for
from .output import emit


def plan_sql(plan: dict, table: str) -> str:
    """The plan as a PostgreSQL query over `table(org, owner, <parameters>)`, values inlined."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    from ..sqlalchemy import plan_filter

    fields = ("org", "owner", *parse_template(plan["resource"]).params)
    rows = sa.table(table, *(sa.column(field, sa.String) for field in fields))
    query = sa.select(rows).where(plan_filter(plan, dict(rows.c.items())))
    dialect = postgresql.dialect(paramstyle="named")  # no %-doubling in inlined values
    compiled = query.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    return f"{compiled};"


@click.command("plan")
@click.argument("subject")
@click.argument("action")
@click.argument("template")
@click.option("--org", default=None, help="Plan for this org (default: every org SUBJECT is in).")
@click.option(
    "--format",
    "output",
    type=click.Choice(["json", "sql", "table", "csv"]),
    default="json",
    help="json: the POST /v1/plan answer; sql: a PostgreSQL query over --table; table/csv: "
    "the answer's fields.",
)
@click.option("--table", default="resources", help="Table name for --format sql.")
@click.option(
    "--policy-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Plan against these CSV files instead of the store.",
)
def plan(subject, action, template, org, output, table, policy_dir):
    """Which rows of TEMPLATE (e.g. /documents/:id) may SUBJECT ACTION? Exit 0, or 2 on error."""
    from ..core import validate_org, validate_text

    validate_text(subject, "subject")
    validate_text(action, "action")
    validate_text(template, "template", max_length=2048)
    if org is not None:
        validate_org(org)
    snapshot = engine_for(Settings.from_env(), policy_dir).snapshot
    orgs = (org,) if org is not None else tuple(member_orgs(snapshot, subject))
    try:
        condition = plan_condition(snapshot, PlanRequest(subject, action, template, orgs))
    except TemplateError as exc:
        raise InvalidRequest(f"template: {exc}", code=exc.code) from None
    except PlanNotExpressible as exc:
        raise RolegateError(str(exc), code=exc.code) from None
    answer = {
        "subject": subject,
        "action": action,
        "resource": template,
        "orgs": list(orgs),
        "revision": snapshot.revision,
        "condition": condition,
    }
    if output in ("table", "csv"):
        emit(answer, output)
        return
    click.echo(plan_sql(answer, table) if output == "sql" else json.dumps(answer))


COMMANDS = (plan,)
