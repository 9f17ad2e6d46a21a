"""Rule ownership: `casbin_rule.managed_by` ("files" or "api").

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Existing rows are attributed from what is known: API-key role links (`apikey:` members) and
rules whose latest change-log addition was made by a caller of the admin API (an actor that is
neither `file:...` nor `cli:...`) become `api`; everything else stays `files`, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    columns = {column["name"] for column in sa.inspect(bind).get_columns("casbin_rule")}
    if "managed_by" not in columns:
        op.add_column(
            "casbin_rule",
            sa.Column(
                "managed_by", sa.String(8), nullable=False, server_default=sa.text("'files'")
            ),
        )
    op.execute("UPDATE casbin_rule SET managed_by = 'api' WHERE ptype = 'g' AND v0 LIKE 'apikey:%'")
    _attribute_api_rules(bind)


def _attribute_api_rules(bind) -> None:
    latest: dict[str, str] = {}
    rows = bind.execute(
        sa.text("SELECT rule, actor, operation FROM change_log ORDER BY id")
    ).fetchall()
    for rule, actor, operation in rows:
        if operation == "add":
            latest[rule] = actor
        else:
            latest.pop(rule, None)
    by_api = [rule for rule, actor in latest.items() if not actor.startswith(("file:", "cli:"))]
    rule_table = sa.table(
        "casbin_rule",
        sa.column("ptype"),
        sa.column("managed_by"),
        *(sa.column(f"v{index}") for index in range(6)),
    )
    for text in by_api:
        ptype, *values = text.split(", ")
        terms = [rule_table.c.ptype == ptype]
        terms += [rule_table.c[f"v{index}"] == value for index, value in enumerate(values)]
        bind.execute(sa.update(rule_table).where(*terms).values(managed_by="api"))


def downgrade() -> None:
    with op.batch_alter_table("casbin_rule") as batch:
        batch.drop_column("managed_by")
