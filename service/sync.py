"""Keeping every worker at the store's revision: LISTEN/NOTIFY plus a periodic revision poll.

Each worker process runs one `PolicySync` (started by `create_app` through the core):

- a listener thread (PostgreSQL only) holding its own psycopg connection in autocommit with
  `LISTEN rolegate_policy`; every commit of a change set notifies with the new revision and the
  worker catches up (`Rolegate.refresh`: only the changed orgs are read). The connection is
  re-opened with exponential backoff when it breaks, and the worker catches up right after
  (notifications sent meanwhile are lost; the revision comparison finds them);
- a poll thread comparing revisions every `ROLEGATE_POLL_INTERVAL` seconds: the safety net,
  and the only mechanism on SQLite. It also re-reads the in-memory API keys when they are
  `rolegate.apikeys.API_KEY_RELOAD_S` old (every revision change re-reads them too).

Catching up is idempotent (the changed orgs are re-read as of one consistent revision), so a
notification seen twice, late, or out of order cannot apply a change twice or skip one.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from typing import Any, Protocol

from sqlalchemy.engine import make_url

from . import metrics
from .config import Settings
from .store import PolicyStore
from .store.db import NOTIFY_CHANNEL, failure_reason

log = logging.getLogger("rolegate.sync")

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
WAIT_SLICE_S = 1.0  # how often a waiting listener checks that it should stop
LISTENER_APPLICATION_NAME = "rolegate-listener"  # + "-<pid>": pg_stat_activity.application_name
KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}


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


def next_backoff(current: float) -> float:
    return min(BACKOFF_MAX_S, current * 2)


class Follower(Protocol):
    """What the sync threads need of the core (`rolegate.core.Rolegate` is one)."""

    settings: Settings
    store: PolicyStore

    def refresh(self, target: int | None = None) -> bool: ...

    def note_store_revision(self, revision: int | None) -> None: ...

    def note_store_error(self, error: str) -> None: ...

    def reload_api_keys(self, *, only_if_old: bool = False) -> None: ...


class PolicySync:
    """The listener and poll threads of one worker process."""

    def __init__(self, core: Follower, *, poll_interval: float, listen: bool):
        self.core = core
        self.poll_interval = poll_interval
        self.listen = listen
        self.listening = False
        self.reconnects = 0
        self.notifications = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def for_core(cls, core: Follower) -> PolicySync:
        return cls(
            core,
            poll_interval=core.settings.poll_interval,
            listen=core.store.sql_engine.dialect.name == "postgresql",
        )

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def start(self) -> None:
        if self._threads:
            return
        if self.listen:
            self._spawn(self._listen_loop, "rolegate-listener")
        if self.poll_interval > 0:
            self._spawn(self._poll_loop, "rolegate-poll")

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()  # a waiting listener notices within WAIT_SLICE_S
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    # ---------------------------------------------------------------- poll

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            self.core.refresh()
            self.core.reload_api_keys(only_if_old=True)

    # ---------------------------------------------------------------- listen

    def _listen_loop(self) -> None:
        backoff = BACKOFF_FIRST_S
        first = True
        while not self._stop.is_set():
            try:
                self._listen_once(first)
                backoff = BACKOFF_FIRST_S
            except Exception as exc:
                if self._stop.is_set():
                    break
                self.listening = False
                self.core.note_store_error(f"listener: {failure_reason(exc)}")
                log.warning(
                    "policy listener disconnected (%s); reconnecting in %.1f s",
                    failure_reason(exc),
                    backoff,
                )
                self._stop.wait(backoff * random.uniform(0.8, 1.2))
                backoff = next_backoff(backoff)
            first = False
        self.listening = False

    def _listen_once(self, first: bool) -> None:
        import psycopg

        conninfo = psycopg_conninfo(self.core.settings.database_url)
        with psycopg.connect(
            conninfo,
            autocommit=True,
            connect_timeout=5,
            application_name=f"{LISTENER_APPLICATION_NAME}-{os.getpid()}",
            **KEEPALIVE,
        ) as connection:
            connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.listening = True
            if not first:
                self.reconnects += 1
                metrics.listener_reconnected()
                log.info("policy listener reconnected")
            # Anything committed while we were not listening is found by comparing revisions.
            self.core.refresh()
            while not self._stop.is_set():
                for notify in connection.notifies(timeout=WAIT_SLICE_S):
                    self._on_notify(notify.payload)
                    if self._stop.is_set():
                        break

    def _on_notify(self, payload: str) -> None:
        self.notifications += 1
        metrics.notification_received()
        revision = parse_revision(payload)
        self.core.note_store_revision(revision)
        self.core.refresh(target=revision)
