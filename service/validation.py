"""Validating names and text from requests, files and the command line (no dependencies).

validate_text(value, "subject")          # a non-empty string without control characters
validate_org(value)                      # one org id: ^[a-z0-9][a-z0-9_-]{0,62}$

Lengths count characters, as the OpenAPI document's `maxLength` does.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from .errors import InvalidRequest
from .identifiers import org_id_problem

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


def validate_org(value: Any, field: str = "org", *, where: str = "") -> str:
    """One org id of the one grammar (`rolegate.identifiers`, what the OpenAPI document states):
    lowercase letters, digits, `_` and `-`, starting with a letter or digit, at most 63."""
    org = validate_text(value, field, where=where)
    if "*" in org:
        raise InvalidRequest(f"{where}{field}: must name one organisation (no '*')")
    problem = org_id_problem(org)
    if problem is not None:
        raise InvalidRequest(f"{where}{field}: {problem}", code="invalid_org_id")
    return org
