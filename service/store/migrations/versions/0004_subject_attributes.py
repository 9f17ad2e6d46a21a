"""Subject attributes (the AuthZEN PIP: e.g. the email of each subject).

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-02

The lead re-chains `down_revision` at merge when another migration takes 0003. Like 0002, it
adopts a table that already exists (a database made with `create_all`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None

WIDTH = 255


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("subject_attributes"):
        return
    op.create_table(
        "subject_attributes",
        sa.Column("org", sa.String(WIDTH), primary_key=True),
        sa.Column("subject", sa.String(WIDTH), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("subject_attributes")
