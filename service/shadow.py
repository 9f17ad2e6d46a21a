"""Shadow evaluation: decide every request with a candidate policy too, off the request path.

With `ROLEGATE_SHADOW_POLICY_DIR` set, each worker loads that policy directory into an engine of
its own (same model, same default role) and re-reads it when its files change (the stat
fingerprint of `serve --watch-policies`, `rolegate.policy.watch.policy_fingerprint`; files with
lint errors are not applied and the error shows on `/readyz`).

The decision listener `ShadowEvaluator.record` only appends the decided request to a bounded
buffer (a full buffer drops it and counts it); a background thread drains the buffer, decides
each request with the shadow policy and compares. A disagreement is counted in `/metrics`
(`rolegate_shadow_disagreements_total{org,direction}`), kept in a small ring of recent ones
(the console's view) and written to the decision log as a record marked `shadow: true`. The
live decision is never changed, delayed or blocked by any of this.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import metrics
from .apikeys import SUBJECT_PREFIX as API_KEY_PREFIX
from .audit.decision_log import REQUEST_CONTEXT, DecisionLog, decision_record, format_time
from .buffered import BufferedWorker
from .core import role_subject_problem
from .engine import CheckRequest, Decision, Engine
from .errors import ConfigError
from .identity import Principal
from .logs import request_id_var
from .rules import format_rule

log = logging.getLogger("rolegate.shadow")

DEFAULT_CAPACITY = 10_000
DRAIN_INTERVAL_SECONDS = 0.02
WATCH_INTERVAL_SECONDS = 1.0
RECENT_DISAGREEMENTS = 200
YIELD_EVERY = 1  # evaluations between GIL hand-backs to the request threads
MAX_ORG_LABELS = 1000  # distinct org labels per process; further orgs count as "(other)"


def _rule_text(decision: Decision) -> str | None:
    return format_rule(decision.rule) if decision.rule else None


def direction_of(live: Decision, shadow: Decision) -> str | None:
    """`grant` (the shadow allows what was denied), `revoke` (the reverse) or None (agree)."""
    if live.allowed == shadow.allowed:
        return None
    return "grant" if shadow.allowed else "revoke"


class ShadowPolicy:
    """The candidate policy directory in an engine of its own, reloaded when its files change.

    `revision`: `sha256:<16 hex>` of the canonical rule set (the same in every worker that
    loaded the same files); None until a load succeeded. `error`: the last load's problem.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        model_path: Path | str,
        default_role: str | None = None,
    ):
        self.directory = Path(directory)
        self.engine = Engine.from_model_file(model_path, default_role=default_role)
        self.revision: str | None = None
        self.rules = 0
        self.error: str | None = None
        self.loaded_at: float | None = None
        self._loads = 0
        self._fingerprint: tuple | None = None
        self.reload_if_changed()

    def reload_if_changed(self) -> bool:
        """Re-read the directory when a file changed; True when a new policy was loaded."""
        from .policy.watch import policy_fingerprint

        fingerprint = policy_fingerprint(self.directory)
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        return self.reload()

    def reload(self) -> bool:
        from .policy.lint import lint_policy_dir
        from .policy.watch import _describe_errors

        try:
            report = lint_policy_dir(
                self.directory,
                resource_function=self.engine.shape.resource_function,
                default_role=self.engine.default_role,
            )
        except Exception as exc:  # an unreadable directory: keep the previous policy
            self.error = f"shadow policy not loaded: {exc}"
            log.error("%s", self.error)
            return False
        if not report.ok:
            self.error = "shadow " + _describe_errors(report)
            log.error("%s", self.error)
            return False
        rules = sorted({item.rule for item in report.rules})
        digest = hashlib.sha256("\n".join(map(format_rule, rules)).encode("utf-8")).hexdigest()
        self._loads += 1
        self.engine.load(self._loads, rules)
        self.revision = f"sha256:{digest[:16]}"
        self.rules = len(rules)
        self.error = None
        self.loaded_at = time.time()
        log.info(
            "shadow policy %s loaded: %s rules (%s)", self.revision, len(rules), self.directory
        )
        return True

    def decide(self, request: CheckRequest) -> Decision:
        """The shadow decision; a subject the shadow policy makes a role is refused (deny)."""
        snapshot = self.engine.snapshot
        problem = role_subject_problem(
            snapshot, request.subject, api_key=request.subject.startswith(API_KEY_PREFIX)
        )
        if problem is not None:
            return Decision(False, snapshot.revision, error=f"subject_is_role: {problem}")
        return self.engine.check(request, snapshot)


class ShadowEvaluator(BufferedWorker):
    """Bounded hand-off + one thread that decides with the shadow policy and compares."""

    thread_name = "rolegate-shadow"

    def __init__(
        self,
        policy: ShadowPolicy,
        *,
        decision_log: DecisionLog | None = None,
        capacity: int = DEFAULT_CAPACITY,
        interval: float = DRAIN_INTERVAL_SECONDS,
        watch_interval: float = WATCH_INTERVAL_SECONDS,
        recent: int = RECENT_DISAGREEMENTS,
    ):
        super().__init__(capacity=capacity, interval=interval)
        self.policy = policy
        self.decision_log = decision_log
        self.watch_interval = watch_interval
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent)
        self._org_labels: set[str] = set()
        self._next_watch = time.monotonic() + watch_interval
        self.evaluated = 0
        self.dropped = 0
        self.disagreements = {"grant": 0, "revoke": 0}

    # -- the hot path -------------------------------------------------------------------------

    def record(
        self,
        principal: Principal,
        request: CheckRequest,
        decision: Decision,
        payload: Mapping[str, Any],
    ) -> None:
        """Decision listener: hand the decision over, or drop (and count) it when full."""
        item = (
            time.time(),
            principal,
            request,
            decision,
            payload.get("decision_id"),
            REQUEST_CONTEXT.get(),
            request_id_var.get(),
        )
        if not self.offer(item):
            with self.lock:
                self.dropped += 1
            metrics.shadow_dropped(1)

    # -- the worker ---------------------------------------------------------------------------

    def before_drain(self) -> None:
        self._watch()

    def drain(self) -> None:
        done = 0
        while self.buffer:
            self._evaluate(self.buffer.popleft())
            done += 1
            if done % YIELD_EVERY == 0:
                time.sleep(0)  # let a request thread take the GIL now, not in 5 ms
        if done:
            metrics.shadow_evaluated(done)

    def _watch(self) -> None:
        if time.monotonic() < self._next_watch:
            return
        self._next_watch = time.monotonic() + self.watch_interval
        try:
            self.policy.reload_if_changed()
        except Exception:
            log.exception("shadow policy reload failed")

    def _evaluate(self, item: tuple) -> None:
        epoch, principal, request, live, decision_id, context, request_id = item
        try:
            if self.policy.revision is None:
                return  # no shadow policy could be loaded: nothing to compare with
            shadow = self.policy.decide(request)
            self.evaluated += 1
            direction = direction_of(live, shadow)
            if direction is None:
                return
            self.disagreements[direction] += 1
            metrics.shadow_disagreement(self._org_label(request.org), direction)
            self._recent.appendleft(
                {
                    "time": format_time(epoch),
                    "decision_id": decision_id,
                    "org": request.org,
                    "subject": request.subject,
                    "resource": request.resource,
                    "action": request.action,
                    "owner": request.owner or None,
                    "direction": direction,
                    "live": {"allowed": live.allowed, "rule": _rule_text(live)},
                    "shadow": {"allowed": shadow.allowed, "rule": _rule_text(shadow)},
                    "shadow_revision": self.policy.revision,
                }
            )
            if self.decision_log is not None:
                self.decision_log.record_raw(
                    self._log_record(
                        epoch, principal, request, live, shadow, decision_id, context, request_id
                    )
                )
        except Exception:  # the shadow never affects the service
            log.exception("shadow evaluation failed")

    def _log_record(
        self, epoch, principal, request, live, shadow, decision_id, context, request_id
    ):
        if request_id is not None:
            context = {**(context or {}), "request_id": request_id}
        record = decision_record(
            principal,
            request,
            shadow,
            {"decision_id": decision_id},
            context,
            now=epoch,
            default_role=self.policy.engine.default_role,
        )
        record["revision"] = self.policy.revision
        record["shadow"] = True
        record["live"] = {
            "allowed": live.allowed,
            "rule": _rule_text(live),
            "revision": live.revision,
        }
        return record

    def _org_label(self, org: str) -> str:
        if org in self._org_labels:
            return org
        if len(self._org_labels) < MAX_ORG_LABELS:
            self._org_labels.add(org)
            return org
        return "(other)"

    # -- reading and control ------------------------------------------------------------------

    def recent(self, org: str, limit: int = 50) -> list[dict[str, Any]]:
        """This worker's latest disagreements in `org`, newest first."""
        return [item for item in list(self._recent) if item["org"] == org][:limit]

    def status(self) -> dict[str, Any]:
        """For `/readyz`: the shadow policy's revision, load error and counters (this worker)."""
        return {
            "directory": str(self.policy.directory),
            "revision": self.policy.revision,
            "rules": self.policy.rules,
            "error": self.policy.error,
            "loaded_at": self.policy.loaded_at,
            "evaluated": self.evaluated,
            "disagreements": dict(self.disagreements),
            "dropped": self.dropped,
            "queued": len(self.buffer),
        }


def from_settings(settings, decision_log: DecisionLog | None = None) -> ShadowEvaluator | None:
    """The evaluator for `ROLEGATE_SHADOW_POLICY_DIR`, or None when it is unset."""
    if not settings.shadow_policy_dir:
        return None
    if not Path(settings.shadow_policy_dir).is_dir():
        raise ConfigError(
            f"ROLEGATE_SHADOW_POLICY_DIR: {settings.shadow_policy_dir} is not a directory "
            "(a candidate policy directory, like ROLEGATE_POLICY_DIR)"
        )
    policy = ShadowPolicy(
        settings.shadow_policy_dir,
        model_path=settings.model_path,
        default_role=settings.default_role,
    )
    return ShadowEvaluator(policy, decision_log=decision_log)


def init_app(app, core) -> None:
    """Shadow-evaluate `core`'s decisions when configured (a decision listener)."""
    evaluator = core.shadow
    if evaluator is None:
        evaluator = core.shadow = from_settings(core.settings, core.decision_log)
    if evaluator is None:
        return
    if evaluator.record not in core.decision_listeners:
        core.decision_listeners.append(evaluator.record)
    app.extensions["shadow"] = evaluator
    log.info("shadow evaluation with %s (pid %s)", evaluator.policy.directory, os.getpid())
