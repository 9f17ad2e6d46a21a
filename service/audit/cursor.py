"""Opaque, signed pagination cursors (itsdangerous): a tampered cursor is a 400, never a guess.

A cursor is bound to its query (a hash of org, resource and action), so a cursor of one query
cannot page another. The signing key comes from the server's configuration, so every worker and
every host with the same configuration accepts the cursors of the others.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from itsdangerous import BadSignature, URLSafeSerializer

from ..config import Settings
from ..errors import InvalidRequest

log = logging.getLogger(__name__)

CURSOR_SECRET_FILE = "cursor-secret"
MAX_CURSOR_CHARS = 2048


def _query_hash(query: Sequence[str]) -> str:
    return hashlib.sha256("\x00".join(query).encode("utf-8", "surrogatepass")).hexdigest()[:24]


class CursorCodec:
    """Encode "continue after this key" for one query; decode it or raise InvalidRequest."""

    def __init__(self, secret: str | bytes):
        self._serializer = URLSafeSerializer(secret, salt="rolegate.audit.cursor")

    def encode(self, query: Sequence[str], after: str) -> str:
        return self._serializer.dumps({"q": _query_hash(query), "after": after})

    def decode(self, cursor: str, query: Sequence[str]) -> str:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise InvalidRequest("cursor: too long", code="invalid_cursor")
        try:
            data = self._serializer.loads(cursor)
        except BadSignature:
            raise InvalidRequest(
                "cursor: not a cursor this server issued (altered or truncated); start again "
                "without a cursor",
                code="invalid_cursor",
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("after"), str):
            raise InvalidRequest("cursor: malformed", code="invalid_cursor")
        if data.get("q") != _query_hash(query):
            raise InvalidRequest(
                "cursor: it belongs to another query; keep the same org, resource and action",
                code="invalid_cursor",
            )
        return data["after"]


def _data_dir_secret(data_dir: Path) -> str:
    path = data_dir / CURSOR_SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker wrote it first
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secret + "\n")
    return secret


def cursor_secret(settings: Settings) -> str:
    """The API key secret or the JWT secret when set, else one kept in the data dir."""
    configured = settings.api_key_secret or settings.jwt_secret
    if configured:
        return configured
    try:
        return _data_dir_secret(settings.data_path)
    except OSError as exc:
        log.warning(
            "cannot keep the cursor secret in %s (%s): cursors are per process",
            settings.data_path,
            exc,
        )
        return secrets.token_urlsafe(48)
