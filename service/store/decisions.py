"""The `decision_log` rows: the repository behind the decision log's database sink
(`rolegate.audit.decision_log`, which builds, buffers and formats the records) and
`rolegate replay` (which reads them back)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from .db import decision_log, make_engine, transaction

WHAT = "decision log"
STREAM_ROWS = 5000


def _range_query(
    columns: Sequence[Any], *, org: str | None, since: str | None, until: str | None
) -> sa.Select[Any]:
    table = decision_log
    stmt = sa.select(*columns)
    if org is not None:
        stmt = stmt.where(table.c.org == org)
    if since is not None:
        stmt = stmt.where(table.c.at >= since)
    if until is not None:
        stmt = stmt.where(table.c.at <= until)
    return stmt


class DecisionRows:
    """Decision records (JSON text plus the columns searched on) in the store's database."""

    def __init__(self, engine: sa.Engine):
        self._engine = engine

    @classmethod
    def open_existing(cls, url: str) -> DecisionRows | None:
        """The rows of the database at `url`; None (nothing kept open) without the table."""
        engine = make_engine(url)
        if not sa.inspect(engine).has_table(decision_log.name):
            engine.dispose()
            return None
        return cls(engine)

    def dispose(self) -> None:
        self._engine.dispose()

    def insert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        with self._engine.begin() as tx:
            tx.execute(sa.insert(decision_log), list(rows))

    def delete_before(self, cutoff: str) -> int:
        """Delete the rows recorded before `cutoff` (a record time); the number deleted."""
        with self._engine.begin() as tx:
            result = tx.execute(sa.delete(decision_log).where(decision_log.c.at < cutoff))
        return result.rowcount or 0

    def search(
        self,
        *,
        org: str,
        exclude_id_prefix: str,
        subject: str | None = None,
        resource: str | None = None,
        resource_prefix: str | None = None,
        action: str | None = None,
        allowed: bool | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 100,
    ) -> list[str]:
        """Record texts of `org`, newest first; ids starting with `exclude_id_prefix` left out."""
        table = decision_log
        stmt = _range_query([table.c.record], org=org, since=since, until=until)
        stmt = stmt.where(
            sa.not_(table.c.decision_id.startswith(exclude_id_prefix, autoescape=True))
        )
        if subject is not None:
            stmt = stmt.where(table.c.subject == subject)
        if resource_prefix is not None:
            length = len(resource_prefix)
            stmt = stmt.where(sa.func.substr(table.c.resource, 1, length) == resource_prefix)
        if resource is not None:
            stmt = stmt.where(table.c.resource == resource)
        if action is not None:
            stmt = stmt.where(table.c.action == action)
        if allowed is not None:
            stmt = stmt.where(table.c.allowed == allowed)
        stmt = stmt.order_by(table.c.at.desc(), table.c.id.desc()).limit(limit)
        with transaction(self._engine, write=False, what=WHAT) as tx:
            return [row.record for row in tx.execute(stmt)]

    def count(
        self, *, org: str | None, since: str | None, until: str | None, limit: int | None
    ) -> int:
        stmt = _range_query([sa.func.count()], org=org, since=since, until=until)
        with transaction(self._engine, write=False, what=WHAT) as tx:
            count = int(tx.execute(stmt).scalar() or 0)
        return min(count, limit) if limit is not None else count

    def records(
        self, *, org: str | None, since: str | None, until: str | None, limit: int | None
    ) -> Iterator[str]:
        """Record texts, oldest first, streamed from the database."""
        table = decision_log
        stmt = _range_query([table.c.record], org=org, since=since, until=until)
        stmt = stmt.order_by(table.c.id)
        if limit is not None:
            stmt = stmt.limit(limit)
        with transaction(self._engine, write=False, what=WHAT) as tx:
            result = tx.execution_options(stream_results=True, yield_per=STREAM_ROWS).execute(stmt)
            for row in result:
                yield row.record
