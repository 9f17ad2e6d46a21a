"""API keys and the database decision log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Both tables were first created on demand by their modules (`create(checkfirst=True)`), so this
migration adopts a table that already exists instead of failing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WIDTH = 255


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("api_keys"):
        op.create_table(
            "api_keys",
            sa.Column("id", sa.String(16), primary_key=True),
            sa.Column("org", sa.String(WIDTH), nullable=False),
            sa.Column("name", sa.String(WIDTH), nullable=False),
            sa.Column("roles", sa.Text, nullable=False),
            sa.Column("key_hash", sa.String(64), nullable=False),
            sa.Column("created_at", sa.String(32), nullable=False),
            sa.Column("created_by", sa.String(WIDTH), nullable=False),
            sa.Column("expires_at", sa.String(32), nullable=True),
            sa.Column("revoked_at", sa.String(32), nullable=True),
        )
        op.create_index("ix_api_keys_org", "api_keys", ["org"])
    if not inspector.has_table("decision_log"):
        op.create_table(
            "decision_log",
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
            sa.Column("at", sa.String(32), nullable=False),
            sa.Column("decision_id", sa.String(64), nullable=False),
            sa.Column("org", sa.String(WIDTH), nullable=False),
            sa.Column("subject", sa.String(WIDTH), nullable=False),
            sa.Column("resource", sa.Text, nullable=False),
            sa.Column("action", sa.String(WIDTH), nullable=False),
            sa.Column("allowed", sa.Boolean, nullable=False),
            sa.Column("record", sa.Text, nullable=False),
        )
        op.create_index("ix_decision_log_org_at", "decision_log", ["org", "at"])
        op.create_index("ix_decision_log_org_subject_at", "decision_log", ["org", "subject", "at"])
        op.create_index("ix_decision_log_at", "decision_log", ["at"])


def downgrade() -> None:
    op.drop_table("decision_log")
    op.drop_table("api_keys")
