"""Helpers shared by the commands: the store they read, and the argument order.

Offline commands read the configured store and never create one: a SQLite database that does
not exist is `store_missing` (exit 2), with where it was looked for and how to create it.
"""

from __future__ import annotations

import click

from ..config import Settings
from ..engine import Snapshot
from ..errors import ConfigError
from ..store import PolicyStore
from ..store.urls import sqlite_file


def missing_store_problem(settings: Settings) -> str | None:
    """Why the configured store cannot be opened without creating it (None: it exists)."""
    path = sqlite_file(settings.database_url)
    if path is None or path.is_file():
        return None
    return (
        f"no policy store at {path} (ROLEGATE_DATABASE_URL, default: rolegate.db in "
        f"ROLEGATE_HOME={settings.home}): nothing was created; run `rolegate import DIR` or "
        "`rolegate serve --sync-policies` first, or point ROLEGATE_HOME / "
        "ROLEGATE_DATABASE_URL at the existing store"
    )


def require_store(settings: Settings) -> None:
    problem = missing_store_problem(settings)
    if problem is not None:
        raise ConfigError(problem, code="store_missing")


def open_existing_store(settings: Settings) -> PolicyStore:
    """The configured store; `store_missing` instead of creating a new SQLite file."""
    require_store(settings)
    return PolicyStore.from_url(settings.database_url)


def org_first(snapshot: Snapshot, org: str, other: str) -> tuple[str, str]:
    """(org, other) for commands taking ORG first; the old order (other first) is accepted,
    with a warning, when only the second argument names a known org."""
    domains = snapshot.domains
    if org not in domains and other in domains:
        click.echo(
            f"Warning: reading the arguments as ORG={other!r} {org!r} (the org comes first: "
            "the old order is deprecated)",
            err=True,
        )
        return other, org
    return org, other
