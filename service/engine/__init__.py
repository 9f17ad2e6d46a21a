"""The decision engine: Casbin model + rules -> decisions. Knows nothing of HTTP or storage.

    engine = Engine.from_model_file("model.conf")
    engine.load(revision=1, rules=[("g", "alice", "admin", "acme"), ...])
    engine.check(CheckRequest("alice", "acme", "/projects/1", "delete")).allowed

`Engine` holds the current `Snapshot`; readers take the reference once and decide against it,
writers build a new snapshot and swap the reference (a single assignment), so decisions never
lock and never see half a change.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..rules import Rule
from .fallback import CasbinFallback
from .model import ModelShape, classify, load_model
from .snapshot import RolePaths, Snapshot
from .types import CheckRequest, Decision

__all__ = ["CheckRequest", "Decision", "Engine", "ModelShape", "RolePaths", "Snapshot"]

log = logging.getLogger("rolegate.engine")


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while building millions of small, acyclic objects.

    The collector would otherwise rescan the growing index over and over (it doubled the time
    to index 2.1M rules); reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Engine:
    """Current policy snapshot plus the evaluation mode chosen for the model."""

    def __init__(self, model_path: Path, shape: ModelShape, *, default_role: str | None = None):
        self.model_path = model_path
        self.shape = shape
        self.default_role = default_role
        self._write_lock = threading.Lock()
        self._snapshot = Snapshot.build(0, (), shape, default_role)
        # (snapshot, its Casbin fallback) swapped as one reference, so readers never pair a
        # snapshot with another revision's fallback.
        self._fallback_state: tuple[Snapshot, CasbinFallback] | None = None
        self._swap_fallback(self._snapshot)

    @classmethod
    def from_model_file(cls, path: Path | str, *, default_role: str | None = None) -> Engine:
        path = Path(path)
        shape = classify(load_model(path))
        engine = cls(path, shape, default_role=default_role)
        log.info("engine mode: %s (%s)", engine.mode, shape.reason)
        return engine

    @property
    def mode(self) -> str:
        """`fast` (indexed evaluator) or `casbin` (Casbin's enforcer per org)."""
        return "fast" if self.shape.fast else "casbin"

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def revision(self) -> int:
        return self._snapshot.revision

    def _swap_fallback(self, snapshot: Snapshot) -> None:
        if not self.shape.fast:
            self._fallback_state = (snapshot, CasbinFallback(self.model_path, snapshot))

    def _fallback_for(self, snapshot: Snapshot) -> CasbinFallback:
        state = self._fallback_state
        if state is not None and state[0] is snapshot:
            return state[1]
        return CasbinFallback(self.model_path, snapshot)  # an older snapshot a caller held on to

    def load(self, revision: int, rules: Iterable[Rule]) -> Snapshot:
        """Replace the whole policy (start-up, full reload)."""
        with gc_paused():
            snapshot = Snapshot.build(revision, rules, self.shape, self.default_role)
        with self._write_lock:
            self._swap_fallback(snapshot)
            self._snapshot = snapshot
        return snapshot

    def apply(self, revision: int, added: Iterable[Rule], removed: Iterable[Rule]) -> Snapshot:
        """Apply one change set on top of the current snapshot (only touched orgs re-indexed)."""
        with self._write_lock:
            snapshot = self._snapshot.with_changes(revision, added, removed)
            self._swap_fallback(snapshot)
            self._snapshot = snapshot
        return snapshot

    def replace_domains(
        self, revision: int, domains: Iterable[str], rules: Iterable[Rule]
    ) -> Snapshot:
        """Make the given orgs equal `rules` (incremental reload from the store)."""
        with self._write_lock:
            current = self._snapshot
            domains = set(domains)
            removed = [rule for name in domains for rule in current.rules(name)]
            snapshot = current.with_changes(revision, rules, removed)
            self._swap_fallback(snapshot)
            self._snapshot = snapshot
        return snapshot

    def check(self, request: CheckRequest, snapshot: Snapshot | None = None) -> Decision:
        """Decide one request against `snapshot` (default: the current one)."""
        if snapshot is None:
            snapshot = self._snapshot
        if not self.shape.fast:
            return self._fallback_for(snapshot).decide(request)
        return snapshot.decide(request)

    def check_many(self, requests: Sequence[CheckRequest]) -> tuple[Snapshot, list[Decision]]:
        """Decide many requests against one snapshot, computing each subject's roles once."""
        snapshot = self._snapshot
        if not self.shape.fast:
            fallback = self._fallback_for(snapshot)
            return snapshot, [fallback.decide(request) for request in requests]
        roles_by_key: dict[tuple, RolePaths] = {}
        decisions = []
        for request in requests:
            key = (
                request.subject,
                request.org,
                request.owner == request.subject,
                request.extra_roles,
            )
            roles = roles_by_key.get(key)
            if roles is None:
                roles = roles_by_key[key] = snapshot.request_roles(request)
            decisions.append(snapshot.decide(request, roles))
        return snapshot, decisions
