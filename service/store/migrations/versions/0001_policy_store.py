"""Policy store: casbin_rule, policy_state (revision), change_log.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

The schema is written out here (not imported from rolegate.store.db) so that this migration stays
what it was when later ones change the tables. A `casbin_rule` table created earlier by
`sqlalchemy_adapter` is adopted: only our indexes are added to it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

WIDTH = 255
VALUES = ("v0", "v1", "v2", "v3", "v4", "v5")
RULE_INDEXES = {
    "ix_casbin_rule_exact": ["ptype", "v0", "v1", "v2", "v3"],
    "ix_casbin_rule_p_domain": ["v1", "ptype"],
    "ix_casbin_rule_g_domain": ["v2", "ptype"],
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if inspector.has_table("casbin_rule"):
        existing = {index["name"] for index in inspector.get_indexes("casbin_rule")}
    else:
        op.create_table(
            "casbin_rule",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("ptype", sa.String(WIDTH)),
            *(sa.Column(name, sa.String(WIDTH)) for name in VALUES),
        )
        existing = set()
    for name, columns in RULE_INDEXES.items():
        if name not in existing:
            op.create_index(name, "casbin_rule", columns)

    op.create_table(
        "policy_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("revision", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.CheckConstraint("id = 1", name="ck_policy_state_single_row"),
    )
    op.execute("INSERT INTO policy_state (id, revision) VALUES (1, 0)")

    op.create_table(
        "change_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(WIDTH), nullable=False),
        sa.Column("operation", sa.String(8), nullable=False),
        sa.Column("ptype", sa.String(WIDTH), nullable=False),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("org", sa.String(WIDTH), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.CheckConstraint("operation IN ('add', 'remove')", name="ck_change_log_operation"),
    )
    op.create_index("ix_change_log_revision", "change_log", ["revision"])
    op.create_index("ix_change_log_org", "change_log", ["org", "id"])
    op.create_index("ix_change_log_at", "change_log", ["at"])


def downgrade() -> None:
    op.drop_table("change_log")
    op.drop_table("policy_state")
    for name in RULE_INDEXES:
        op.drop_index(name, table_name="casbin_rule")
    op.drop_table("casbin_rule")
