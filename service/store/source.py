"""The storage seam: what the rest of Rolegate may ask of a policy store.

In the spirit of Casbin's Adapter (load all, load filtered, save a change) plus its Watcher,
and Cerbos's `Store`/`MutableStore`/`Subscribable`: the core, the admin API, the CLI and the
sync threads type against these protocols; `rolegate.store.PolicyStore` (SQLite or PostgreSQL
through SQLAlchemy) is the one implementation. A `StoreTransaction` is opaque outside the store:
it is only handed back to store code (`apply(also=...)` runs repository writes in the same
transaction as the rules).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from ..rules import Rule

if TYPE_CHECKING:
    from .apikeys import ApiKeyRows
    from .attributes import SubjectAttributeRows
    from .decisions import DecisionRows
    from .feed import ChangeFeed
    from .policies import ChainVerdict, ChangeEntry, ChangeSet, DomainReload, FileSync

StoreTransaction: TypeAlias = Any  # a connection inside one store transaction (opaque here)
Progress: TypeAlias = Callable[[int], None]


class PolicySource(Protocol):
    """Rules with a revision and a hash-chained change history."""

    def revision(self) -> int:
        """The store's current revision."""
        ...

    def load_all(self, progress: Progress | None = None) -> tuple[int, list[Rule]]:
        """The revision and every rule, read as one snapshot."""
        ...

    def load_changes(self, since_revision: int, *, max_entries: int = 10_000) -> DomainReload:
        """The orgs changed after `since_revision` and their rules (or: load everything)."""
        ...

    def apply(
        self,
        changes: ChangeSet,
        *,
        actor: str,
        expected_revision: int | None = None,
        progress: Progress | None = None,
        also: Callable[[StoreTransaction], None] | None = None,
        managed_by: str | None = None,
    ) -> int:
        """Apply a change set as one new revision (one transaction); returns it."""
        ...

    def changes(
        self,
        *,
        org: str | None = None,
        since: datetime | None = None,
        since_revision: int | None = None,
        limit: int = 1000,
    ) -> list[ChangeEntry]:
        """Change-history entries, oldest first."""
        ...

    def verify_chain(self) -> ChangeEntry | None:
        """The first entry whose hash or link is wrong; None when the chain is intact."""
        ...


class Subscribable(Protocol):
    """A source that can tell followers of new revisions (None: poll `revision` instead)."""

    def change_feed(self) -> ChangeFeed | None: ...


class ManagedPolicySource(PolicySource, Subscribable, Protocol):
    """A policy source that also knows who manages each rule (files or the admin API) and
    holds the other tables' repositories: what the core, the admin API and the CLI use."""

    def load_domains(
        self, domains: Iterable[str], progress: Progress | None = None
    ) -> tuple[int, list[Rule]]: ...

    def replace_all(
        self, rules: Iterable[Rule], *, actor: str, domains: Iterable[str] | None = None
    ) -> tuple[ChangeSet, int]: ...

    def sync_files(
        self,
        rules: Iterable[Rule],
        *,
        actor: str,
        seeds: Iterable[Rule] = (),
        progress: Progress | None = None,
        expected_revision: int | None = None,
    ) -> FileSync: ...

    def plan_sync(
        self, rules: Iterable[Rule], *, seeds: Iterable[Rule] = ()
    ) -> tuple[dict[Rule, str], FileSync]: ...

    def load_owners(self, domains: Iterable[str] | None = None) -> tuple[int, dict[Rule, str]]: ...

    def file_managed(self, rules: Iterable[Rule]) -> set[Rule]: ...

    def verify_log(self) -> ChainVerdict: ...

    def dispose(self) -> None: ...

    # The repositories of the other tables in the same database.
    def api_key_rows(self) -> ApiKeyRows: ...

    def subject_attribute_rows(self) -> SubjectAttributeRows: ...

    def decision_rows(self) -> DecisionRows: ...


__all__ = ["ManagedPolicySource", "PolicySource", "Progress", "StoreTransaction", "Subscribable"]
