"""The `api_keys` rows: the repository behind `rolegate.apikeys` (which mints, hashes and
verifies keys; this module only reads and writes rows)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .db import api_keys, transaction

WHAT = "API key store"


@dataclass(frozen=True)
class ApiKeyRow:
    """One stored key: `roles` is the JSON text of the role list, `key_hash` the HMAC."""

    id: str
    org: str
    name: str
    roles: str
    key_hash: str
    created_at: str
    created_by: str
    expires_at: str | None
    revoked_at: str | None


def _row(row: Any) -> ApiKeyRow:
    return ApiKeyRow(**{field: row._mapping[field] for field in ApiKeyRow.__dataclass_fields__})


def _revoke_statement(key_id: str, at: str) -> sa.Update:
    return (
        sa.update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=at)
    )


class ApiKeyRows:
    """Key rows in the store's database. Every read or write is one transaction; the `*_in`
    methods write inside a transaction of the caller (`PolicySource.apply(also=...)`)."""

    def __init__(self, engine: sa.Engine):
        self._engine = engine

    @staticmethod
    def insert_in(tx: sa.Connection, row: Mapping[str, Any]) -> None:
        tx.execute(sa.insert(api_keys).values(**row))

    @staticmethod
    def revoke_in(tx: sa.Connection, key_id: str, at: str) -> None:
        tx.execute(_revoke_statement(key_id, at))

    def insert(self, row: Mapping[str, Any]) -> None:
        with transaction(self._engine, write=True, what=WHAT) as tx:
            self.insert_in(tx, row)

    def revoke(self, key_id: str, at: str) -> ApiKeyRow | None:
        """Mark the key revoked (when active); the row afterwards, None when there is none."""
        with transaction(self._engine, write=True, what=WHAT) as tx:
            tx.execute(_revoke_statement(key_id, at))
            found = tx.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
        return None if found is None else _row(found)

    def revoke_org(self, org: str, at: str) -> int:
        with transaction(self._engine, write=True, what=WHAT) as tx:
            result = tx.execute(
                sa.update(api_keys)
                .where(api_keys.c.org == org, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=at)
            )
        return result.rowcount or 0

    def get(self, key_id: str) -> ApiKeyRow | None:
        with transaction(self._engine, write=False, what=WHAT) as tx:
            found = tx.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
        return None if found is None else _row(found)

    def of_org(self, org: str) -> list[ApiKeyRow]:
        stmt = sa.select(api_keys).where(api_keys.c.org == org).order_by(api_keys.c.created_at)
        with transaction(self._engine, write=False, what=WHAT) as tx:
            return [_row(found) for found in tx.execute(stmt)]

    def all(self) -> list[ApiKeyRow]:
        with transaction(self._engine, write=False, what=WHAT) as tx:
            return [_row(found) for found in tx.execute(sa.select(api_keys))]
