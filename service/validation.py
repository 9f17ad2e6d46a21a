"""Validating names and text from requests, files and the command line (no dependencies).

validate_text(value, "subject")          # a non-empty string without control characters
validate_org(value)                      # one organisation (no `*`)
"""

from __future__ import annotations

import unicodedata
from typing import Any

from .errors import InvalidRequest

MAX_NAME_CHARS = 256


def validate_text(
    value: Any, field: str, *, max_bytes: int = MAX_NAME_CHARS, where: str = ""
) -> str:
    """A non-empty string with no control characters, at most `max_bytes` UTF-8 bytes.

    Errors name the field as `{where}{field}` (e.g. `checks[3].resource`).
    """
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}{field}: expected a string, got {type(value).__name__}")
    if not value:
        raise InvalidRequest(f"{where}{field}: must not be empty")
    if len(value) * 4 > max_bytes and len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidRequest(f"{where}{field}: longer than {max_bytes} bytes")
    if not (value.isascii() and value.isprintable()) and any(
        unicodedata.category(char) in ("Cc", "Cs") for char in value
    ):
        raise InvalidRequest(f"{where}{field}: contains control characters")
    return value


def validate_org(value: Any, field: str = "org", *, where: str = "") -> str:
    org = validate_text(value, field, where=where)
    if "*" in org:
        raise InvalidRequest(f"{where}{field}: must name one organisation (no '*')")
    return org
