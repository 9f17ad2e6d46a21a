"""The `subject_attributes` rows: the repository behind `rolegate.subject_attributes` (which
parses and validates them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from .db import subject_attributes, transaction

WHAT = "subject attributes"
AttributeRow = Mapping[str, str]  # org, subject, name, value


class SubjectAttributeRows:
    """(org, subject, name, value) rows in the store's database, one transaction per call."""

    def __init__(self, engine: sa.Engine):
        self._engine = engine

    def get(self, org: str, subject: str) -> dict[str, str]:
        table = subject_attributes
        stmt = sa.select(table.c.name, table.c.value).where(
            table.c.org == org, table.c.subject == subject
        )
        with transaction(self._engine, write=False, what=WHAT) as tx:
            return {row.name: row.value for row in tx.execute(stmt)}

    def replace_subject(self, org: str, subject: str, rows: Sequence[AttributeRow]) -> None:
        table = subject_attributes
        with transaction(self._engine, write=True, what=WHAT) as tx:
            tx.execute(sa.delete(table).where(table.c.org == org, table.c.subject == subject))
            if rows:
                tx.execute(sa.insert(table), list(rows))

    def replace_all(self, rows: Sequence[AttributeRow]) -> None:
        with transaction(self._engine, write=True, what=WHAT) as tx:
            tx.execute(sa.delete(subject_attributes))
            if rows:
                tx.execute(sa.insert(subject_attributes), list(rows))

    def delete_org(self, org: str) -> None:
        with transaction(self._engine, write=True, what=WHAT) as tx:
            tx.execute(sa.delete(subject_attributes).where(subject_attributes.c.org == org))
