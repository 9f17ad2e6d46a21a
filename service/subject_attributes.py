"""Subject attributes: a small policy information point (PIP), e.g. the email of each subject.

AuthZEN PEPs identify subjects by opaque ids (an IdP's `sub`) but describe resources with other
identifiers (a todo's `ownerID` is an email). Rolegate keeps named text attributes per (org,
subject) in the `subject_attributes` table of the store's database, managed like memberships:

- a file (`ROLEGATE_SUBJECT_ATTRIBUTES`, CSV with a header `org,subject,<name>,...`, one row per
  subject, an empty cell meaning "no such attribute") that `serve --sync-policies` / a sync makes
  the table equal to, in one transaction;
- the admin API (`PUT /v1/orgs/<org>/subjects/<subject>/attributes`), which replaces one
  subject's attributes.

Attributes never grant anything by themselves: they are read to translate a request (see
`rolegate.authzen`), and the engine decides.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .errors import InvalidRequest, PolicyError
from .store.db import subject_attributes, transaction
from .validation import validate_org, validate_text

MAX_ATTRIBUTES = 32
MAX_VALUE_BYTES = 1024
MAX_FILE_BYTES = 10 * 1024 * 1024
FIXED_COLUMNS = ("org", "subject")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


Attributes = dict[str, str]


@dataclass(frozen=True)
class SubjectRecord:
    org: str
    subject: str
    attributes: Mapping[str, str]


def validate_name(value: Any, field: str = "name") -> str:
    name = validate_text(value, field, max_length=64)
    if not _NAME.fullmatch(name):
        raise InvalidRequest(
            f"{field}: an attribute name starts with a letter and holds letters, digits, "
            "`_`, `.` or `-` (at most 64)"
        )
    return name


def validate_attributes(value: Any, field: str = "attributes") -> Attributes:
    """An object of at most MAX_ATTRIBUTES name -> non-empty text value."""
    if not isinstance(value, dict):
        raise InvalidRequest(f"{field}: expected an object of attribute name -> text value")
    if len(value) > MAX_ATTRIBUTES:
        raise InvalidRequest(f"{field}: at most {MAX_ATTRIBUTES} attributes")
    return {
        validate_name(name, f"{field}.{name}"): validate_text(
            text, f"{field}.{name}", max_length=MAX_VALUE_BYTES
        )
        for name, text in value.items()
    }


# --------------------------------------------------------------------------- the file


def parse_attributes_file(text: str, shown: str) -> list[SubjectRecord]:
    """Records of an `org,subject,<name>,...` CSV; PolicyError (`file:line`) for a problem."""
    rows = csv.reader(io.StringIO(text))
    records: list[SubjectRecord] = []
    seen: set[tuple[str, str]] = set()
    header: list[str] | None = None
    for row in rows:
        line = rows.line_num
        cells = [cell.strip() for cell in row]
        if not cells or all(not cell for cell in cells) or cells[0].startswith("#"):
            continue
        try:
            if header is None:
                header = _header(cells)
                continue
            record = _record(header, cells)
        except InvalidRequest as exc:
            raise PolicyError(exc.message, location=f"{shown}:{line}") from None
        key = (record.org, record.subject)
        if key in seen:
            raise PolicyError(
                f"subject {record.subject!r} of org {record.org!r} appears twice",
                location=f"{shown}:{line}",
            )
        seen.add(key)
        records.append(record)
    if header is None:
        raise PolicyError("no header line `org,subject,<attribute>,...`", location=f"{shown}:1")
    return records


def _header(cells: list[str]) -> list[str]:
    if tuple(cells[:2]) != FIXED_COLUMNS or len(cells) < 3:
        raise InvalidRequest("the header must read `org,subject,<attribute>,...`")
    names = [validate_name(name, "header") for name in cells[2:]]
    if len(set(names)) != len(names):
        raise InvalidRequest("header: an attribute is named twice")
    if len(names) > MAX_ATTRIBUTES:
        raise InvalidRequest(f"header: at most {MAX_ATTRIBUTES} attributes")
    return names


def _record(header: list[str], cells: list[str]) -> SubjectRecord:
    if len(cells) > len(header) + 2:
        raise InvalidRequest(f"{len(cells)} values for {len(header) + 2} columns")
    cells = cells + [""] * (len(header) + 2 - len(cells))
    org = validate_org(cells[0])
    subject = validate_text(cells[1], "subject")
    values = {
        name: validate_text(value, name, max_length=MAX_VALUE_BYTES)
        for name, value in zip(header, cells[2:], strict=True)
        if value
    }
    return SubjectRecord(org, subject, values)


def read_attributes_file(path: Path) -> list[SubjectRecord]:
    shown = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read: {exc.strerror}", location=shown) from None
    if len(data) > MAX_FILE_BYTES:
        raise PolicyError(f"larger than {MAX_FILE_BYTES} bytes", location=shown)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PolicyError("not UTF-8", location=f"{shown}:1") from None
    return parse_attributes_file(text, shown)


# --------------------------------------------------------------------------- the table


class SubjectAttributeStore:
    """The `subject_attributes` rows in the store's database."""

    def __init__(self, engine: sa.Engine):
        self._engine = engine

    def _rows(self, org: str, subject: str, attributes: Mapping[str, str]) -> list[dict]:
        return [
            {"org": org, "subject": subject, "name": name, "value": value}
            for name, value in sorted(attributes.items())
        ]

    def get(self, org: str, subject: str) -> Attributes:
        stmt = sa.select(subject_attributes.c.name, subject_attributes.c.value).where(
            subject_attributes.c.org == org, subject_attributes.c.subject == subject
        )
        with transaction(self._engine, write=False, what="subject attributes") as conn:
            return {row.name: row.value for row in conn.execute(stmt)}

    def set(self, org: str, subject: str, attributes: Mapping[str, str]) -> None:
        """Make `attributes` the subject's attributes (an empty mapping removes them all)."""
        with transaction(self._engine, write=True, what="subject attributes") as conn:
            conn.execute(
                sa.delete(subject_attributes).where(
                    subject_attributes.c.org == org, subject_attributes.c.subject == subject
                )
            )
            rows = self._rows(org, subject, attributes)
            if rows:
                conn.execute(sa.insert(subject_attributes), rows)

    def replace_all(self, records: Iterable[SubjectRecord]) -> int:
        """Make the whole table equal `records` (one transaction); returns the row count."""
        rows = [
            row
            for record in records
            for row in self._rows(record.org, record.subject, record.attributes)
        ]
        with transaction(self._engine, write=True, what="subject attributes") as conn:
            conn.execute(sa.delete(subject_attributes))
            if rows:
                conn.execute(sa.insert(subject_attributes), rows)
        return len(rows)

    def delete_org(self, org: str) -> None:
        with transaction(self._engine, write=True, what="subject attributes") as conn:
            conn.execute(sa.delete(subject_attributes).where(subject_attributes.c.org == org))


__all__ = [
    "SubjectAttributeStore",
    "SubjectRecord",
    "check_attributes",
    "validate_attributes",
    "parse_attributes_file",
    "read_attributes_file",
    "subject_attributes",
]


# Former names, kept for one release.
check_name = validate_name
check_attributes = validate_attributes
