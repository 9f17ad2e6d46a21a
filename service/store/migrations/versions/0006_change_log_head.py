"""The change log's head (revision and hash of the newest entry) on `policy_state`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Existing logs get the head of their newest entry, so `rolegate changes --verify` detects any
truncation from this upgrade on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("policy_state")}
    if "head_revision" not in columns:
        op.add_column("policy_state", sa.Column("head_revision", sa.BigInteger, nullable=True))
    if "head_hash" not in columns:
        op.add_column("policy_state", sa.Column("head_hash", sa.String(64), nullable=True))
    newest = (
        op.get_bind()
        .execute(sa.text("SELECT revision, hash FROM change_log ORDER BY id DESC LIMIT 1"))
        .first()
    )
    if newest is not None:
        op.get_bind().execute(
            sa.text("UPDATE policy_state SET head_revision = :revision, head_hash = :hash"),
            {"revision": newest.revision, "hash": newest.hash},
        )


def downgrade() -> None:
    with op.batch_alter_table("policy_state") as batch:
        batch.drop_column("head_hash")
        batch.drop_column("head_revision")
