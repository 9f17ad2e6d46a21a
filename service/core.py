"""The Rolegate core: one object behind the HTTP API and the CLI.

It ties settings, identity, engine and store together and holds no web state:

    core = Rolegate.from_settings(Settings.from_env())
    core.start(sync_policies=True)
    principal = core.authenticate("Bearer eyJ...")
    result = core.check(principal, parse_check_input({"resource": "/projects/1", "action": "read"}))
"""

from __future__ import annotations

import logging
import threading
import unicodedata
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import REPO_ROOT, Settings
from .engine import CheckRequest, Decision, Engine, Snapshot
from .errors import Forbidden, InvalidRequest
from .identity import Principal, TokenVerifier
from .rules import TEMPLATE_DOMAIN
from .store import PolicyStore, read_policy_dir

log = logging.getLogger("rolegate")

MAX_RESOURCE_BYTES = 2048
MAX_NAME_CHARS = 256
MAX_BATCH = 1000
CHECK_FIELDS = {"resource": True, "action": True, "org": False, "owner": False, "explain": False}


@dataclass(frozen=True, slots=True)
class CheckInput:
    """A validated check as a client sent it (org may be missing: the token decides)."""

    resource: str
    action: str
    org: str | None = None
    owner: str = ""
    explain: bool = False


def validate_text(value: Any, field: str, *, max_bytes: int = MAX_NAME_CHARS) -> str:
    """A non-empty string with no control characters, at most `max_bytes` UTF-8 bytes."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{field}: expected a string, got {type(value).__name__}")
    if not value:
        raise InvalidRequest(f"{field}: must not be empty")
    if len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidRequest(f"{field}: longer than {max_bytes} bytes")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise InvalidRequest(f"{field}: contains control characters")
    return value


def validate_org(value: Any, field: str = "org") -> str:
    org = validate_text(value, field)
    if "*" in org:
        raise InvalidRequest(f"{field}: must name one organisation (no '*')")
    return org


def parse_check_input(data: Any, where: str = "") -> CheckInput:
    """Validate one check object from JSON; errors name the field (`checks[3].resource`)."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"{where or 'body'}: expected a JSON object")
    unknown = sorted(set(data) - set(CHECK_FIELDS))
    if unknown:
        raise InvalidRequest(f"{where}{unknown[0]}: unknown field")
    for field, required in CHECK_FIELDS.items():
        if required and field not in data:
            raise InvalidRequest(f"{where}{field}: required")
    explain = data.get("explain", False)
    if not isinstance(explain, bool):
        raise InvalidRequest(f"{where}explain: expected true or false")
    owner = data.get("owner")
    return CheckInput(
        resource=validate_text(data["resource"], f"{where}resource", max_bytes=MAX_RESOURCE_BYTES),
        action=validate_text(data["action"], f"{where}action"),
        org=None if data.get("org") is None else validate_org(data["org"], f"{where}org"),
        owner="" if owner is None else validate_text(owner, f"{where}owner"),
        explain=explain,
    )


def decision_payload(request: CheckRequest, decision: Decision, explain: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "allowed": decision.allowed,
        "subject": request.subject,
        "org": request.org,
        "resource": request.resource,
        "action": request.action,
        "decision_id": uuid.uuid4().hex,
        "revision": decision.revision,
    }
    if explain:
        payload["reason"] = decision.reason
    return payload


DecisionListener = Callable[[Principal, CheckRequest, Decision, Mapping[str, Any]], None]


class Rolegate:
    """Settings + engine + store + identity: the operations both front ends offer."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        store: PolicyStore,
        verifier: TokenVerifier | None = None,
    ):
        self.settings = settings
        self.engine = engine
        self.store = store
        self.verifier = verifier
        self.decision_listeners: list[DecisionListener] = []
        self.last_reload_error: str | None = None
        self.loaded = False
        self._reload_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, with_identity: bool = True) -> Rolegate:
        engine = Engine.from_model_file(settings.model_path, default_role=settings.default_role)
        store = PolicyStore.from_url(settings.database_url)
        verifier = TokenVerifier.from_settings(settings) if with_identity else None
        if verifier is not None:
            for warning in verifier.startup_warnings():
                log.warning(warning)
        return cls(settings, engine, store, verifier)

    # -- policy lifecycle ---------------------------------------------------------------------

    @property
    def policy_dir(self) -> Path:
        return Path(self.settings.policy_dir)

    def sync_policies(self, actor: str | None = None) -> int:
        """Make the store equal the policy dir (one transaction); returns the store revision."""
        sourced = read_policy_dir(self.policy_dir)
        _, revision = self.store.replace_all(
            [item.rule for item in sourced], actor=actor or f"file:{self.policy_dir}"
        )
        return revision

    def load(self) -> Snapshot:
        """Load the whole store into the engine."""
        revision, rules = self.store.load_all()
        snapshot = self.engine.load(revision, rules)
        self.loaded = True
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

    def refresh(self) -> bool:
        """Catch up with the store when it has a newer revision; True when something changed."""
        with self._reload_lock:
            try:
                if self.store.revision() == self.engine.revision:
                    return False
                self.load()
                self.last_reload_error = None
                return True
            except Exception as exc:
                self.last_reload_error = f"{type(exc).__name__}: {exc}"
                log.error("policy reload failed: %s", self.last_reload_error)
                return False

    # -- identity -----------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Principal:
        if self.verifier is None:
            raise RuntimeError("this Rolegate was built without identity")
        return self.verifier.authenticate(authorization)

    def request_for(self, principal: Principal, check: CheckInput) -> CheckRequest:
        """Resolve the org (the token's is authoritative) and the roles the request carries."""
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
        trusted = self.settings.trust_token_roles and principal.org == org
        return CheckRequest(
            subject=principal.subject,
            org=org,
            resource=check.resource,
            action=check.action,
            owner=check.owner,
            extra_roles=tuple(principal.roles) if trusted else (),
        )

    # -- decisions ----------------------------------------------------------------------------

    def _notify(self, principal: Principal, request: CheckRequest, decision: Decision, payload):
        for listener in self.decision_listeners:
            try:
                listener(principal, request, decision, payload)
            except Exception:  # a listener (audit sink) never changes or aborts a decision
                log.exception("decision listener failed")

    def check(self, principal: Principal, check: CheckInput) -> dict[str, Any]:
        request = self.request_for(principal, check)
        decision = self.engine.check(request)
        payload = decision_payload(request, decision, check.explain)
        self._notify(principal, request, decision, payload)
        return payload

    def check_batch(self, principal: Principal, checks: Sequence[CheckInput]) -> dict[str, Any]:
        requests = [self.request_for(principal, check) for check in checks]
        snapshot, decisions = self.engine.check_many(requests)
        results = []
        for check, request, decision in zip(checks, requests, decisions, strict=True):
            payload = decision_payload(request, decision, check.explain)
            self._notify(principal, request, decision, payload)
            results.append(payload)
        return {"results": results, "revision": snapshot.revision}

    def is_allowed(self, subject: str, org: str, resource: str, action: str) -> Decision:
        """Decide for a subject directly (CLI, management API's own authorization)."""
        return self.engine.check(CheckRequest(subject, org, resource, action))

    def close(self) -> None:
        self.store.dispose()


def default_policy_dir() -> Path:
    """`policies/` in the working directory, else the sample shipped beside the package."""
    local = Path("policies")
    return local if local.is_dir() else REPO_ROOT / "policies"


__all__ = [
    "MAX_BATCH",
    "CheckInput",
    "Rolegate",
    "TEMPLATE_DOMAIN",
    "decision_payload",
    "parse_check_input",
    "validate_org",
    "validate_text",
]
