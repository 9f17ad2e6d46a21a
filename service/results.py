"""What the core answers, as typed values (no transport): the front ends shape them into JSON.

    result = core.check(principal, check)      # DecisionResult
    result.allowed, result.decision_id, result.reason
    batch = core.check_batch(principal, checks)    # BatchResult(results, revision)
    core.readiness()                               # Readiness: what /readyz reports

`rolegate.api.decisions.decision_json` is the HTTP answer of a result; `rolegate check` prints
its own form of the same result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .engine import CheckRequest, Decision

# Names the wire dict of /v1/check used: readable as result[name] for one release.
_WIRE_NAMES = frozenset(
    {"allowed", "subject", "org", "resource", "action", "decision_id", "revision", "reason"}
)


def new_decision_id() -> str:
    return os.urandom(16).hex()


def new_decision_ids(count: int) -> list[str]:
    """`count` decision ids (as `new_decision_id`'s) from one read of the random source."""
    text = os.urandom(16 * count).hex()
    return [text[start : start + 32] for start in range(0, 32 * count, 32)]


class _ReadableByName:
    """`result["allowed"]` as `result.allowed`: the dict-style reads of the old wire dicts keep
    working for one release (new code reads attributes)."""

    __slots__ = ()
    _names: frozenset[str] = frozenset()

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in self._names else default


@dataclass(frozen=True, slots=True)
class DecisionResult(_ReadableByName):
    """One decision of the core: the request decided, the engine's answer and the decision id.

    `explain`: the caller asked for the reason (the HTTP answer then carries it); `denial`: for
    an explained denial, what would allow it (`rolegate.engine.explain.explain_denial`).
    """

    request: CheckRequest
    decision: Decision
    decision_id: str
    explain: bool = False
    denial: Mapping[str, Any] | None = None
    _names = _WIRE_NAMES

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    @property
    def subject(self) -> str:
        return self.request.subject

    @property
    def org(self) -> str:
        return self.request.org

    @property
    def resource(self) -> str:
        return self.request.resource

    @property
    def action(self) -> str:
        return self.request.action

    @property
    def revision(self) -> int:
        return self.decision.revision

    @property
    def reason(self) -> dict[str, Any]:
        """The engine's explanation, plus what would allow an explained denial."""
        return {**self.decision.reason, **(self.denial or {})}


@dataclass(frozen=True, slots=True)
class BatchResult(_ReadableByName):
    """The decisions of one batch, in the order asked, all made on one policy revision."""

    results: tuple[DecisionResult, ...]
    revision: int
    _names = frozenset({"results", "revision"})


@dataclass(frozen=True, slots=True)
class Readiness:
    """Where this process stands: policy loaded, revision, engine mode, contact with the store.

    Decisions go on from memory while the store is unreachable: still `ready`, but `stale`.
    `last_reload_error` is what an unauthenticated prober may see: the watcher's policy file
    error, or that the store failed (never the database's host, port or driver message).
    """

    ready: bool
    revision: int
    rules: int
    engine_mode: str
    engine_mode_reason: str
    last_reload_error: str | None
    stale: bool
    store_revision: int | None
    lag: int | None
    revision_applied_at: float | None  # time.time() of the last snapshot swap
    listening: bool  # PostgreSQL LISTEN connection up
    shadow: Mapping[str, Any] | None = None  # ROLEGATE_SHADOW_POLICY_DIR: the candidate's status
