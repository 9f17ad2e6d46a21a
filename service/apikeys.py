"""API keys (service accounts): key minting and `ApiKey` authentication; the rows are the store's
(`rolegate.store.apikeys`).

A key reads `rgk_<id>_<secret>`. Only `HMAC-SHA256(server key, "<id>.<secret>")` is stored, so a
database dump reveals no usable key; lookup is by `id` (primary key) and the comparison is
constant-time. The server key is `ROLEGATE_API_KEY_SECRET`, else a random key generated once in
the data dir (file `api-key-secret`, mode 600): every process that verifies keys must share it.

A key's roles are ordinary `g, apikey:<id>, <role>, <org>` rules in the policy store (written by
`rolegate.admin`), so the engine decides for a key exactly as for a user; this module only keeps
the key row and answers "is this key valid right now".

Authentication is answered from memory: each process keeps every key row (id, org, HMAC, expiry,
revocation) and re-reads them all when its policy revision changes (a revocation that drops the
key's role links is a new revision: refused by every worker as soon as it has that revision) and
at least every API_KEY_RELOAD_S seconds from the revision poll (a key revoked without role links:
refused within that bound). Expiry is compared with the clock on every request. An id not in
memory (a key minted by another instance a moment ago) is looked up once in the database, at most
MAX_MISS_LOOKUPS at a time and never while the database is known to be unreachable, so a stalled
database never holds a decision.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import AuthenticationError, ConfigError, StoreUnavailable
from .identity import Principal
from .store.apikeys import ApiKeyRow, ApiKeyRows
from .store.db import api_keys  # noqa: F401  (the table, re-exported for one release)
from .store.source import StoreTransaction

log = logging.getLogger("rolegate.apikeys")

KEY_PREFIX = "rgk_"
SUBJECT_PREFIX = "apikey:"
SECRET_FILE = "api-key-secret"
MAX_KEY_CHARS = 200
MIN_SERVER_KEY_BYTES = 32
_KEY = re.compile(r"rgk_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})")
API_KEY_RELOAD_S = 10.0  # longest a key revoked without a policy revision stays usable
MAX_MISS_LOOKUPS = 2  # concurrent database lookups of ids not in memory, per process
UNREACHABLE_BACKOFF_S = 2.0  # after a failed read, ids not in memory are refused (503) this long


def format_instant(moment: datetime) -> str:
    """UTC ISO 8601 with microseconds; naive datetimes are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def now_text() -> str:
    return format_instant(datetime.now(UTC))


def key_subject(key_id: str) -> str:
    """The policy subject of a key: `apikey:<id>`."""
    return SUBJECT_PREFIX + key_id


@dataclass(frozen=True)
class ApiKey:
    """One key row, without its hash."""

    id: str
    org: str
    name: str
    roles: tuple[str, ...]
    created_at: str
    created_by: str
    expires_at: str | None
    revoked_at: str | None

    @property
    def subject(self) -> str:
        return key_subject(self.id)

    def state(self, at: str | None = None) -> str:
        """`active`, `expired` or `revoked`."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (at or now_text()):
            return "expired"
        return "active"

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "org": self.org,
            "name": self.name,
            "roles": list(self.roles),
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "state": self.state(),
        }


def _row_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        org=row.org,
        name=row.name,
        roles=tuple(json.loads(row.roles)),
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def server_key(settings: Settings) -> bytes:
    """`ROLEGATE_API_KEY_SECRET`, else the data dir's generated key (created once, mode 600)."""
    if settings.api_key_secret:
        value = settings.api_key_secret.encode("utf-8")
        if len(value) < MIN_SERVER_KEY_BYTES:
            raise ConfigError(
                f"ROLEGATE_API_KEY_SECRET: at least {MIN_SERVER_KEY_BYTES} bytes, got {len(value)}"
            )
        return value
    path = Path(settings.data_dir) / SECRET_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: read theirs
        else:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(48) + "\n")
    try:
        value = path.read_text().strip().encode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the API key secret {path}: {exc.strerror}") from None
    if len(value) < MIN_SERVER_KEY_BYTES:
        raise ConfigError(f"{path}: the API key secret is too short; delete it to regenerate")
    return value


def _log_created(row: dict[str, Any]) -> None:
    log.info("api key %s created in org %s by %s", row["id"], row["org"], row["created_by"])


def _unauthorized(message: str, code: str = "invalid_api_key") -> AuthenticationError:
    return AuthenticationError(message, code=code)


class ApiKeyStore:
    """Minting, listing, revoking and authenticating keys over the store's key rows."""

    def __init__(self, rows: ApiKeyRows, secret: bytes):
        self._rows = rows
        self._secret = secret
        # id -> (key, HMAC): replaced whole, so readers need no lock.
        self._index: dict[str, tuple[ApiKey, str]] | None = None
        self._index_loaded_at = 0.0
        self._unreachable_until = 0.0
        self._misses = threading.BoundedSemaphore(MAX_MISS_LOOKUPS)

    @classmethod
    def from_settings(cls, rows: ApiKeyRows, settings: Settings) -> ApiKeyStore:
        return cls(rows, server_key(settings))

    def _digest(self, key_id: str, secret: str) -> str:
        return hmac.new(self._secret, f"{key_id}.{secret}".encode(), hashlib.sha256).hexdigest()

    # -- writes -------------------------------------------------------------------------------

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(8)

    def new_key(
        self,
        key_id: str,
        *,
        org: str,
        name: str,
        roles: Sequence[str],
        created_by: str,
        expires_at: str | None,
    ) -> tuple[ApiKey, str, dict[str, Any]]:
        """A new key: its description, the full key `rgk_<id>_<secret>` (shown once) and the
        row to store with `insert_row` (only the HMAC of the secret is kept)."""
        secret = secrets.token_urlsafe(32)
        row = {
            "id": key_id,
            "org": org,
            "name": name,
            "roles": json.dumps(list(roles)),
            "key_hash": self._digest(key_id, secret),
            "created_at": now_text(),
            "created_by": created_by,
            "expires_at": expires_at,
            "revoked_at": None,
        }
        created = ApiKey(
            id=key_id,
            org=org,
            name=name,
            roles=tuple(roles),
            created_at=str(row["created_at"]),
            created_by=created_by,
            expires_at=expires_at,
            revoked_at=None,
        )
        return created, f"{KEY_PREFIX}{key_id}_{secret}", row

    @staticmethod
    def insert_row(tx: StoreTransaction, row: dict[str, Any]) -> None:
        """Store a key row inside the caller's transaction."""
        ApiKeyRows.insert_in(tx, row)
        _log_created(row)

    def insert(self, key_id: str, **fields: Any) -> tuple[ApiKey, str]:
        """Store a new key on its own (no role links); returns it and the full key."""
        created, full_key, row = self.new_key(key_id, **fields)
        self._rows.insert(row)
        _log_created(row)
        self.reload_index()
        return created, full_key

    @staticmethod
    def revoke_row(tx: StoreTransaction, key_id: str) -> None:
        """Mark a key revoked inside the caller's transaction."""
        ApiKeyRows.revoke_in(tx, key_id, now_text())
        log.info("api key %s revoked", key_id)

    def revoke(self, key_id: str) -> ApiKey | None:
        """Mark a key revoked (kept for audit); None when there is no such key."""
        row = self._rows.revoke(key_id, now_text())
        self.reload_index()
        if row is not None:
            log.info("api key %s revoked", key_id)
        return None if row is None else _row_key(row)

    def revoke_org(self, org: str) -> int:
        """Revoke every active key of `org` (offboarding); returns how many."""
        revoked = self._rows.revoke_org(org, now_text())
        self.reload_index()
        return revoked

    # -- reads --------------------------------------------------------------------------------

    def get(self, key_id: str) -> ApiKey | None:
        row = self._rows.get(key_id)
        return None if row is None else _row_key(row)

    def list(self, org: str) -> list[ApiKey]:
        return [_row_key(row) for row in self._rows.of_org(org)]

    # -- the in-memory index ---------------------------------------------------------------

    def reload_index(self) -> bool:
        """Re-read every key row into memory; False (the previous index kept) when the database
        cannot be read."""
        try:
            rows = self._rows.all()
        except StoreUnavailable as exc:
            self._unreachable_until = time.monotonic() + UNREACHABLE_BACKOFF_S
            log.warning("API keys not re-read: %s", exc.message)
            return False
        self._index = {row.id: (_row_key(row), row.key_hash) for row in rows}
        self._index_loaded_at = time.monotonic()
        return True

    def reload_index_if_old(self) -> None:
        """The poll's bound on staleness: re-read when the index is API_KEY_RELOAD_S old."""
        if self._index is not None and time.monotonic() - self._index_loaded_at >= API_KEY_RELOAD_S:
            self.reload_index()

    def _lookup(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its HMAC, from memory; an id not there is read from the database once."""
        if self._index is None:
            self.reload_index()
        index = self._index or {}
        found = index.get(key_id)
        if found is not None:
            return found
        if time.monotonic() < self._unreachable_until:
            raise StoreUnavailable("API key store unavailable: the key cannot be verified now")
        if not self._misses.acquire(blocking=False):
            raise StoreUnavailable("API key store busy: the key cannot be verified now")
        try:
            row = self._rows.get(key_id)
        except StoreUnavailable:
            self._unreachable_until = time.monotonic() + UNREACHABLE_BACKOFF_S
            raise
        finally:
            self._misses.release()
        if row is None:
            return None
        found = (_row_key(row), row.key_hash)
        self._index = {**index, key_id: found}
        return found

    def authenticate(self, key: str) -> Principal:
        """The principal of a valid key; AuthenticationError (401) otherwise. Never logs `key`."""
        match = _KEY.fullmatch(key.strip()) if isinstance(key, str) else None
        if match is None or len(key) > MAX_KEY_CHARS:
            raise _unauthorized("the API key is malformed: expected rgk_<id>_<secret>")
        key_id, secret = match.groups()
        found = self._lookup(key_id)
        # Compute the digest even for unknown ids, so timing does not tell which ids exist.
        digest = self._digest(key_id, secret)
        expected = found[1] if found is not None else "0" * 64
        if not hmac.compare_digest(digest, expected) or found is None:
            log.info("api key %s refused: unknown id or wrong secret", key_id)
            raise _unauthorized("the API key is not valid")
        api_key = found[0]
        state = api_key.state()
        if state == "revoked":
            raise _unauthorized("the API key has been revoked", "api_key_revoked")
        if state == "expired":
            raise _unauthorized("the API key has expired", "api_key_expired")
        return Principal(
            subject=key_subject(key_id),
            org=api_key.org,
            roles=(),
            issuer=None,
            key_id=key_id,
            kind="api_key",
        )
