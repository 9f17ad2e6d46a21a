"""The store's change feed: PostgreSQL LISTEN/NOTIFY on `NOTIFY_CHANNEL`.

Every commit of a change set notifies with the new revision (see `rolegate.store.policies`).
A `ChangeFeed` opens a subscription (its own psycopg connection in autocommit, with TCP
keepalives, so a dead database is noticed within seconds) that yields the notified revisions.
SQLite has no feed: followers poll the revision instead (`PolicySource.revision`).
What to do with a notification (catch up, reconnect with backoff) is `rolegate.sync`'s part.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from sqlalchemy.engine import make_url

from .db import NOTIFY_CHANNEL

LISTENER_APPLICATION_NAME = "rolegate-listener"  # + "-<pid>": pg_stat_activity.application_name
CONNECT_TIMEOUT_S = 5
KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}


class Subscription(Protocol):
    """An open feed: the revisions notified since the last call."""

    def wait(self, timeout: float) -> Iterator[int | None]:
        """Revisions notified within `timeout` seconds (None: a payload that is no revision).
        Raises when the connection breaks."""
        ...


class ChangeFeed(Protocol):
    """Where a follower hears of new revisions (Casbin's Watcher, Cerbos's Subscribable)."""

    def subscribe(self) -> AbstractContextManager[Subscription]: ...


def psycopg_conninfo(database_url: str) -> str:
    """libpq connection string for a SQLAlchemy `postgresql+psycopg://` URL."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def parse_revision(payload: str) -> int | None:
    try:
        revision = int(payload)
    except (TypeError, ValueError):
        return None
    return revision if revision >= 0 else None


class _NotifySubscription:
    def __init__(self, connection: Any):
        self._connection = connection

    def wait(self, timeout: float) -> Iterator[int | None]:
        for notify in self._connection.notifies(timeout=timeout):
            yield parse_revision(notify.payload)


class NotifyFeed:
    """LISTEN/NOTIFY on the store's PostgreSQL database."""

    def __init__(self, database_url: str):
        self._database_url = database_url

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        import psycopg

        with psycopg.connect(
            psycopg_conninfo(self._database_url),
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=f"{LISTENER_APPLICATION_NAME}-{os.getpid()}",
            **KEEPALIVE,
        ) as connection:
            connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
            yield _NotifySubscription(connection)


__all__ = [
    "KEEPALIVE",
    "LISTENER_APPLICATION_NAME",
    "ChangeFeed",
    "NotifyFeed",
    "Subscription",
    "parse_revision",
    "psycopg_conninfo",
]
