"""The Rolegate core: one object behind the HTTP API and the CLI.

It ties settings, identity, engine and store together and holds no web state:

    core = Rolegate.from_settings(Settings.from_env())
    core.start(sync_policies=True)
    principal = core.authenticate("Bearer eyJ...")
    result = core.check(principal, parse_check_input({"resource": "/projects/1", "action": "read"}))
    result.allowed, result.decision_id        # a DecisionResult (rolegate.results)
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import metrics
from .apikeys import SUBJECT_PREFIX as API_KEY_PREFIX
from .apikeys import ApiKeyStore
from .audit.decision_log import DecisionLog
from .config import Settings, shipped_path
from .engine import CheckRequest, Decision, Engine, Snapshot, reads
from .errors import Forbidden, InvalidRequest, ServiceUnavailable, StoreUnavailable
from .identity import Principal, TokenVerifier
from .policy.watch import read_reload_error
from .results import BatchResult, DecisionResult, Readiness, new_decision_id, new_decision_ids
from .store import ChangeSet, ManagedPolicySource, PolicyStore, read_policy_dir
from .subject_attributes import SubjectAttributeStore, read_attributes_file
from .sync import PolicySync
from .validation import MAX_NAME_CHARS as MAX_NAME_CHARS  # re-exported for one release
from .validation import validate_org, validate_text

if TYPE_CHECKING:
    from .shadow import ShadowEvaluator

log = logging.getLogger("rolegate")

MAX_RESOURCE_CHARS = 2048
MAX_BATCH = 1000
MAX_REVISION = 2**63 - 1
# Requests of one worker that may wait for a policy revision at once; more get 503 at once.
MAX_REVISION_WAITERS = 4
MAX_NEAREST_PER_BATCH = 20  # denied items of a batch whose explanation lists the nearest roles
# Up to this many change-log entries behind, a worker re-reads only the changed orgs.
MAX_INCREMENTAL_ENTRIES = 50_000
PROGRESS_LOG_FROM = 100_000  # rules: smaller loads are not worth a progress line
CHECK_FIELDS = {
    "resource": True,
    "action": True,
    "org": False,
    "owner": False,
    "explain": False,
    "min_revision": False,
    "subject": False,
}
IN_MEMORY_STORE_URL = "sqlite://"  # Rolegate.offline over a policy dir
# /readyz's last_reload_error for a failed store reload (the details go to the log only).
STORE_RELOAD_FAILED = "the last reload from the policy store failed (details in the log)"
# Deciding for a subject other than the caller's own (a PEP): this permission in the org.
AUTHZEN_RESOURCE = "/authzen"
EVALUATE_ACTION = "evaluate"


@dataclass(frozen=True, slots=True)
class CheckInput:
    """A validated check as a client sent it (org may be missing: the token decides)."""

    resource: str
    action: str
    org: str | None = None
    owner: str = ""
    explain: bool = False
    min_revision: int | None = None
    subject: str | None = None  # on behalf of this subject (see Rolegate.request_on_behalf)


def validate_min_revision(value: Any, field: str = "min_revision") -> int | None:
    """None, or a revision number (an integer from 0): read-your-writes for a check."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 7.0 is the integer 7
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_REVISION:
        raise InvalidRequest(f"{field}: expected a revision number (an integer from 0)")
    return value


_CHECK_FIELD_NAMES = frozenset(CHECK_FIELDS)
_REQUIRED_CHECK_FIELDS = tuple(field for field, required in CHECK_FIELDS.items() if required)


def parse_check_input(data: Any, where: str = "") -> CheckInput:
    """Validate one check object from JSON; errors name the field (`checks[3].resource`)."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"{where.rstrip('.') or 'body'}: expected a JSON object")
    if not data.keys() <= _CHECK_FIELD_NAMES:
        unknown = sorted(set(data) - _CHECK_FIELD_NAMES)
        raise InvalidRequest(f"{where}{unknown[0]}: unknown field")
    for field in _REQUIRED_CHECK_FIELDS:
        if field not in data:
            raise InvalidRequest(f"{where}{field}: required")
    explain = data.get("explain", False)
    if not isinstance(explain, bool):
        raise InvalidRequest(f"{where}explain: expected true or false")
    org = data.get("org")
    owner = data.get("owner")
    min_revision = data.get("min_revision")
    subject = data.get("subject")
    return CheckInput(
        resource=validate_text(
            data["resource"], "resource", max_length=MAX_RESOURCE_CHARS, where=where
        ),
        action=validate_text(data["action"], "action", where=where),
        org=None if org is None else validate_org(org, where=where),
        owner="" if owner is None else validate_text(owner, "owner", where=where),
        explain=explain,
        min_revision=None
        if min_revision is None
        else validate_min_revision(min_revision, f"{where}min_revision"),
        subject=None if subject is None else validate_text(subject, "subject", where=where),
    )


def role_subject_problem(snapshot: Snapshot, subject: str, *, api_key: bool = False) -> str | None:
    """Why `subject` cannot be decided for as a subject (None: it can).

    Casbin's `g(x, x, dom)` is true, so a subject named like a role holds that role. Refused: any
    role name of the policy (`reads.is_role_name`: link targets, template subjects, `owner`,
    `platform-admin`, the default role), `*`, and an `apikey:` subject that is not the key itself.
    """
    if subject.startswith(API_KEY_PREFIX) and not api_key:
        return f"{subject!r} names an API key: only the key itself acts as it"
    if reads.is_role_name(snapshot, subject):
        return f"{subject!r} is a role in the policy, not a subject"
    return None


def refuse_role_subject(snapshot: Snapshot, principal: Principal) -> None:
    """403 `subject_is_role` for a principal Casbin would mistake for a role."""
    problem = role_subject_problem(snapshot, principal.subject, api_key=principal.kind == "api_key")
    if problem is not None:
        raise Forbidden(f"the caller is refused: {problem}", code="subject_is_role")


# Called with every decision made (the decision log, metrics); never changes or aborts it.
DecisionListener = Callable[[Principal, CheckRequest, Decision, DecisionResult], None]


class Rolegate:
    """Settings + engine + store + identity: the operations both front ends offer."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        store: ManagedPolicySource,
        verifier: TokenVerifier | None = None,
    ):
        self.settings = settings
        self.engine = engine
        self.store = store
        self.verifier = verifier
        self.decision_listeners: list[DecisionListener] = []
        self.decision_log: DecisionLog | None = None
        self.last_reload_error: str | None = None
        self.loaded = False
        self._reload_lock = threading.Lock()
        self._revision_waiters = threading.BoundedSemaphore(MAX_REVISION_WAITERS)
        # What this process last heard from the store (see `refresh`, `rolegate.sync`).
        self.store_revision: int | None = None
        self.store_error: str | None = None
        self.revision_applied_at: float | None = None  # time.time() of the last snapshot swap
        # Called as (old_revision, new_revision, kind) after each snapshot swap from the store.
        self.reload_listeners: list[Callable[[int, int, str], None]] = []
        self.sync: PolicySync | None = None  # once start_sync() ran
        self.shadow: ShadowEvaluator | None = None  # ROLEGATE_SHADOW_POLICY_DIR

    @classmethod
    def from_settings(
        cls, settings: Settings, *, with_identity: bool = True, engine: Engine | None = None
    ) -> Rolegate:
        """`engine`: one already holding a snapshot (loaded before `rolegate serve` forked its
        workers), which `resume` catches up instead of loading everything again."""
        if engine is None:
            engine = Engine.from_model_file(settings.model_path, default_role=settings.default_role)
        store = PolicyStore.from_url(settings.database_url)
        verifier = TokenVerifier.from_settings(settings) if with_identity else None
        if verifier is not None:
            for warning in verifier.startup_warnings():
                log.warning(warning)
        core = cls(settings, engine, store, verifier)
        core.decision_log = DecisionLog.from_settings(settings, store.decision_rows())
        if core.decision_log is not None:
            core.decision_listeners.append(core.decision_log.record)
        return core

    @classmethod
    def offline(cls, settings: Settings, policy_dir: Path | None = None) -> Rolegate:
        """A loaded core for one-shot commands (`rolegate check`, the audit views): no token
        verifier, no decision log, no sync. It decides over the configured store, or over the
        rules of `policy_dir` (imported into a private in-memory store), exactly as the service
        does. Close it when done."""
        engine = Engine.from_model_file(settings.model_path, default_role=settings.default_role)
        if policy_dir is None:
            core = cls(settings, engine, PolicyStore.from_url(settings.database_url))
            core.start()
            return core
        settings = settings.replace(policy_dir=str(policy_dir))
        core = cls(settings, engine, PolicyStore.from_url(IN_MEMORY_STORE_URL))
        try:
            core.start(sync_policies=True)
        except BaseException:
            core.close()
            raise
        return core

    # -- policy lifecycle ---------------------------------------------------------------------

    @property
    def policy_dir(self) -> Path:
        return Path(self.settings.policy_dir)

    def sync_policies(self, actor: str | None = None) -> int:
        """Make the store's file-managed rules equal the policy dir (one transaction; rules
        managed by the admin API are kept, see `PolicyStore.sync_files`); returns the revision."""
        sourced = read_policy_dir(self.policy_dir)
        result = self.store.sync_files(
            [item.rule for item in sourced if item.managed_by == "files"],
            seeds=[item.rule for item in sourced if item.managed_by != "files"],
            actor=actor or f"file:{self.policy_dir}",
        )
        revision = result.revision
        if not result.is_empty():
            log.info("policy files synced: %s", result.summary())
        if self.settings.subject_attributes:
            records = read_attributes_file(Path(self.settings.subject_attributes))
            self.subject_attributes.replace_all(records)
        return revision

    def load(self) -> Snapshot:
        """Load the whole store into the engine."""
        started = time.perf_counter()
        before = self.engine.revision
        revision, rules = self.store.load_all(progress=_log_progress)
        snapshot = self.engine.load(revision, rules)
        self.loaded = True
        self._swapped(before, revision, "full", started)
        log.info(
            "policy revision %s loaded: %s rules, engine mode %s",
            revision,
            snapshot.rule_count,
            self.engine.mode,
        )
        return snapshot

    def start(self, *, sync_policies: bool = False) -> Snapshot:
        if sync_policies:
            self.sync_policies()
        return self.load()

    def resume(self) -> Snapshot:
        """Bring the engine's snapshot to the store's revision through the change log (a full
        load only when the log cannot explain the gap). Raises `StoreUnavailable` when the store
        cannot be read: an inherited snapshot may be old, and is never served unconfirmed."""
        inherited = self.engine.revision
        with self._reload_lock:
            changed, read = self._reload(None)
        if not read:
            raise StoreUnavailable(
                f"cannot catch up from policy revision {inherited}: {self.last_reload_error}"
            )
        if not changed:  # nothing read: no reload to time, the rest as after a swap
            self._swapped(inherited, inherited, "inherited", started=None)
        self.loaded = True
        log.info(
            "policy revision %s in use (started from revision %s already in memory)",
            self.engine.revision,
            inherited,
        )
        return self.engine.snapshot

    def refresh(self, target: int | None = None) -> bool:
        """Catch up with the store; True when the snapshot changed. Never raises.

        `target`: a revision known to exist (a notification's); nothing is read when the engine
        already has it. Only the orgs named in the change log since the engine's revision are
        re-read (one consistent read); a gap the log cannot explain means a full load.
        """
        with self._reload_lock:
            changed, _ = self._reload(target)
            return changed

    def _reload(self, target: int | None) -> tuple[bool, bool]:
        """`refresh` under the reload lock: (snapshot changed, store read or target reached)."""
        if target is not None and self.engine.revision >= target:
            return False, True
        started = time.perf_counter()
        before = self.engine.revision
        try:
            reload = self.store.load_changes(before, max_entries=MAX_INCREMENTAL_ENTRIES)
            self.note_store_revision(reload.revision)
            self.store_error = None
            self.last_reload_error = None
            if not reload.complete:
                self.load()
            elif reload.revision != before:
                self.engine.replace_domains(reload.revision, reload.orgs, reload.rules)
                self._swapped(before, reload.revision, "incremental", started)
            else:
                return False, True
            return True, True
        except Exception as exc:
            self.last_reload_error = f"{type(exc).__name__}: {exc}"
            self.store_error = self.last_reload_error
            metrics.reload_failed()
            log.error("policy reload failed: %s", self.last_reload_error)
            return False, False

    def _swapped(self, before: int, revision: int, kind: str, started: float | None) -> None:
        """After the engine took `revision`: what depends on it, and the reload's metrics
        (`started`: when the store read began; None when nothing was read)."""
        reads.role_names(self.engine.snapshot)  # the refusal set, computed off the request path
        self.reload_api_keys()
        self.revision_applied_at = time.time()
        if started is not None:
            metrics.observe_reload(kind, time.perf_counter() - started)
        metrics.set_revision(revision)
        if kind == "incremental":
            log.info("policy revision %s applied (from %s)", revision, before)
        for listener in self.reload_listeners:
            try:
                listener(before, revision, kind)
            except Exception:
                log.exception("reload listener failed")

    def note_store_revision(self, revision: int | None) -> None:
        """The store is known to have reached `revision` (from a read or a notification)."""
        if revision is not None and (self.store_revision is None or revision > self.store_revision):
            self.store_revision = revision

    def note_store_error(self, error: str) -> None:
        """The store could not be reached (decisions go on from memory: `stale`)."""
        self.store_error = error

    @property
    def stale(self) -> bool:
        """The last contact with the store failed: the policy may be behind."""
        return self.store_error is not None

    @property
    def lag(self) -> int | None:
        """Revisions between the store (as last seen) and the engine."""
        if self.store_revision is None:
            return None
        return max(0, self.store_revision - self.engine.revision)

    def readiness(self) -> Readiness:
        """What `/readyz` reports for this process."""
        snapshot = self.engine.snapshot
        return Readiness(
            ready=self.loaded,
            revision=snapshot.revision,
            rules=snapshot.rule_count,
            engine_mode=self.engine.mode,
            engine_mode_reason=self.engine.shape.reason,
            last_reload_error=STORE_RELOAD_FAILED
            if self.last_reload_error
            else read_reload_error(self.settings.data_path),
            stale=self.stale,
            store_revision=self.store_revision,
            lag=self.lag,
            revision_applied_at=self.revision_applied_at,
            listening=bool(self.sync and self.sync.listening),
            shadow=self.shadow.status() if self.shadow is not None else None,
        )

    def ensure_revision(self, min_revision: int | None) -> None:
        """Read-your-writes: the engine has `min_revision` after at most one catch-up with the
        store, else an error at once: 400 `revision_ahead` when the store itself has no such
        revision, 503 `revision_unavailable` when the store cannot be read in time or too many
        requests of this worker already wait (MAX_REVISION_WAITERS)."""
        if min_revision is None or self.engine.revision >= min_revision:
            return
        if not self._revision_waiters.acquire(blocking=False):
            raise self._revision_unavailable(min_revision, "too many checks wait for revisions")
        try:
            read = self._catch_up(min_revision, self.settings.min_revision_wait)
        finally:
            self._revision_waiters.release()
        if self.engine.revision >= min_revision:
            return
        if read and self.store_revision is not None and min_revision > self.store_revision:
            raise InvalidRequest(
                f"min_revision: {min_revision} is beyond the store's latest revision "
                f"({self.store_revision})",
                code="revision_ahead",
            )
        raise self._revision_unavailable(min_revision, "the store could not be read in time")

    def _catch_up(self, target: int, wait: float) -> bool:
        """One refresh towards `target`, waiting at most `wait` s for a reload already running;
        True when the store was read (or the target reached meanwhile)."""
        if not self._reload_lock.acquire(timeout=max(wait, 0)):
            return self.engine.revision >= target
        try:
            return self._reload(target)[1]
        finally:
            self._reload_lock.release()

    def _revision_unavailable(self, revision: int, why: str) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"policy revision {revision} is not available here yet ({why}; this worker is at "
            f"{self.engine.revision}): retry",
            code="revision_unavailable",
        )

    def start_sync(self) -> None:
        """Follow the store from this process: LISTEN/NOTIFY (PostgreSQL) and the poll."""
        if self.sync is None:
            self.sync = PolicySync.for_core(self)
            self.sync.start()

    def stop_sync(self) -> None:
        if self.sync is not None:
            self.sync.stop()
            self.sync = None

    # -- identity -----------------------------------------------------------------------------

    def authenticate(self, authorization: str | None, api_key: str | None = None) -> Principal:
        """A Bearer JWT, `Authorization: ApiKey <key>` or an `X-API-Key` header (`api_key`)."""
        scheme, _, credential = (authorization or "").strip().partition(" ")
        if scheme.lower() == "apikey":
            if api_key is not None:
                raise InvalidRequest("send one credential: an Authorization header or X-API-Key")
            api_key = credential.strip()
        if api_key is not None:
            if authorization and scheme.lower() != "apikey":
                raise InvalidRequest("send one credential: an Authorization header or X-API-Key")
            principal = self.api_keys.authenticate(api_key)
        elif self.verifier is None:
            raise RuntimeError("this Rolegate was built without identity")
        else:
            principal = self.verifier.authenticate(authorization)
        refuse_role_subject(self.engine.snapshot, principal)
        return principal

    def reload_api_keys(self, *, only_if_old: bool = False) -> None:
        """Keep the in-memory API keys current (after a revision change; from the poll)."""
        if "api_keys" not in self.__dict__:
            return  # not used in this process yet: loaded on first use
        if only_if_old:
            self.api_keys.reload_index_if_old()
        else:
            self.api_keys.reload_index()

    @functools.cached_property
    def api_keys(self) -> ApiKeyStore:
        """The API key table (same database as the policy store)."""
        return ApiKeyStore.from_settings(self.store.api_key_rows(), self.settings)

    @functools.cached_property
    def subject_attributes(self) -> SubjectAttributeStore:
        """Subject attributes, the PIP of AuthZEN requests (same database as the store)."""
        return SubjectAttributeStore(self.store.subject_attribute_rows())

    def catch_up(self, revision: int, changes: ChangeSet) -> None:
        """After this process wrote `changes` as `revision`: decide with them from now on."""
        with self._reload_lock:
            if self.engine.revision == revision - 1:
                started = time.perf_counter()
                self.engine.apply(revision, changes.added, changes.removed)
                self.note_store_revision(revision)
                self._swapped(revision - 1, revision, "local", started)
                return
        self.refresh()

    def request_for(self, principal: Principal, check: CheckInput) -> CheckRequest:
        """Resolve the org (the token's is authoritative), then `principal_request`."""
        if principal.org is not None:
            if check.org is not None and check.org != principal.org:
                raise Forbidden(
                    f"the token is for org {principal.org!r}, not {check.org!r}",
                    code="org_mismatch",
                )
            org = principal.org
        elif check.org is not None:
            org = check.org
        else:
            raise InvalidRequest("org: required, because the token names no organisation")
        return self.principal_request(
            principal, org, check.resource, check.action, owner=check.owner
        )

    def principal_request(
        self,
        principal: Principal,
        org: str,
        resource: str,
        action: str,
        *,
        owner: str = "",
        snapshot: Snapshot | None = None,
    ) -> CheckRequest:
        """The one principal -> check-request rule (checks, admin and audit all use it).

        The subject is the principal's own (never a role: `refuse_role_subject`, 403); trusted
        token roles count only in the token's own org; the default role and API-key roles are
        policy links the engine follows.
        """
        refuse_role_subject(snapshot or self.engine.snapshot, principal)
        trusted = self.settings.trust_token_roles and principal.org == org
        return CheckRequest(
            subject=principal.subject,
            org=org,
            resource=resource,
            action=action,
            owner=owner,
            extra_roles=tuple(principal.roles) if trusted else (),
        )

    def request_on_behalf(
        self, principal: Principal, check: CheckInput, subject: str
    ) -> CheckRequest:
        """The request deciding for `subject`, asked by `principal` (a PEP, a background job).

        The org is resolved as for the caller's own checks (`request_for`). A subject other than
        the caller needs `evaluate` on `/authzen` in that org (the engine decides), must not name
        a role (a role name as subject would hold that role's rules directly) and gets none of
        the caller's token roles.
        """
        own = self.request_for(principal, check)
        if subject == principal.subject:
            return own
        self.require_evaluate(own)
        problem = role_subject_problem(self.engine.snapshot, subject)
        if problem is not None:
            raise InvalidRequest(f"subject: {problem}", code="subject_is_role")
        return replace(own, subject=subject, extra_roles=())

    def require_evaluate(self, own: CheckRequest) -> None:
        """403 unless the caller of `own` (its own request) may decide for others in its org."""
        permission = replace(own, resource=AUTHZEN_RESOURCE, action=EVALUATE_ACTION, owner="")
        if not self.engine.check(permission).allowed:
            raise Forbidden(
                f"{own.subject!r} may only ask about itself in org {own.org!r}: deciding for "
                f"other subjects needs `{EVALUATE_ACTION}` on `{AUTHZEN_RESOURCE}`",
                code="forbidden",
            )

    def request_as(self, principal: Principal, check: CheckInput) -> CheckRequest:
        """The caller's own request, or on behalf of the check's `subject` when it names one."""
        if check.subject is None:
            return self.request_for(principal, check)
        return self.request_on_behalf(principal, check, check.subject)

    # -- decisions ----------------------------------------------------------------------------

    def _notify(self, principal: Principal, result: DecisionResult) -> None:
        for listener in self.decision_listeners:
            try:
                listener(principal, result.request, result.decision, result)
            except Exception:  # a listener (audit sink) never changes or aborts a decision
                log.exception("decision listener failed")

    def check(self, principal: Principal, check: CheckInput) -> DecisionResult:
        """Decide `check` for `principal` (or on behalf of `check.subject`); listeners hear it."""
        request = self.request_as(principal, check)
        self.ensure_revision(check.min_revision)
        snapshot = self.engine.snapshot
        decision = self.engine.check(request, snapshot)
        result = self._result(request, decision, check.explain, snapshot)
        self._notify(principal, result)
        return result

    def check_batch(self, principal: Principal, checks: Sequence[CheckInput]) -> BatchResult:
        """Decide every check on one snapshot, in order; listeners hear each decision."""
        requests = self._requests_as(principal, checks)
        wanted = [check.min_revision for check in checks if check.min_revision is not None]
        self.ensure_revision(max(wanted) if wanted else None)
        snapshot, decisions = self.engine.check_many(requests)
        results = []
        explained = 0  # the nearest roles cost up to 256 decisions each: a few per batch
        decision_ids = new_decision_ids(len(requests))
        for check, request, decision, decision_id in zip(
            checks, requests, decisions, decision_ids, strict=True
        ):
            nearest = explained < MAX_NEAREST_PER_BATCH
            explained += check.explain and not decision.allowed
            result = self._result(
                request, decision, check.explain, snapshot, nearest=nearest, decision_id=decision_id
            )
            self._notify(principal, result)
            results.append(result)
        return BatchResult(tuple(results), snapshot.revision)

    def _requests_as(
        self, principal: Principal, checks: Sequence[CheckInput]
    ) -> list[CheckRequest]:
        """`request_as` of each check, in order (the first refusal raises). The caller's own
        checks differ only in resource, action and owner: `request_for` resolves each org they
        name once, and the others take its subject, org and token roles."""
        own: dict[str | None, CheckRequest] = {}
        requests = []
        for check in checks:
            if check.subject is not None:
                requests.append(self.request_on_behalf(principal, check, check.subject))
                continue
            base = own.get(check.org)
            if base is None:
                base = own[check.org] = self.request_for(principal, check)
                requests.append(base)
                continue
            requests.append(
                CheckRequest(
                    base.subject,
                    base.org,
                    check.resource,
                    check.action,
                    check.owner,
                    base.extra_roles,
                )
            )
        return requests

    def _result(
        self,
        request: CheckRequest,
        decision: Decision,
        explain: bool,
        snapshot: Snapshot,
        *,
        nearest: bool = True,
        decision_id: str | None = None,
    ) -> DecisionResult:
        """The result of one decision; an explained denial says what would allow it."""
        denial = None
        if explain and not decision.allowed:
            from .engine.explain import explain_denial

            denial = explain_denial(self.engine, request, decision, snapshot, nearest=nearest)
        return DecisionResult(
            request, decision, decision_id or new_decision_id(), explain=explain, denial=denial
        )

    def check_as(
        self,
        subject: str,
        org: str,
        resource: str,
        action: str,
        *,
        owner: str = "",
        explain: bool = False,
    ) -> DecisionResult:
        """`check` as `subject` itself would ask it in `org` (no token roles): `rolegate check`."""
        kind = "api_key" if subject.startswith(API_KEY_PREFIX) else "user"
        principal = Principal(subject, org, (), None, None, kind=kind)
        return self.check(
            principal, CheckInput(resource, action, org=org, owner=owner, explain=explain)
        )

    def is_allowed(self, subject: str, org: str, resource: str, action: str) -> Decision:
        """Decide for a subject directly (CLI, management API's own authorization)."""
        return self.engine.check(CheckRequest(subject, org, resource, action))

    def close(self) -> None:
        self.stop_sync()
        if self.shadow is not None:
            self.shadow.close()
        if self.decision_log is not None:
            self.decision_log.close()
        self.store.dispose()


def _log_progress(rules_read: int) -> None:
    if rules_read >= PROGRESS_LOG_FROM:
        log.info("loading policy: %s rules read", rules_read)


def default_policy_dir() -> Path:
    """`policies/` in the working directory, else the sample shipped beside the package."""
    local = Path("policies")
    return local if local.is_dir() else shipped_path("policies")


__all__ = [
    "MAX_BATCH",
    "BatchResult",
    "CheckInput",
    "DecisionResult",
    "Rolegate",
    "parse_check_input",
    "refuse_role_subject",
    "validate_org",
    "validate_text",
]
