"""The decision engine: Casbin model + rules -> decisions. Knows nothing of HTTP or storage.

    engine = Engine.from_model_file("model.conf")
    engine.load(revision=1, rules=[("g", "alice", "admin", "acme"), ...])
    engine.check(CheckRequest("alice", "acme", "/projects/1", "delete")).allowed

`Engine` holds the current `Snapshot`; readers take the reference once and decide against it,
writers build a new snapshot and swap the reference (a single assignment), so decisions never
lock and never see half a change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..rules import Rule
from .fallback import CasbinFallback
from .model import ModelShape, classify, load_model
from .snapshot import RolePaths, Snapshot
from .types import CheckRequest, Decision

__all__ = ["CheckRequest", "Decision", "Engine", "ModelShape", "RolePaths", "Snapshot"]

log = logging.getLogger("rolegate.engine")


class Engine:
    """Current policy snapshot plus the evaluation mode chosen for the model."""

    def __init__(self, model_path: Path, shape: ModelShape, *, default_role: str | None = None):
        self.model_path = model_path
        self.shape = shape
        self.default_role = default_role
        self._write_lock = threading.Lock()
        self._snapshot = Snapshot.build(0, (), shape, default_role)
        self._fallback: CasbinFallback | None = None
        self._swap_fallback()

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

    def _swap_fallback(self) -> None:
        if not self.shape.fast:
            self._fallback = CasbinFallback(self.model_path, self._snapshot)

    def load(self, revision: int, rules: Iterable[Rule]) -> Snapshot:
        """Replace the whole policy (start-up, full reload)."""
        snapshot = Snapshot.build(revision, rules, self.shape, self.default_role)
        with self._write_lock:
            self._snapshot = snapshot
            self._swap_fallback()
        return snapshot

    def apply(self, revision: int, added: Iterable[Rule], removed: Iterable[Rule]) -> Snapshot:
        """Apply one change set on top of the current snapshot (only touched orgs re-indexed)."""
        with self._write_lock:
            snapshot = self._snapshot.with_changes(revision, added, removed)
            self._snapshot = snapshot
            self._swap_fallback()
        return snapshot

    def replace_domains(self, revision: int, domains: Iterable[str], rules: Iterable[Rule]) -> Snapshot:
        """Make the given orgs equal `rules` (incremental reload from the store)."""
        with self._write_lock:
            current = self._snapshot
            domains = set(domains)
            removed = [rule for name in domains for rule in current.rules(name)]
            snapshot = current.with_changes(revision, rules, removed)
            self._snapshot = snapshot
            self._swap_fallback()
        return snapshot

    def check(self, request: CheckRequest, snapshot: Snapshot | None = None) -> Decision:
        """Decide one request against `snapshot` (default: the current one)."""
        snapshot = snapshot or self._snapshot
        fallback = self._fallback
        if fallback is not None:
            if fallback.snapshot is not snapshot:
                fallback = CasbinFallback(self.model_path, snapshot)
            return fallback.decide(request)
        return snapshot.decide(request)

    def check_many(self, requests: Sequence[CheckRequest]) -> tuple[Snapshot, list[Decision]]:
        """Decide many requests against one snapshot, computing each subject's roles once."""
        snapshot = self._snapshot
        if not self.shape.fast:
            return snapshot, [self.check(request, snapshot) for request in requests]
        roles_by_key: dict[tuple, RolePaths] = {}
        decisions = []
        for request in requests:
            key = (request.subject, request.org, request.owner == request.subject, request.extra_roles)
            roles = roles_by_key.get(key)
            if roles is None:
                roles = roles_by_key[key] = snapshot.request_roles(request)
            decisions.append(snapshot.decide(request, roles))
        return snapshot, decisions
