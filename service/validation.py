"""Validating names and text from requests, files and the command line (no dependencies).

validate_text(value, "subject")          # a non-empty string without control characters
validate_org(value)                      # one org id: ^[a-z0-9][a-z0-9_-]{0,62}$

Lengths count characters, as the OpenAPI document's `maxLength` does.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from .errors import InvalidRequest

MAX_NAME_CHARS = 256


def validate_text(
    value: Any, field: str, *, max_length: int = MAX_NAME_CHARS, where: str = ""
) -> str:
    """A non-empty string with no control characters, at most `max_length` characters.

    Errors name the field as `{where}{field}` (e.g. `checks[3].resource`).
    """
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}{field}: expected a string, got {type(value).__name__}")
    if not value:
        raise InvalidRequest(f"{where}{field}: must not be empty")
    if len(value) > max_length:
        raise InvalidRequest(f"{where}{field}: longer than {max_length} characters")
    if not (value.isascii() and value.isprintable()) and any(
        unicodedata.category(char) in ("Cc", "Cs") for char in value
    ):
        raise InvalidRequest(f"{where}{field}: contains control characters")
    return value


# The org id grammar (docs/admin.md); TODO(merge): rolegate.identifiers.ORG_ID_PATTERN.
_ORG_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def validate_org(value: Any, field: str = "org", *, where: str = "") -> str:
    """One org id: lowercase letters, digits, `_` and `-`, starting with a letter or digit, at
    most 63 characters (what the OpenAPI document states)."""
    org = validate_text(value, field, where=where)
    if "*" in org:
        raise InvalidRequest(f"{where}{field}: must name one organisation (no '*')")
    if not _ORG_ID.fullmatch(org):
        raise InvalidRequest(
            f"{where}{field}: {org!r} is not an org id: use lowercase letters, digits, `_` and "
            "`-`, starting with a letter or digit, at most 63 characters",
            code="invalid_org_id",
        )
    return org
