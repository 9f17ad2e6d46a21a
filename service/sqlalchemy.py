"""A plan from `POST /v1/plan` as a SQLAlchemy filter: the rows the subject may act on.

    plan = rolegate_client.post("/v1/plan", {"action": "read", "resource": "/documents/:id"})
    columns = {"org": Document.org_id, "owner": Document.created_by, "id": Document.id}
    rows = session.scalars(select(Document).where(plan_filter(plan, columns)))

The filter agrees with `/v1/check` row by row (docs/data-filtering.md), in two-valued logic:
a NULL owner is "no owner", a NULL org or parameter never makes a row visible, and so does a
parameter that is empty or contains `/` (no check names such a resource). `like` compiles to a
case-sensitive match: `GLOB` on SQLite, `LIKE ... ESCAPE` on PostgreSQL; other dialects refuse
to compile it rather than guess their collation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from .engine.plan import TemplateError, parse_template

MAX_DEPTH = 100
LIKE_ESCAPE = "\\"


class PlanFormatError(ValueError):
    """The plan is not the JSON document `POST /v1/plan` answers."""


class UnmappedField(KeyError):
    """The plan names a field the `columns` mapping does not give."""

    def __str__(self) -> str:
        return str(self.args[0])


def like_pattern(glob: str) -> str:
    """A glob (`*` any run, the rest literal) as a LIKE pattern escaped with backslash."""
    escaped = (
        glob.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )
    return escaped.replace("*", "%")


def sqlite_glob(glob: str) -> str:
    """A glob as an SQLite GLOB pattern: `*` stays, `?`, `[` and a literal `*` never occur."""
    return "".join("[" + char + "]" if char in "?[" else char for char in glob)


class GlobMatch(ColumnElement):
    """`column` matches `glob`, case-sensitively, whatever the backend's LIKE does."""

    __visit_name__ = "rolegate_glob_match"
    inherit_cache = True
    type = sa.Boolean()
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("like_pattern", InternalTraversal.dp_clauseelement),
        ("glob_pattern", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement, glob: str):
        self.column = column
        self.like_pattern = sa.literal(like_pattern(glob), sa.String())
        self.glob_pattern = sa.literal(sqlite_glob(glob), sa.String())


@compiles(GlobMatch, "sqlite")
def _glob_sqlite(element: GlobMatch, compiler, **kw) -> str:
    column = compiler.process(element.column, **kw)
    return f"({column} GLOB {compiler.process(element.glob_pattern, **kw)})"


@compiles(GlobMatch, "postgresql")
def _glob_postgresql(element: GlobMatch, compiler, **kw) -> str:
    column = compiler.process(element.column, **kw)
    return f"({column} LIKE {compiler.process(element.like_pattern, **kw)} ESCAPE '{LIKE_ESCAPE}')"


@compiles(GlobMatch)
def _glob_other(element: GlobMatch, compiler, **kw) -> str:
    raise CompileError(
        f"plan_filter: no case-sensitive `like` known for the {compiler.dialect.name} dialect "
        "(SQLite and PostgreSQL are supported)"
    )


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _fields(condition: Any, depth: int = 0) -> set[str]:
    """The fields a wire-form condition names; PlanFormatError when it is malformed."""
    if depth > MAX_DEPTH:
        raise PlanFormatError(f"plan condition nested deeper than {MAX_DEPTH}")
    if isinstance(condition, bool):
        return set()
    if not isinstance(condition, dict) or len(condition) != 1:
        raise PlanFormatError(
            f"plan condition: expected true, false or a one-key object, got {condition!r}"
        )
    ((kind, argument),) = condition.items()
    if kind in ("and", "or"):
        if not isinstance(argument, list):
            raise PlanFormatError(f"plan condition: {kind!r} takes a list")
        return set().union(*(_fields(item, depth + 1) for item in argument))
    if kind == "not":
        return _fields(argument, depth + 1)
    if kind not in ("eq", "in", "like"):
        raise PlanFormatError(f"plan condition: unknown operator {kind!r}")
    if not (isinstance(argument, list) and len(argument) == 2 and _is_text(argument[0])):
        raise PlanFormatError(f"plan condition: {kind!r} takes [field, value]")
    operand = argument[1]
    valid = (
        isinstance(operand, list) and all(map(_is_text, operand))
        if kind == "in"
        else _is_text(operand)
    )
    if not valid:
        raise PlanFormatError(f"plan condition: bad operand for {kind!r}: {operand!r}")
    return {argument[0]}


def _expression(condition: Any, columns: Mapping[str, ColumnElement]) -> ColumnElement:
    if isinstance(condition, bool):
        return sa.true() if condition else sa.false()
    ((kind, argument),) = condition.items()
    if kind == "and":
        return sa.and_(sa.true(), *(_expression(item, columns) for item in argument))
    if kind == "or":
        return sa.or_(sa.false(), *(_expression(item, columns) for item in argument))
    if kind == "not":
        return sa.not_(_expression(argument, columns))
    field, operand = argument
    column = columns[field]
    if kind == "eq":
        return column == operand
    if kind == "in":
        return column.in_(operand) if operand else sa.false()
    return GlobMatch(column, operand)


def _template_parameters(template: Any) -> tuple[str, ...]:
    if not isinstance(template, str):
        raise PlanFormatError("plan: `resource` must be the template string")
    try:
        return parse_template(template).params
    except TemplateError as exc:
        raise PlanFormatError(f"plan: {exc}") from None


def plan_filter(plan: Mapping[str, Any], columns: Mapping[str, Any]) -> ColumnElement:
    """A boolean expression for `select(...).where(...)`: true exactly for the allowed rows.

    `plan`: the `POST /v1/plan` answer (its `condition` is used). `columns`: each field the
    condition names, plus `org` and every parameter of the plan's `resource` template -> a
    column or expression. An unmapped field raises UnmappedField.
    """
    if not isinstance(plan, Mapping) or "condition" not in plan:
        raise PlanFormatError(
            "plan: expected the POST /v1/plan answer (an object with `condition`)"
        )
    condition = plan["condition"]
    fields = _fields(condition) | {"org"}
    if condition is False:
        return sa.false()
    if "resource" in plan:  # every parameter of the template is guarded, named or not
        fields |= set(_template_parameters(plan["resource"]))
    missing = sorted(fields - set(columns))
    if missing:
        raise UnmappedField(
            f"plan_filter: the plan uses field {missing[0]!r} but columns maps only "
            f"{sorted(columns)}"
        )
    mapped: dict[str, ColumnElement] = {}
    guards: list[ColumnElement] = [columns["org"].is_not(None)]
    for field in sorted(fields):
        column = columns[field]
        if field == "owner":
            column = sa.func.coalesce(column, "")  # NULL: no owner, as a check without one
        elif field != "org":
            guards += [column.is_not(None), column != "", sa.not_(column.contains("/"))]
        mapped[field] = column
    return sa.and_(*guards, _expression(condition, mapped))


__all__ = ["GlobMatch", "PlanFormatError", "UnmappedField", "plan_filter", "plan_sql"]


def plan_sql(plan: Mapping[str, Any], table: str) -> str:
    """The plan as a PostgreSQL query over `table(org, owner, <parameters>)`, values inlined."""
    from sqlalchemy.dialects import postgresql

    fields = ("org", "owner", *parse_template(plan["resource"]).params)
    rows = sa.table(table, *(sa.column(field, sa.String) for field in fields))
    query = sa.select(rows).where(plan_filter(plan, dict(rows.c.items())))
    dialect = postgresql.dialect(paramstyle="named")  # no %-doubling in inlined values
    compiled = query.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    return f"{compiled};"
