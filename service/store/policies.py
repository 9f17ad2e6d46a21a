"""The policy store: Casbin rules in `casbin_rule`, a revision, and a hash-chained change log.

Every write goes through `PolicyStore.apply`, one transaction that deletes exactly the removed
rows, inserts the added rows in one statement, bumps the revision and appends to the change log.
We never call the adapter's `remove_policies` (it deletes every combination of the given values)
nor its `add_policies` (one commit per row); see /work/shared/reference/pycasbin-traps.md.

Rules are the plain tuples of `rolegate.rules`: `("p", sub, org, obj, act, eft)` and
`("g", member, role, org)`.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import itertools
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from ..errors import Conflict, InvalidRequest, PolicyError, StoreUnavailable
from ..rules import EFFECTS, FIELDS_BY_PTYPE, Rule, format_rule, rule_domain, sort_key
from .apikeys import ApiKeyRows
from .attributes import SubjectAttributeRows
from .db import (
    CONNECTION_ERRORS,
    GENESIS_HASH,
    MANAGED_BY_API,
    MANAGED_BY_FILES,
    NOTIFY_CHANNEL,
    OWNERS,
    STATE_ROW_ID,
    STORE_TIMEOUT_S,
    VALUE_COLUMNS,
    VALUE_WIDTH,
    casbin_rule,
    change_log,
    failure_reason,
    is_postgresql,
    make_engine,
    policy_state,
    transaction,
)
from .decisions import DecisionRows
from .feed import NotifyFeed
from .schema import init_schema

__all__ = [
    "ChainVerdict",
    "ChangeEntry",
    "ChangeSet",
    "DomainReload",
    "FileSync",
    "PolicyStore",
    "entry_hash",
    "rule_problem",
    "validate_rule",
]

API_KEY_PREFIX = "apikey:"  # rolegate.apikeys.SUBJECT_PREFIX (that module imports the store)
PROGRESS_EVERY = 100_000
_LOOKUP_LIMIT = 200  # more rules to check than this: compare against their domains' rows
_DOMAIN_CHUNK = 500
_INSERT_CHUNK = 10_000  # rows per INSERT when reporting progress
_MISREAD_CHARS = re.compile(r'[,"()\[\]]')
_COMMENT = re.compile(r"(^|\s)#")
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


# --------------------------------------------------------------------------- rule validation


def _control_char(value: str) -> str | None:
    """The first control or invisible formatting character in `value`, if any."""
    if value.isascii():
        match = _ASCII_CONTROL.search(value)
        return match.group() if match else None
    for char in value:
        if unicodedata.category(char) in _INVISIBLE_CATEGORIES:
            return char
    return None


def rule_problem(rule: Sequence[str]) -> tuple[str, str, int] | None:
    """Why `rule` cannot be stored, or None when it is valid.

    Returns `(code, message, index)` where `index` is the offending position in the tuple
    (0 = ptype, 1.. = values). Codes: `unknown-ptype`, `field-count`, `empty-value`,
    `control-char`, `casbin-misread`, `too-long`, `bad-effect`. The same checks serve the CSV
    reader and `PolicyStore.apply`, so whatever the store accepts exports and reads back unchanged.
    """
    if not rule or not all(isinstance(value, str) for value in rule):
        return ("invalid-rule", "a rule is a sequence of strings: ptype then values", 0)
    ptype, values = rule[0], rule[1:]
    fields = FIELDS_BY_PTYPE.get(ptype)
    if fields is None:
        return (
            "unknown-ptype",
            f"unknown rule type {ptype!r}: a line starts with `p` (permission: "
            f"{', '.join(FIELDS_BY_PTYPE['p'])}) or `g` (membership: "
            f"{', '.join(FIELDS_BY_PTYPE['g'])})",
            0,
        )
    if len(values) != len(fields):
        return (
            "field-count",
            f"`{ptype}` rules have {len(fields)} values ({', '.join(fields)}), found {len(values)}",
            min(len(values), len(fields)) if len(values) > len(fields) else 0,
        )
    for index, (name, value) in enumerate(zip(fields, values, strict=True), start=1):
        if value == "":
            return ("empty-value", f"the {name} (value {index}) is empty: give a value", index)
        char = _control_char(value)
        if char is not None:
            return (
                "control-char",
                f"the {name} contains the control or invisible character U+{ord(char):04X}: "
                "remove it",
                index,
            )
        if value != value.strip():
            return (
                "casbin-misread",
                f"the {name} {value!r} starts or ends with spaces, which Casbin strips: "
                "remove them",
                index,
            )
        if _COMMENT.search(value):
            return (
                "casbin-misread",
                f"the {name} {value!r} contains a `#` comment: Casbin keeps text after `#` "
                "inside a line as part of the value; put comments on their own line",
                index,
            )
        bad = _MISREAD_CHARS.search(value)
        if bad is not None:
            return (
                "casbin-misread",
                f"the {name} {value!r} contains {bad.group()!r}: Casbin's policy tokenizer "
                "does not honour quotes and treats commas and ()[] specially, so it would read "
                'this value differently; rename without , " ( ) [ ]',
                index,
            )
        if len(value) > VALUE_WIDTH:
            return (
                "too-long",
                f"the {name} is {len(value)} characters long; the store keeps at most "
                f"{VALUE_WIDTH}",
                index,
            )
    if ptype == "p" and values[-1] not in EFFECTS:
        return (
            "bad-effect",
            f"the effect is {values[-1]!r}: use `allow` or `deny`",
            len(values),
        )
    return None


def validate_rule(rule: Sequence[str]) -> Rule:
    """Return `rule` as a tuple, or raise PolicyError saying what is wrong with it."""
    problem = rule_problem(rule)
    if problem is not None:
        code, message, _index = problem
        shown = format_rule(tuple(map(_printable, rule))) if rule else "(empty)"
        error = PolicyError(f"invalid rule `{shown}`: {message}")
        error.problem_code = code  # type: ignore[attr-defined]
        raise error
    return tuple(rule)


def _printable(value: object) -> str:
    """`value` for messages: control characters escaped (`\\x00`), never raw."""
    text = str(value)
    return text.encode("unicode_escape").decode("ascii") if _control_char(text) else text


def _check_removable(rule: Sequence[str]) -> Rule:
    """Removal is lenient (junk rows written by other tools must stay removable)."""
    if (
        not rule
        or len(rule) > 1 + len(VALUE_COLUMNS)
        or not all(isinstance(value, str) and len(value) <= VALUE_WIDTH for value in rule)
        or rule[0] == ""
    ):
        raise PolicyError(
            f"cannot remove {rule!r}: a rule is a ptype and at most {len(VALUE_COLUMNS)} "
            f"strings of at most {VALUE_WIDTH} characters"
        )
    return tuple(rule)


def _safe_sort_key(rule: Rule) -> tuple:
    try:
        return sort_key(rule)
    except (ValueError, IndexError):  # rows of other ptypes written by other tools: last
        return (True, "\U0010ffff", True, tuple(rule))


def _org(rule: Rule) -> str:
    try:
        return rule_domain(rule)
    except (ValueError, IndexError):
        return ""


# --------------------------------------------------------------------------- value objects


@dataclass(frozen=True)
class ChangeSet:
    """Rules to add and rules to remove, applied together as one revision."""

    added: Sequence[Rule] = ()  # any sequence of rules; kept as a tuple of tuples
    removed: Sequence[Rule] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "added", tuple(tuple(rule) for rule in self.added))
        object.__setattr__(self, "removed", tuple(tuple(rule) for rule in self.removed))

    def is_empty(self) -> bool:
        return not self.added and not self.removed

    @classmethod
    def between(cls, old: Iterable[Rule], new: Iterable[Rule]) -> ChangeSet:
        """What turns `old` into `new` (set difference; duplicates collapse), in canonical order."""
        old_set = {tuple(rule) for rule in old}
        new_set = {tuple(rule) for rule in new}
        return cls(
            added=tuple(sorted(new_set - old_set, key=_safe_sort_key)),
            removed=tuple(sorted(old_set - new_set, key=_safe_sort_key)),
        )

    def domains(self) -> set[str]:
        """The orgs touched (`*` for templates); rules of unknown types are ignored."""
        found = set()
        for rule in (*self.added, *self.removed):
            try:
                found.add(rule_domain(rule))
            except (ValueError, IndexError):
                continue
        return found


def is_api_key_link(rule: Sequence[str]) -> bool:
    """An API key's role link: written with its key, never by files (see `plan_file_sync`)."""
    return len(rule) > 1 and rule[0] == "g" and rule[1].startswith(API_KEY_PREFIX)


@dataclass(frozen=True)
class FileSync:
    """What making the store's file-managed rules equal the policy files does.

    `changes`: rules added and removed (file rules, plus `seeded` rules added as API-managed);
    `adopted`: API-managed rules the files now also declare (they become file-managed);
    `kept`: API-managed rules left alone; `revision`: the store's revision afterwards.
    """

    changes: ChangeSet
    adopted: tuple[Rule, ...] = ()
    seeded: tuple[Rule, ...] = ()
    released: tuple[Rule, ...] = ()  # file-managed rules the files now mark `managed-by api`
    kept: int = 0
    revision: int = 0

    def is_empty(self) -> bool:
        return self.changes.is_empty() and not self.adopted and not self.released

    def to_dict(self) -> dict[str, Any]:
        seeded = set(self.seeded)
        return {
            "added": [format_rule(rule) for rule in self.changes.added if rule not in seeded],
            "removed": [format_rule(rule) for rule in self.changes.removed],
            "seeded": [format_rule(rule) for rule in self.seeded],
            "adopted": [format_rule(rule) for rule in self.adopted],
            "released": [format_rule(rule) for rule in self.released],
            "api_managed_kept": self.kept,
            "revision": self.revision,
        }

    def summary(self) -> str:
        parts = [
            f"{len(self.changes.added) - len(self.seeded)} file rule(s) added",
            f"{len(self.changes.removed)} removed",
        ]
        if self.seeded:
            parts.append(f"{len(self.seeded)} seed rule(s) added as API-managed")
        if self.adopted:
            parts.append(f"{len(self.adopted)} API-managed rule(s) now managed by the files")
        if self.released:
            parts.append(f"{len(self.released)} file rule(s) handed to the admin API")
        parts.append(f"{self.kept} API-managed rule(s) kept")
        return ", ".join(parts)


def plan_file_sync(
    owned: dict[Rule, str],
    wanted: Iterable[Rule],
    seeds: Iterable[Rule] = (),
    seen: set[Rule] | frozenset[Rule] = frozenset(),
) -> FileSync:
    """The pure plan behind `PolicyStore.sync_files`.

    `owned`: stored rule -> owner; `wanted`: the file-managed rules of the files; `seeds`: the
    files' `managed-by api` rules, added (as API-managed) only when the store never held them
    (`seen`: the seeds that appear in the change log). API-key links are never added, removed or
    adopted here: a key and its links are written together by the admin API only.
    """
    wanted_set = {tuple(rule) for rule in wanted}
    keys = sorted(rule for rule in wanted_set if is_api_key_link(rule))
    if keys:
        raise PolicyError(
            f"{_describe(keys)}: API-key role links cannot be managed by policy files (a key "
            "and its roles are created together through the admin API)",
            code="api_key_in_files",
        )
    files_owned = {rule for rule, owner in owned.items() if owner == MANAGED_BY_FILES}
    api_owned = {rule for rule, owner in owned.items() if owner != MANAGED_BY_FILES}
    adopted = wanted_set & api_owned
    added = wanted_set - files_owned - api_owned
    seed_set = {tuple(rule) for rule in seeds} - wanted_set
    released = files_owned & seed_set
    removed = {rule for rule in files_owned - wanted_set - released if not is_api_key_link(rule)}
    seeded = {
        tuple(rule)
        for rule in seeds
        if tuple(rule) not in owned
        and tuple(rule) not in seen
        and tuple(rule) not in wanted_set
        and not is_api_key_link(rule)
    }
    changes = ChangeSet(
        added=tuple(sorted(added | seeded, key=_safe_sort_key)),
        removed=tuple(sorted(removed, key=_safe_sort_key)),
    )
    return FileSync(
        changes,
        adopted=tuple(sorted(adopted, key=_safe_sort_key)),
        seeded=tuple(sorted(seeded, key=_safe_sort_key)),
        released=tuple(sorted(released, key=_safe_sort_key)),
        kept=len(api_owned - adopted),
    )


@dataclass(frozen=True)
class DomainReload:
    """The store at `revision`: the orgs changed since a known revision and their rules now."""

    revision: int
    orgs: frozenset[str]
    rules: list[Rule]
    complete: bool  # False: the changes cannot be told from the log; load everything


@dataclass(frozen=True)
class ChangeEntry:
    """One change-log row: one rule added or removed at one revision."""

    id: int
    revision: int
    at: datetime
    actor: str
    operation: str  # "add" | "remove"
    rule: Rule
    org: str
    prev_hash: str
    hash: str = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, shared by the API and the CLI."""
        return {
            "id": self.id,
            "revision": self.revision,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "operation": self.operation,
            "ptype": self.rule[0] if self.rule else None,
            "rule": format_rule(self.rule),
            "org": self.org,
            "hash": self.hash,
        }


def _format_at(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(
    prev_hash: str,
    *,
    revision: int,
    at: str,
    actor: str,
    operation: str,
    ptype: str,
    rule: str,
    org: str,
) -> str:
    """sha256(prev_hash + canonical JSON of the entry's fields), hex. `at` as stored (text)."""
    canonical = json.dumps(
        {
            "revision": revision,
            "at": at,
            "actor": actor,
            "operation": operation,
            "ptype": ptype,
            "rule": rule,
            "org": org,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def _row_hash(row: sa.Row[Any]) -> str:
    return entry_hash(
        row.prev_hash,
        revision=row.revision,
        at=row.at,
        actor=row.actor,
        operation=row.operation,
        ptype=row.ptype,
        rule=row.rule,
        org=row.org,
    )


def _entry(row: sa.Row[Any]) -> ChangeEntry:
    return ChangeEntry(
        id=row.id,
        revision=row.revision,
        at=datetime.fromisoformat(row.at),
        actor=row.actor,
        operation=row.operation,
        rule=tuple(row.rule.split(", ")),
        org=row.org,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


# --------------------------------------------------------------------------- SQL helpers

_CURSOR_NUMBERS = itertools.count(1)
_RULE_COLUMNS = (casbin_rule.c.ptype, *(casbin_rule.c[name] for name in VALUE_COLUMNS))
_OWNED_COLUMNS = (*_RULE_COLUMNS, casbin_rule.c.managed_by)


def _trim(row: Sequence) -> Rule:
    """(ptype, v0..v5) -> rule tuple without trailing NULL/"" columns."""
    end = len(row)
    while end > 1 and not row[end - 1]:
        end -= 1
    return tuple(row[:end])


@functools.cache
def _match_statement(width: int, *, delete: bool) -> sa.Delete | sa.Select[Any]:
    """SELECT/DELETE of the rows equal to a rule of `width` values, in every column.

    Columns past the rule's values must be NULL or "" (the adapter writes NULL). Parameters:
    `k_ptype`, `k_v0`.. (see `_match_params`); cached per width so executemany can reuse it.
    """
    terms = _match_terms(width)
    if delete:
        return sa.delete(casbin_rule).where(*terms)
    return sa.select(casbin_rule.c.id).where(*terms).limit(1)


def _match_terms(width: int) -> list[Any]:
    terms = [casbin_rule.c.ptype == sa.bindparam("k_ptype")]
    for index, name in enumerate(VALUE_COLUMNS):
        column = casbin_rule.c[name]
        if index < width:
            terms.append(column == sa.bindparam(f"k_{name}"))
        else:
            terms.append(sa.or_(column.is_(None), column == ""))
    return terms


@functools.cache
def _owner_statement(width: int) -> sa.Select[Any]:
    return sa.select(casbin_rule.c.managed_by).where(*_match_terms(width))


@functools.cache
def _owner_update_statement(width: int) -> sa.Update:
    return (
        sa.update(casbin_rule)
        .where(*_match_terms(width))
        .values(managed_by=sa.bindparam("new_owner"))
    )


def _check_owner(managed_by: str) -> None:
    if managed_by not in OWNERS:
        raise InvalidRequest(f"managed_by: expected one of {', '.join(OWNERS)}")


def _match_params(rule: Rule) -> dict:
    params = {"k_ptype": rule[0]}
    for index, value in enumerate(rule[1:]):
        params[f"k_{VALUE_COLUMNS[index]}"] = value
    return params


def _domain_column_set(rule: Rule) -> bool:
    """Whether `rule` would be found by a domain load (p: v1 set, g: v2 set)."""
    return (rule[0] == "p" and len(rule) > 2) or (rule[0] == "g" and len(rule) > 3)


def _domain_clause(domains: Sequence[str]) -> sa.ColumnElement[bool]:
    return sa.or_(
        sa.and_(casbin_rule.c.ptype == "p", casbin_rule.c.v1.in_(domains)),
        sa.and_(casbin_rule.c.ptype == "g", casbin_rule.c.v2.in_(domains)),
    )


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _row_values(rule: Rule, managed_by: str = MANAGED_BY_FILES) -> dict[str, str | None]:
    values: dict[str, str | None] = {"ptype": rule[0], "managed_by": managed_by}
    for index, name in enumerate(VALUE_COLUMNS):
        values[name] = rule[index + 1] if index + 1 < len(rule) else None
    return values


def _note(seen: set[Rule], rule: Rule) -> bool:
    """Add `rule` to `seen`; False (for use in a filter: the first sighting is not a repeat)."""
    seen.add(rule)
    return False


def _describe(rules: Sequence[Rule], limit: int = 3) -> str:
    shown = ", ".join(f"`{format_rule(rule)}`" for rule in rules[:limit])
    more = len(rules) - limit
    return shown + (f" (and {more} more)" if more > 0 else "")


# --------------------------------------------------------------------------- the store


class PolicyStore:
    """Rules, revision and change log in one SQL database (SQLite file or PostgreSQL).

    Reads are consistent snapshots (one transaction; REPEATABLE READ on PostgreSQL). Writes are
    serialized on the `policy_state` row (`SELECT ... FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE`
    on SQLite), so concurrent writers get consecutive, distinct revisions.
    """

    def __init__(self, engine: sa.Engine):
        self._engine = engine
        self._postgresql = is_postgresql(engine)

    @classmethod
    def from_url(cls, url: str) -> PolicyStore:
        """Engine for `url` plus the schema (created when missing)."""
        engine = make_engine(url)
        try:
            init_schema(engine)
        except CONNECTION_ERRORS as exc:
            engine.dispose()
            raise StoreUnavailable(f"policy store unreachable: {failure_reason(exc)}") from exc
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def sql_engine(self) -> sa.Engine:
        """The SQLAlchemy engine of the store's database (not the decision engine)."""
        return self._engine

    @property
    def engine(self) -> sa.Engine:
        """Former name of `sql_engine`, kept for one release."""
        return self._engine

    def dispose(self) -> None:
        self._engine.dispose()

    # ---------------------------------------------------------------- repositories

    def api_key_rows(self) -> ApiKeyRows:
        """The `api_keys` rows (same database: a key commits with its role links)."""
        return ApiKeyRows(self._engine)

    def subject_attribute_rows(self) -> SubjectAttributeRows:
        return SubjectAttributeRows(self._engine)

    def decision_rows(self) -> DecisionRows:
        return DecisionRows(self._engine)

    def change_feed(self) -> NotifyFeed | None:
        """LISTEN/NOTIFY on PostgreSQL; None on SQLite (followers poll the revision)."""
        if not self._postgresql:
            return None
        return NotifyFeed(self._engine.url.render_as_string(hide_password=False))

    # ---------------------------------------------------------------- transactions

    def _transaction(
        self, *, write: bool, timeout: float | None = STORE_TIMEOUT_S
    ) -> AbstractContextManager[sa.Connection]:
        return transaction(self._engine, write=write, timeout=timeout)

    def _current_revision(self, conn: sa.Connection, *, lock: bool) -> int:
        stmt = sa.select(policy_state.c.revision).where(policy_state.c.id == STATE_ROW_ID)
        if lock:
            stmt = stmt.with_for_update()
        revision = conn.execute(stmt).scalar()
        if revision is None:
            raise StoreUnavailable(
                "the policy store is not initialised (no policy_state row): run init_schema "
                "or the database migrations"
            )
        return int(revision)

    # ---------------------------------------------------------------- reads

    def revision(self) -> int:
        with self._transaction(write=False) as conn:
            return self._current_revision(conn, lock=False)

    def load_all(self, progress: Callable[[int], None] | None = None) -> tuple[int, list[Rule]]:
        """The revision and every rule, read in one transaction. Order is unspecified."""
        with self._transaction(write=False, timeout=None) as conn:  # the whole store: no bound
            revision = self._current_revision(conn, lock=False)
            rules = self._read_rules(conn, None, progress)
        return revision, rules

    def load_domains(
        self, domains: Iterable[str], progress: Callable[[int], None] | None = None
    ) -> tuple[int, list[Rule]]:
        """The revision and the rules of `domains` (p: v1, g: v2; exact match), one transaction."""
        wanted = sorted(set(domains))
        with self._transaction(write=False) as conn:
            revision = self._current_revision(conn, lock=False)
            rules = self._read_domains(conn, wanted, progress)
        return revision, rules

    def load_changes(self, since_revision: int, *, max_entries: int = 10_000) -> DomainReload:
        """What changed after `since_revision`, read in one transaction: the store's revision, the
        orgs touched by the change-log entries after `since_revision`, and those orgs' rules.

        `complete` is False (and no rules are read) when the caller must load everything instead:
        more than `max_entries` entries, a revision missing from the change log, or a store
        behind `since_revision` (restored from a backup).
        """
        with self._transaction(write=False) as conn:
            revision = self._current_revision(conn, lock=False)
            if revision == since_revision:
                return DomainReload(revision, frozenset(), [], complete=True)
            if revision < since_revision:
                return DomainReload(revision, frozenset(), [], complete=False)
            newer = change_log.c.revision > since_revision
            count, first, last, revisions = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.min(change_log.c.revision),
                    sa.func.max(change_log.c.revision),
                    sa.func.count(sa.distinct(change_log.c.revision)),
                ).where(newer)
            ).one()
            contiguous = (
                first == since_revision + 1
                and last == revision
                and revisions == revision - since_revision
            )
            if count > max_entries or not contiguous:
                return DomainReload(revision, frozenset(), [], complete=False)
            orgs = frozenset(
                conn.execute(sa.select(change_log.c.org).distinct().where(newer)).scalars()
            )
            rules = self._read_domains(conn, sorted(orgs))
        return DomainReload(revision, orgs, rules, complete=True)

    def _read_domains(
        self,
        conn: sa.Connection,
        domains: Sequence[str],
        progress: Callable[[int], None] | None = None,
    ) -> list[Rule]:
        rules: list[Rule] = []
        for chunk in _chunks(domains, _DOMAIN_CHUNK):
            rules.extend(self._read_rules(conn, _domain_clause(chunk), progress, len(rules)))
        return rules

    def _read_rules(
        self,
        conn: sa.Connection,
        where: sa.ColumnElement[bool] | None,
        progress: Callable[[int], None] | None = None,
        done: int = 0,
    ) -> list[Rule]:
        """Rules as tuples, read from the DBAPI cursor in batches (no Row or ORM object per row).

        2M+ rows make 10M+ small objects: the cyclic GC is paused meanwhile (tuples of str
        cannot form cycles), which roughly halves the time.
        """
        stmt = sa.select(*_RULE_COLUMNS)
        if where is not None:
            stmt = stmt.where(where)
        cursor = self._dbapi_cursor(conn, stmt)
        rules: list[Rule] = []
        append = rules.append
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            while batch := cursor.fetchmany(PROGRESS_EVERY):
                for row in batch:
                    # Fast paths for the two shapes we write: p (5 values), g (3 values).
                    if row[6] is None:
                        if row[5]:
                            append(tuple(row[:6]))
                            continue
                        if row[5] is None and row[4] is None and row[3]:
                            append(tuple(row[:4]))
                            continue
                    append(_trim(row))
                if progress is not None:
                    progress(done + len(rules))
        finally:
            if gc_was_enabled:
                gc.enable()
            cursor.close()
        return rules

    def _dbapi_cursor(self, conn: sa.Connection, stmt: sa.Select[Any]) -> Any:
        """`stmt` executed on a DBAPI cursor of `conn`'s transaction: a server-side (named)
        cursor on PostgreSQL, so millions of rows stream in batches instead of arriving at once.
        (SQLAlchemy's `stream_results` pre-buffers rows that a raw `fetchmany` would then miss.)
        """
        compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        named = compiled.construct_params()
        params: Any = named
        if compiled.positional:
            params = [named[name] for name in compiled.positiontup or ()]
        dbapi_connection: Any = conn.connection.dbapi_connection
        if self._postgresql:
            cursor = dbapi_connection.cursor(name=f"rolegate_rules_{next(_CURSOR_NUMBERS)}")
            cursor.itersize = PROGRESS_EVERY
        else:
            cursor = dbapi_connection.cursor()
        cursor.execute(compiled.string, params)
        return cursor

    # ---------------------------------------------------------------- writes

    def apply(
        self,
        changes: ChangeSet,
        *,
        actor: str,
        expected_revision: int | None = None,
        progress: Callable[[int], None] | None = None,
        also: Callable[[sa.Connection], None] | None = None,
        managed_by: str | None = None,
    ) -> int:
        """Apply `changes` as one new revision (one transaction) and return that revision.

        `also(conn)` runs in the same transaction after the rules are written, for rows that
        must commit or roll back with them (an API key and its role links).

        `managed_by`: who writes (`files` or `api`). Added rules are recorded as theirs; removing
        a rule another owner manages raises Conflict `managed_by_files` / `managed_by_api`.
        None (a local tool that owns everything): no ownership check, new rows are `files`.

        Raises PolicyError (invalid rule, nothing written), Conflict with code `rule_exists`
        (adding a rule already stored), `rule_missing` (removing a rule not stored) or
        `revision_conflict` (`expected_revision` is not the current one), StoreUnavailable.
        An empty change set writes nothing and returns the current revision. `progress(n)`,
        when given, is called after each chunk of `n` added rows (still one transaction).
        """
        self._check_actor(actor)
        if managed_by is not None:
            _check_owner(managed_by)
        self._check_changes(changes)
        if changes.is_empty() and expected_revision is None:
            return self.revision()
        with self._transaction(write=True) as conn:
            current = self._current_revision(conn, lock=True)
            if expected_revision is not None and expected_revision != current:
                raise Conflict(
                    f"the policy store is at revision {current}, not {expected_revision}: "
                    "reload and retry",
                    code="revision_conflict",
                )
            if changes.is_empty():
                return current
            if managed_by is not None:
                self._check_owned(conn, changes.removed, managed_by)
            revision = self._apply_locked(
                conn,
                changes,
                actor=actor,
                current=current,
                progress=progress,
                managed_by=managed_by or MANAGED_BY_FILES,
            )
            if also is not None:
                also(conn)
            return revision

    def replace_all(
        self, rules: Iterable[Rule], *, actor: str, domains: Iterable[str] | None = None
    ) -> tuple[ChangeSet, int]:
        """Make the store (or only the rules of `domains`) equal to `rules`, as one revision,
        whoever manages the rows (new rows are file-managed; see `sync_files` for the import
        that keeps API-managed rules).

        With `domains`, every rule must belong to one of them (PolicyError otherwise) and the
        rules of other domains are untouched. Duplicates in `rules` collapse. Returns the change
        set applied and the resulting revision (unchanged when nothing differs).
        """
        self._check_actor(actor)
        wanted = {validate_rule(rule) for rule in rules}
        scope = None if domains is None else sorted(set(domains))
        if scope is not None:
            outside = sorted(
                (rule for rule in wanted if rule_domain(rule) not in scope), key=sort_key
            )
            if outside:
                raise PolicyError(
                    f"{_describe(outside)}: outside the domains being replaced "
                    f"({', '.join(scope) or 'none'})"
                )
        # The whole store (an import) is not bounded in time; one org's rules are.
        timeout = None if scope is None else STORE_TIMEOUT_S
        with self._transaction(write=True, timeout=timeout) as conn:
            current = self._current_revision(conn, lock=True)
            if scope is None:
                stored = self._read_rules(conn, None)
            else:
                stored = self._read_domains(conn, scope)
            changes = ChangeSet.between(stored, wanted)
            if changes.is_empty():
                return changes, current
            revision = self._apply_locked(conn, changes, actor=actor, current=current, diffed=True)
            return changes, revision

    @staticmethod
    def _check_actor(actor: str) -> None:
        if not isinstance(actor, str) or not actor.strip() or len(actor) > VALUE_WIDTH:
            raise InvalidRequest(
                f"actor must be a non-empty string of at most {VALUE_WIDTH} characters"
            )

    @staticmethod
    def _check_changes(changes: ChangeSet) -> None:
        added = [validate_rule(rule) for rule in changes.added]
        removed = [_check_removable(rule) for rule in changes.removed]
        for name, rules in (("added", added), ("removed", removed)):
            if len(set(rules)) != len(rules):
                seen: set[Rule] = set()
                twice = [rule for rule in rules if rule in seen or _note(seen, rule)]
                raise PolicyError(f"{_describe(twice)}: listed twice in the {name} rules")
        both = sorted(set(added) & set(removed), key=_safe_sort_key)
        if both:
            raise PolicyError(f"{_describe(both)}: both added and removed in one change set")

    def _existing(self, conn: sa.Connection, rules: Sequence[Rule]) -> set[Rule]:
        """Which of `rules` are stored (exact match).

        Few rules: one indexed lookup each. Many: read the rows of their domains once (domain
        index) and compare in Python, which beats thousands of round trips.
        """
        wanted = set(rules)
        found: set[Rule] = set()
        by_domain = {rule for rule in wanted if _domain_column_set(rule)}
        if len(wanted) > _LOOKUP_LIMIT and by_domain:
            domains = sorted({_org(rule) for rule in by_domain})
            found.update(rule for rule in self._read_domains(conn, domains) if rule in wanted)
            remaining = wanted - by_domain
        else:
            remaining = wanted
        for rule in remaining:
            stmt = _match_statement(len(rule) - 1, delete=False)
            if conn.execute(stmt, _match_params(rule)).first() is not None:
                found.add(rule)
        return found

    def _apply_locked(
        self,
        conn: sa.Connection,
        changes: ChangeSet,
        *,
        actor: str,
        current: int,
        progress: Callable[[int], None] | None = None,
        diffed: bool = False,
        managed_by: str = MANAGED_BY_FILES,
        api_managed: frozenset[Rule] = frozenset(),
    ) -> int:
        """Write `changes` as revision `current + 1`; the caller holds the write lock.

        `diffed`: `changes` was computed against the rows read under this lock (replace_all),
        so the existence checks would only repeat that read.
        """
        if not diffed:
            existing = self._existing(conn, (*changes.added, *changes.removed))
            present = [rule for rule in changes.added if rule in existing]
            if present:
                raise Conflict(
                    f"cannot add {_describe(present)}: already in the policy store",
                    code="rule_exists",
                )
            missing = [rule for rule in changes.removed if rule not in existing]
            if missing:
                raise Conflict(
                    f"cannot remove {_describe(missing)}: not in the policy store",
                    code="rule_missing",
                )

        # Exactly the rows equal to each removed rule (duplicates of that rule included).
        by_width: dict[int, list[dict]] = {}
        for rule in changes.removed:
            by_width.setdefault(len(rule) - 1, []).append(_match_params(rule))
        for width, params in sorted(by_width.items()):
            conn.execute(_match_statement(width, delete=True), params)  # executemany

        def row(rule: Rule) -> dict:
            return _row_values(rule, MANAGED_BY_API if rule in api_managed else managed_by)

        if changes.added and progress is None:
            conn.execute(sa.insert(casbin_rule), [row(rule) for rule in changes.added])
        elif changes.added and progress is not None:  # in chunks, so a progress bar can follow
            for chunk in _chunks(changes.added, _INSERT_CHUNK):
                conn.execute(sa.insert(casbin_rule), [row(rule) for rule in chunk])
                progress(len(chunk))

        revision = current + 1
        # New entries chain from the recorded head, so entries deleted from the end stay a
        # visible break even after later writes.
        prev_hash = _chain_tip(conn)
        at = _format_at(datetime.now(UTC))
        entries = []
        # Removals first, then additions, each in canonical order (whatever the caller's order).
        for operation, rules in (("remove", changes.removed), ("add", changes.added)):
            for rule in sorted(rules, key=_safe_sort_key):
                entry = {
                    "revision": revision,
                    "at": at,
                    "actor": actor,
                    "operation": operation,
                    "ptype": rule[0],
                    "rule": format_rule(rule),
                    "org": _org(rule),
                }
                entry["prev_hash"] = prev_hash
                entry["hash"] = prev_hash = entry_hash(prev_hash, **_hash_fields(entry))
                entries.append(entry)
        if entries:
            conn.execute(sa.insert(change_log), entries)
        head = {"head_revision": revision, "head_hash": prev_hash} if entries else {}
        conn.execute(
            sa.update(policy_state)
            .where(policy_state.c.id == STATE_ROW_ID)
            .values(revision=revision, **head)
        )
        if self._postgresql:
            # Delivered to every LISTENing worker when (and only if) this transaction commits.
            conn.execute(
                sa.text("SELECT pg_notify(:channel, :revision)"),
                {"channel": NOTIFY_CHANNEL, "revision": str(revision)},
            )
        return revision

    # ---------------------------------------------------------------- ownership

    def load_owners(self, domains: Iterable[str] | None = None) -> tuple[int, dict[Rule, str]]:
        """The revision and who manages each stored rule (of `domains`, else all), one snapshot.

        A rule stored twice with both owners counts as file-managed.
        """
        with self._transaction(write=False) as conn:
            revision = self._current_revision(conn, lock=False)
            owned = self._read_owned(conn, None if domains is None else sorted(set(domains)))
        return revision, owned

    def file_managed(self, rules: Iterable[Rule]) -> set[Rule]:
        """Which of `rules` are stored as file-managed."""
        wanted = [tuple(rule) for rule in rules]
        if not wanted:
            return set()
        with self._transaction(write=False) as conn:
            owners = self._owners(conn, wanted)
        return {rule for rule, owner in owners.items() if owner == MANAGED_BY_FILES}

    def sync_files(
        self,
        rules: Iterable[Rule],
        *,
        actor: str,
        seeds: Iterable[Rule] = (),
        progress: Callable[[int], None] | None = None,
        expected_revision: int | None = None,
    ) -> FileSync:
        """Make the file-managed rules equal `rules` (one revision); API-managed rules stay.

        `seeds` (the files' `# rolegate: managed-by api` lines) are added as API-managed when the
        store never held them; API-managed rules the files declare become file-managed
        (`adopted`). Used by `import`, `serve --sync-policies`/`--demo` and the watcher.
        """
        self._check_actor(actor)
        wanted = {validate_rule(rule) for rule in rules}
        seed_rules = {validate_rule(rule) for rule in seeds}
        # An import of the whole policy dir: not bounded in time (see rolegate.store.db).
        with self._transaction(write=True, timeout=None) as conn:
            current = self._current_revision(conn, lock=True)
            if expected_revision is not None and expected_revision != current:
                raise Conflict(
                    f"the policy store is at revision {current}, not {expected_revision}: "
                    "reload and retry",
                    code="revision_conflict",
                )
            owned = self._read_owned(conn, None)
            seen = self._logged(conn, seed_rules - set(owned))
            plan = plan_file_sync(owned, wanted, seed_rules, seen)
            for rule in plan.adopted:
                self._set_owner(conn, rule, MANAGED_BY_FILES)
            for rule in plan.released:
                self._set_owner(conn, rule, MANAGED_BY_API)
            revision = current
            if not plan.changes.is_empty():
                revision = self._apply_locked(
                    conn,
                    plan.changes,
                    actor=actor,
                    current=current,
                    progress=progress,
                    diffed=True,
                    api_managed=frozenset(plan.seeded),
                )
        return replace(plan, revision=revision)

    def plan_sync(
        self, rules: Iterable[Rule], *, seeds: Iterable[Rule] = ()
    ) -> tuple[dict[Rule, str], FileSync]:
        """What `sync_files(rules, seeds=seeds)` would do now (its `revision`: the current one),
        with the stored rules and their owners; reads one snapshot, writes nothing."""
        wanted = {validate_rule(rule) for rule in rules}
        seed_rules = {validate_rule(rule) for rule in seeds}
        with self._transaction(write=False) as conn:
            revision = self._current_revision(conn, lock=False)
            owned = self._read_owned(conn, None)
            seen = self._logged(conn, seed_rules - set(owned))
        return owned, replace(plan_file_sync(owned, wanted, seed_rules, seen), revision=revision)

    def _read_owned(self, conn: sa.Connection, domains: Sequence[str] | None) -> dict[Rule, str]:
        clauses = [None] if domains is None else [_domain_clause(c) for c in _chunks(domains, 500)]
        owned: dict[Rule, str] = {}
        for where in clauses:
            stmt = sa.select(*_OWNED_COLUMNS)
            if where is not None:
                stmt = stmt.where(where)
            cursor = self._dbapi_cursor(conn, stmt)
            try:
                while batch := cursor.fetchmany(PROGRESS_EVERY):
                    for row in batch:
                        rule = _trim(row[:-1])
                        if owned.get(rule) != MANAGED_BY_FILES:
                            owned[rule] = row[-1] or MANAGED_BY_FILES
            finally:
                cursor.close()
        return owned

    def _owners(self, conn: sa.Connection, rules: Sequence[Rule]) -> dict[Rule, str]:
        """Owner of each stored rule among `rules` (absent ones are left out)."""
        wanted = set(rules)
        if len(wanted) > _LOOKUP_LIMIT and all(_domain_column_set(rule) for rule in wanted):
            domains = sorted({_org(rule) for rule in wanted})
            owned = self._read_owned(conn, domains)
            return {rule: owner for rule, owner in owned.items() if rule in wanted}
        found: dict[Rule, str] = {}
        for rule in wanted:
            stmt = _owner_statement(len(rule) - 1)
            owners = set(conn.execute(stmt, _match_params(rule)).scalars())
            if owners:
                found[rule] = MANAGED_BY_FILES if MANAGED_BY_FILES in owners else owners.pop()
        return found

    def _check_owned(self, conn: sa.Connection, removed: Sequence[Rule], managed_by: str) -> None:
        if not removed:
            return
        foreign = sorted(
            (rule for rule, owner in self._owners(conn, removed).items() if owner != managed_by),
            key=_safe_sort_key,
        )
        if not foreign:
            return
        if managed_by == MANAGED_BY_API:
            raise Conflict(
                f"cannot remove {_describe(foreign)}: managed by the policy files, not the admin "
                "API; change the policy file and import it (`rolegate import`)",
                code="managed_by_files",
            )
        raise Conflict(
            f"cannot remove {_describe(foreign)}: managed by the admin API; remove it there",
            code="managed_by_api",
        )

    def _set_owner(self, conn: sa.Connection, rule: Rule, owner: str) -> None:
        stmt = _owner_update_statement(len(rule) - 1)
        conn.execute(stmt, {**_match_params(rule), "new_owner": owner})

    def _logged(self, conn: sa.Connection, rules: set[Rule]) -> set[Rule]:
        """Which of `rules` the change log mentions (ever added or removed)."""
        if not rules:
            return set()
        by_text = {format_rule(rule): rule for rule in rules}
        found: set[Rule] = set()
        for org in sorted({_org(rule) for rule in rules}):
            stmt = sa.select(change_log.c.rule).distinct().where(change_log.c.org == org)
            found.update(by_text[text] for text in conn.execute(stmt).scalars() if text in by_text)
        return found

    # ---------------------------------------------------------------- change log

    def changes(
        self,
        *,
        org: str | None = None,
        since: datetime | None = None,
        since_revision: int | None = None,
        limit: int = 1000,
    ) -> list[ChangeEntry]:
        """Change-log entries, oldest first (page with `since_revision` or the last entry's id).

        `org`: only that org's entries (`*` for templates). `since`: at or after this instant
        (naive datetimes are taken as UTC). `since_revision`: revisions strictly greater.
        """
        if limit < 1:
            raise InvalidRequest("limit must be at least 1")
        stmt = sa.select(change_log).order_by(change_log.c.id).limit(limit)
        if org is not None:
            stmt = stmt.where(change_log.c.org == org)
        if since is not None:
            stmt = stmt.where(change_log.c.at >= _format_at(since))
        if since_revision is not None:
            stmt = stmt.where(change_log.c.revision > since_revision)
        with self._transaction(write=False) as conn:
            return [_entry(row) for row in conn.execute(stmt)]

    def verify_chain(self) -> ChangeEntry | None:
        """The first entry whose hash or link to the previous entry is wrong; None when intact.

        Detects edited and deleted entries (a deletion breaks the next entry's link). Deleting
        the newest entries is `verify_log().truncated` (the stored head no longer matches).
        """
        return self.verify_log().broken

    def verify_log(self) -> ChainVerdict:
        """The hash chain walked in one read, then its newest entry against the stored head."""
        stmt = sa.select(change_log).order_by(change_log.c.id)
        expected_prev = GENESIS_HASH
        newest = None
        with self._transaction(write=False) as conn:
            head = conn.execute(
                sa.select(policy_state.c.head_revision, policy_state.c.head_hash).where(
                    policy_state.c.id == STATE_ROW_ID
                )
            ).first()
            result = conn.execute(stmt, execution_options={"yield_per": 10_000})
            for row in result:
                if row.prev_hash != expected_prev or _row_hash(row) != row.hash:
                    return ChainVerdict(broken=_entry(row))
                expected_prev = row.hash
                newest = row
        found = (newest.revision, newest.hash) if newest is not None else None
        stored = (head.head_revision, head.head_hash) if head and head.head_hash else None
        if stored != found:
            return ChainVerdict(truncated=HeadMismatch(stored=stored, found=found))
        return ChainVerdict()


def _chain_tip(conn: sa.Connection) -> str:
    """The hash new entries link to: the stored head, else the newest entry's, else genesis."""
    head = conn.execute(
        sa.select(policy_state.c.head_hash).where(policy_state.c.id == STATE_ROW_ID)
    ).scalar()
    if head:
        return head
    newest = conn.execute(
        sa.select(change_log.c.hash).order_by(change_log.c.id.desc()).limit(1)
    ).scalar()
    return newest or GENESIS_HASH


@dataclass(frozen=True)
class HeadMismatch:
    """The stored head (revision, hash) and the newest entry's; None where there is none."""

    stored: tuple[int, str] | None
    found: tuple[int, str] | None

    def describe(self) -> str:
        stored = f"revision {self.stored[0]}" if self.stored else "no entry"
        found = f"revision {self.found[0]}" if self.found else "no entry"
        return (
            f"the change log ends at {found} but its recorded head is {stored}: "
            "the newest entries were deleted (or the head was altered)"
        )

    def to_dict(self) -> dict[str, Any]:
        def side(value: tuple[int, str] | None) -> dict[str, Any] | None:
            return {"revision": value[0], "hash": value[1]} if value else None

        return {"stored_head": side(self.stored), "newest_entry": side(self.found)}


@dataclass(frozen=True)
class ChainVerdict:
    """`verify_log`: a broken entry, a truncated end, or neither (intact)."""

    broken: ChangeEntry | None = None
    truncated: HeadMismatch | None = None

    @property
    def intact(self) -> bool:
        return self.broken is None and self.truncated is None


_HASHED_FIELDS = ("revision", "at", "actor", "operation", "ptype", "rule", "org")


def _hash_fields(entry: dict) -> dict:
    return {key: entry[key] for key in _HASHED_FIELDS}
