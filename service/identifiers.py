"""The one grammar of org ids and subjects, shared by the admin API, the policy files and the CLI.

Org ids: `ORG_ID_PATTERN`, lowercase letters, digits, `_` and `-`, starting with a letter or
digit, at most 63 characters. Lowercase only, so `ACME` cannot sit beside `acme`; no `.` or `/`,
so every org id is a safe file name (`<org>.csv`) and one URL path segment. `roles` is refused
(the template file is `roles.csv`).

Subjects (members, API-key holders, rule subjects): 1 to `SUBJECT_MAX_LENGTH` characters, no
control or invisible characters, not `*`, none of Casbin's tokenizer characters `, " ( ) [ ]`,
no leading or trailing spaces and no ` #`. `/` is allowed: URL routes take the subject as the
rest of the path, percent-encoded (`/v1/orgs/acme/members/team%2Fops`).

    check_org_id("acme")          # -> "acme"
    check_org_id("ACME")          # InvalidRequest, code invalid_org_id
    org_id_problem("../x")        # -> "use lowercase letters, digits, ..." (None when valid)
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from .errors import InvalidRequest

ORG_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
ORG_ID_MAX_LENGTH = 63
RESERVED_ORG_IDS = frozenset({"roles"})
# 255: the store's column width (sqlalchemy_adapter's String(255)).
SUBJECT_MAX_LENGTH = 255
SUBJECT_FORBIDDEN_CHARACTERS = ',"()[]'
# For schemas (ECMA-262 syntax); `subject_problem` is the authority (it also refuses Unicode
# format characters such as U+200B, which a pattern cannot list).
SUBJECT_PATTERN = r'^(?!\*$)(?! )(?!.* $)(?!.*\s#)[^\x00-\x1f\x7f,"()\[\]]{1,255}$'

_ORG_ID = re.compile(ORG_ID_PATTERN)
_COMMENT = re.compile(r"\s#")
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def org_id_problem(value: Any) -> str | None:
    """Why `value` is not a valid org id, or None."""
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if value in RESERVED_ORG_IDS:
        return f"{value!r} is reserved (the template file is roles.csv): choose another id"
    if not _ORG_ID.fullmatch(value):
        shown = value if value.isprintable() else value.encode("unicode_escape").decode()
        return (
            f"{shown!r} is not an org id: use lowercase letters, digits, `_` and `-`, starting "
            f"with a letter or digit, at most {ORG_ID_MAX_LENGTH} characters"
        )
    return None


def check_org_id(value: Any, field: str = "org") -> str:
    """`value` when it is a valid org id; InvalidRequest (400 `invalid_org_id`) otherwise."""
    problem = org_id_problem(value)
    if problem is not None:
        raise InvalidRequest(f"{field}: {problem}", code="invalid_org_id")
    return value


def subject_problem(value: Any) -> str | None:
    """Why `value` is not a valid subject, or None."""
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > SUBJECT_MAX_LENGTH:
        return f"{len(value)} characters long; at most {SUBJECT_MAX_LENGTH}"
    if value == "*":
        return "`*` is not a subject (it means every org in rules)"
    for char in value:
        if unicodedata.category(char) in _INVISIBLE_CATEGORIES:
            return f"contains the control or invisible character U+{ord(char):04X}"
    bad = next((char for char in value if char in SUBJECT_FORBIDDEN_CHARACTERS), None)
    if bad is not None:
        return f'contains {bad!r}; a subject may not contain , " ( ) [ ] (Casbin misreads them)'
    if value != value.strip():
        return "starts or ends with spaces"
    if _COMMENT.search(value):
        return "contains ` #` (Casbin reads the rest of the line as a comment)"
    return None


def check_subject_id(value: Any, field: str = "subject") -> str:
    """`value` when it is a valid subject; InvalidRequest (400 `invalid_subject`) otherwise."""
    problem = subject_problem(value)
    if problem is not None:
        raise InvalidRequest(f"{field}: {problem}", code="invalid_subject")
    return value


__all__ = [
    "ORG_ID_MAX_LENGTH",
    "ORG_ID_PATTERN",
    "RESERVED_ORG_IDS",
    "SUBJECT_FORBIDDEN_CHARACTERS",
    "SUBJECT_MAX_LENGTH",
    "SUBJECT_PATTERN",
    "check_org_id",
    "check_subject_id",
    "org_id_problem",
    "subject_problem",
]
