"""Pages of audit answers: the items of one page and where the next one starts.

The front ends only shape a `Page` (JSON in `rolegate.api.audit`, text in the CLI); how a page
is cut (keyset on the subject for who-can, revision boundaries for the change history) is here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from .cursor import CursorCodec
from .queries import WhoCanEntry, page_after, who_can

if TYPE_CHECKING:
    from ..engine import Engine, Snapshot
    from ..store.policies import ChangeEntry
    from ..store.source import PolicySource

Item = TypeVar("Item")
Cursor = TypeVar("Cursor")

MAX_REVISION_ENTRIES = 100_000  # a single revision larger than a page is returned whole, up to this


@dataclass(frozen=True)
class Page(Generic[Item, Cursor]):
    """One page: `next_cursor` None when it is the last."""

    items: Sequence[Item]
    next_cursor: Cursor | None


def who_can_page(
    engine: Engine,
    snapshot: Snapshot,
    org: str,
    resource: str,
    action: str,
    *,
    limit: int,
    cursor: str | None,
    codec: CursorCodec,
) -> Page[WhoCanEntry, str]:
    """Subjects allowed `action` on `resource`, in subject order; `cursor` is the opaque
    `next_cursor` of the previous page (bound to this query: InvalidRequest for another)."""
    query = (org, resource, action)
    after = codec.decode(cursor, query) if cursor else None
    page, last = page_after(who_can(engine, snapshot, org, resource, action), after, limit)
    return Page(page, codec.encode(query, last) if last is not None else None)


def change_page(
    store: PolicySource,
    org: str,
    *,
    limit: int,
    since: datetime | None = None,
    until: datetime | None = None,
    since_revision: int | None = None,
) -> Page[ChangeEntry, int]:
    """Change-history entries of `org`, oldest first. The page ends on a revision boundary so
    that `since_revision=next_cursor` continues without a gap; a single revision larger than a
    page is returned whole."""
    entries = store.changes(org=org, since=since, since_revision=since_revision, limit=limit + 1)
    more = len(entries) > limit
    if until is not None:
        kept = [entry for entry in entries if entry.at <= until]
        more = more and len(kept) == len(entries)
        entries = kept
    if not more:
        return Page(entries, None)
    boundary = entries[limit].revision
    page = [entry for entry in entries[:limit] if entry.revision != boundary]
    if not page:
        whole = store.changes(org=org, since_revision=boundary - 1, limit=MAX_REVISION_ENTRIES)
        page = [entry for entry in whole if entry.revision == boundary]
    return Page(page, page[-1].revision)
