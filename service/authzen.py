"""AuthZEN Authorization API 1.0 over the Rolegate core: request translation, evaluation(s),
search and discovery metadata. No flask; `rolegate.api.authzen` is the HTTP layer.

An AuthZEN request becomes one Rolegate check (see docs/authzen.md):

- `subject.id` -> the Casbin subject; a subject type outside `ROLEGATE_AUTHZEN_SUBJECT_TYPES`
  is denied;
- `resource {type, id}` -> a resource path from `ROLEGATE_AUTHZEN_RESOURCE_TEMPLATE`
  (default `/{type}/{id}`; values are percent-encoded, so an id cannot add path segments);
- `action.name` -> the action;
- the resource property `ROLEGATE_AUTHZEN_OWNER_PROPERTY` (default `ownerID`) makes the subject
  the owner of the check when it names the subject: by id, or by the subject attribute
  `ROLEGATE_AUTHZEN_OWNER_ATTRIBUTE` (default `email`, from `rolegate.subject_attributes`).

The org is the PDP's (per-org base URL) or the credential's; who may ask about whom is the core's
one rule (`Rolegate.request_on_behalf`). Every decision, including those behind search results,
is the engine's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote

from .audit.cursor import CursorCodec
from .audit.queries import (
    ANY_SUBJECT,
    OWNER_SUBJECT,
    effective_permissions,
    grant_domains,
    subject_kind,
    who_can,
)
from .config import Settings
from .core import MAX_BATCH, MAX_NAME_CHARS, MAX_RESOURCE_CHARS, CheckInput, Rolegate, validate_text
from .engine import CheckRequest
from .errors import (
    ConfigError,
    InvalidRequest,
    PayloadTooLarge,
    RolegateError,
    StoreUnavailable,
)
from .identity import Principal

log = logging.getLogger("rolegate.authzen")

API_PREFIX = "/access/v1"
ENDPOINTS = {
    "access_evaluation_endpoint": "/evaluation",
    "access_evaluations_endpoint": "/evaluations",
    "search_subject_endpoint": "/search/subject",
    "search_resource_endpoint": "/search/resource",
    "search_action_endpoint": "/search/action",
}
SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")
MAX_EVALUATIONS = MAX_BATCH
DEFAULT_PAGE = 100
MAX_PAGE = 1000
ENTITY_KEYS = ("subject", "action", "resource", "context")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PROPERTY_NAME = re.compile(r"properties\.([A-Za-z0-9_-]{1,64})")
# Characters kept as they are in a path value (emails stay readable); `/` and `%` are encoded.
_SAFE = "@:+!$&'()*,;="
# A resource pattern made only of these characters names itself (no keyMatch2 syntax): such
# patterns are the candidates of a resource search, each then decided by the engine.
_LITERAL = re.compile(r"[A-Za-z0-9_.@~!&,;=%-]+")


# --------------------------------------------------------------------------- request shapes


@dataclass(frozen=True)
class Entity:
    """A subject or resource: `type`, `id` (None when searched for) and `properties`."""

    type: str
    id: str | None
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    subject: Entity
    action: str
    resource: Entity


def _object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where}: expected a JSON object")
    return value


def _properties(data: dict, where: str) -> Mapping[str, Any]:
    properties = data.get("properties", {})
    if properties is None:
        return {}
    return _object(properties, f"{where}.properties")


def parse_entity(
    data: Any, where: str, *, needs_id: bool = True, max_id_bytes: int = MAX_RESOURCE_CHARS // 2
) -> Entity:
    """`{type, id, properties?}`; `id` is read only when `needs_id` (an input, not a target)."""
    if data is None:
        raise InvalidRequest(f"{where}: required")
    data = _object(data, where)
    if "type" not in data:
        raise InvalidRequest(f"{where}.type: required")
    kind = validate_text(data["type"], f"{where}.type")
    entity_id = None
    if needs_id:
        if "id" not in data:
            raise InvalidRequest(f"{where}.id: required")
        entity_id = validate_text(data["id"], f"{where}.id", max_length=max_id_bytes)
    return Entity(kind, entity_id, _properties(data, where))


def parse_action(data: Any, where: str = "action") -> str:
    if data is None:
        raise InvalidRequest(f"{where}: required")
    data = _object(data, where)
    if "name" not in data:
        raise InvalidRequest(f"{where}.name: required")
    return validate_text(data["name"], f"{where}.name")


def parse_context(data: dict, where: str = "") -> None:
    """`context` is optional and, when present, an object (Rolegate's model does not read it)."""
    if data.get("context") is not None:
        _object(data["context"], f"{where}context")


def parse_evaluation(data: Any, where: str = "") -> Evaluation:
    data = _object(data, where.rstrip(".") or "body")
    parse_context(data, where)
    return Evaluation(
        subject=parse_entity(data.get("subject"), f"{where}subject", max_id_bytes=MAX_NAME_CHARS),
        action=parse_action(data.get("action"), f"{where}action"),
        resource=parse_entity(data.get("resource"), f"{where}resource"),
    )


def merged_items(body: dict) -> list[Any]:
    """Each evaluation with the top-level subject/action/resource/context as defaults.

    An item key replaces the default as a whole (no merging inside an entity); an item that is
    not an object stays as it is (it fails on its own).
    """
    defaults = {key: body[key] for key in ENTITY_KEYS if key in body}
    return [
        {**defaults, **{key: item[key] for key in ENTITY_KEYS if key in item}}
        if isinstance(item, dict)
        else item
        for item in body["evaluations"]
    ]


def parse_semantic(body: dict) -> str:
    options = body.get("options")
    if options is None:
        return SEMANTICS[0]
    options = _object(options, "options")
    semantic = options.get("evaluations_semantic", SEMANTICS[0])
    if semantic not in SEMANTICS:
        raise InvalidRequest(
            f"options.evaluations_semantic: expected one of {', '.join(SEMANTICS)}"
        )
    return semantic


def wants_reasons(body: dict) -> bool:
    """Reasons are given only when asked: `"options": {"explain": true}`."""
    options = body.get("options")
    return isinstance(options, dict) and options.get("explain") is True


def parse_page(body: dict) -> tuple[int, str | None]:
    page = body.get("page")
    if page is None:
        return DEFAULT_PAGE, None
    page = _object(page, "page")
    limit = page.get("limit", DEFAULT_PAGE)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"page.limit: expected an integer from 1 to {MAX_PAGE}")
    token = page.get("token")
    if token in (None, ""):
        return limit, None
    return limit, validate_text(token, "page.token", max_length=2048)


# --------------------------------------------------------------------------- the mapping


def _property_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return ""


@dataclass(frozen=True)
class AuthzenMapping:
    """How an AuthZEN request names Rolegate's subject, resource, action and owner."""

    resource_template: str = "/{type}/{id}"
    owner_property: str = "ownerID"
    owner_attribute: str = "email"
    subject_types: tuple[str, ...] = ("user",)

    def __post_init__(self) -> None:
        names = _PLACEHOLDER.findall(self.resource_template)
        for name in names:
            if name not in ("type", "id") and not _PROPERTY_NAME.fullmatch(name):
                raise ConfigError(
                    f"ROLEGATE_AUTHZEN_RESOURCE_TEMPLATE: unknown placeholder {{{name}}}: use "
                    "{type}, {id} or {properties.<name>}"
                )
        if names.count("type") != 1 or names.count("id") != 1:
            raise ConfigError(
                "ROLEGATE_AUTHZEN_RESOURCE_TEMPLATE: name {type} and {id} exactly once each"
            )
        if not self.resource_template.startswith("/"):
            raise ConfigError("ROLEGATE_AUTHZEN_RESOURCE_TEMPLATE: must start with /")

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthzenMapping:
        return cls(
            resource_template=settings.authzen_resource_template,
            owner_property=settings.authzen_owner_property,
            owner_attribute=settings.authzen_owner_attribute,
            subject_types=tuple(settings.authzen_subject_types),
        )

    def resource_path(self, resource: Entity) -> str:
        def value(match: re.Match) -> str:
            name = match.group(1)
            if name == "type":
                text = resource.type
            elif name == "id":
                text = resource.id or ""
            else:
                text = _property_text(resource.properties.get(name.split(".", 1)[1]))
            return quote(text, safe=_SAFE)

        return _PLACEHOLDER.sub(value, self.resource_template)

    @property
    def pattern_reader(self) -> re.Pattern[str]:
        """Reads the type and id out of a rule's resource pattern shaped like the template
        (property placeholders may hold any pattern text)."""
        parts = []
        last = 0
        for match in _PLACEHOLDER.finditer(self.resource_template):
            parts.append(re.escape(self.resource_template[last : match.start()]))
            name = match.group(1)
            parts.append(f"(?P<{name}>[^/]+)" if name in ("type", "id") else ".*")
            last = match.end()
        parts.append(re.escape(self.resource_template[last:]))
        return re.compile("".join(parts))

    def owner(
        self, subject: Entity, resource: Entity, attributes: Callable[[], Mapping[str, str]]
    ) -> str:
        """The subject's id when the owner property names the subject, else "" (no owner)."""
        if not self.owner_property:
            return ""
        value = resource.properties.get(self.owner_property)
        if not isinstance(value, str) or not value:
            return ""
        if value == subject.id:
            return subject.id
        if self.owner_attribute and attributes().get(self.owner_attribute) == value:
            return subject.id or ""
        return ""


# --------------------------------------------------------------------------- the service


def metadata(base_url: str) -> dict[str, str]:
    """PDP metadata (discovery) of the PDP at `base_url` (no trailing slash)."""
    endpoints = {name: f"{base_url}{API_PREFIX}{path}" for name, path in ENDPOINTS.items()}
    return {"policy_decision_point": base_url, **endpoints}


def _error_item(error: RolegateError) -> dict[str, Any]:
    return {
        "decision": False,
        "context": {
            "error": {"status": error.http_status, "code": error.code, "message": error.message}
        },
    }


def _query_key(kind: str, org: str | None, *parts: Any) -> list[str]:
    text = json.dumps(parts, sort_keys=True, default=str)
    return [kind, org or "", hashlib.sha256(text.encode()).hexdigest()]


class AuthzenService:
    """Evaluation, evaluations and search for one core; `org` None: the credential's org."""

    def __init__(self, core: Rolegate, cursors: CursorCodec):
        self.core = core
        self.mapping = AuthzenMapping.from_settings(core.settings)
        self.cursors = cursors

    def _on_behalf(
        self, principal: Principal, check: CheckInput, subject: Entity
    ) -> CheckRequest | None:
        """The core's request for `subject` (403 when the caller may not ask), or None when
        the subject cannot hold permissions here (a role name, a type Rolegate does not serve)."""
        try:
            request = self.core.request_on_behalf(principal, check, subject.id or "")
        except InvalidRequest as exc:
            if exc.code == "subject_is_role":
                return None
            raise
        return request if subject.type in self.mapping.subject_types else None

    def _with_owner(
        self,
        request: CheckRequest,
        subject: Entity,
        resource: Entity,
        cache: dict[tuple[str, str], Mapping[str, str]],
    ) -> CheckRequest:
        """`request` with the subject as owner when the resource's owner property names it."""

        def subject_attributes() -> Mapping[str, str]:
            key = (request.org, request.subject)
            if key not in cache:
                try:
                    cache[key] = self.core.subject_attributes.get(*key)
                except StoreUnavailable as exc:  # fail closed: not known as the owner
                    log.warning("subject attributes unavailable, owner unknown: %s", exc.message)
                    return {}
            return cache[key]

        return replace(request, owner=self.mapping.owner(subject, resource, subject_attributes))

    # -- evaluation ---------------------------------------------------------------------------

    def _decide(
        self,
        principal: Principal,
        org: str | None,
        evaluation: Evaluation,
        explain: bool,
        attributes: dict[tuple[str, str], Mapping[str, str]],
    ) -> dict[str, Any]:
        subject, resource = evaluation.subject, evaluation.resource
        path = validate_text(
            self.mapping.resource_path(resource), "resource", max_length=MAX_RESOURCE_CHARS
        )
        check = CheckInput(resource=path, action=evaluation.action, org=org)
        request = self._on_behalf(principal, check, subject)
        if request is None:
            return {"decision": False}
        request = self._with_owner(request, subject, resource, attributes)
        result = self.core.check(
            principal,
            replace(
                check,
                org=request.org,
                owner=request.owner,
                subject=request.subject,
                explain=explain,
            ),
        )
        answer: dict[str, Any] = {"decision": result.allowed}
        if explain:
            answer["context"] = {
                "decision_id": result.decision_id,
                "revision": result.revision,
                "resource": result.resource,
                "reason": result.reason,
            }
        return answer

    def evaluate(self, principal: Principal, org: str | None, body: Any) -> dict[str, Any]:
        evaluation = parse_evaluation(body)
        return self._decide(principal, org, evaluation, wants_reasons(body), {})

    def evaluations(self, principal: Principal, org: str | None, body: Any) -> dict[str, Any]:
        body = _object(body, "body")
        items = body.get("evaluations")
        if items is None or items == []:  # backwards compatible: one evaluation
            return self.evaluate(principal, org, body)
        if not isinstance(items, list):
            raise InvalidRequest("evaluations: expected a list of evaluation objects")
        if len(items) > MAX_EVALUATIONS:
            raise PayloadTooLarge(
                f"evaluations: at most {MAX_EVALUATIONS} per request, got {len(items)}"
            )
        semantic = parse_semantic(body)
        explain = wants_reasons(body)
        attributes: dict[tuple[str, str], Mapping[str, str]] = {}
        results = []
        for index, item in enumerate(merged_items(body)):
            try:
                evaluation = parse_evaluation(item, f"evaluations[{index}].")
                results.append(self._decide(principal, org, evaluation, explain, attributes))
            except InvalidRequest as exc:  # one bad item fails alone (denied)
                results.append(_error_item(exc))
            decision = results[-1]["decision"]
            if (semantic == "deny_on_first_deny" and not decision) or (
                semantic == "permit_on_first_permit" and decision
            ):
                break
        return {"evaluations": results}

    # -- search -------------------------------------------------------------------------------

    def _page(self, query: list[str], keyed: list[tuple[str, dict]], body: dict) -> dict[str, Any]:
        """One page of sorted, de-duplicated results; `next_token` "" at the end."""
        limit, token = parse_page(body)
        after = None if token is None else self.cursors.decode(token, query)
        remaining = [(key, item) for key, item in keyed if after is None or key > after]
        page = remaining[:limit]
        more = len(remaining) > limit
        next_token = self.cursors.encode(query, page[-1][0]) if more else ""
        return {
            "page": {"next_token": next_token, "count": len(page), "total": len(keyed)},
            "results": [item for _, item in page],
        }

    def search_subject(self, principal: Principal, org: str | None, body: Any) -> dict[str, Any]:
        body = _object(body, "body")
        parse_context(body)
        target = parse_entity(body.get("subject"), "subject", needs_id=False)
        action = parse_action(body.get("action"))
        resource = parse_entity(body.get("resource"), "resource")
        path = validate_text(
            self.mapping.resource_path(resource), "resource", max_length=MAX_RESOURCE_CHARS
        )
        own = self.core.request_for(principal, CheckInput(path, action, org=org))
        self.core.require_evaluate(own)
        keyed: list[tuple[str, dict]] = []
        if target.type in self.mapping.subject_types:
            snapshot = self.core.engine.snapshot
            entries = who_can(self.core.engine, snapshot, own.org, path, action)
            keyed = [
                (entry.subject, {"type": target.type, "id": entry.subject})
                for entry in entries
                if entry.subject not in (OWNER_SUBJECT, ANY_SUBJECT)
                and subject_kind(entry.subject) == "user"
            ]
        query = _query_key("subject", own.org, target.type, action, path)
        return self._page(query, keyed, body)

    def search_resource(self, principal: Principal, org: str | None, body: Any) -> dict[str, Any]:
        body = _object(body, "body")
        parse_context(body)
        subject = parse_entity(body.get("subject"), "subject", max_id_bytes=MAX_NAME_CHARS)
        action = parse_action(body.get("action"))
        target = parse_entity(body.get("resource"), "resource", needs_id=False)
        request = self._on_behalf(principal, CheckInput("/", action, org=org), subject)
        keyed: list[tuple[str, dict]] = []
        if request is not None:
            snapshot = self.core.engine.snapshot
            request = self._with_owner(request, subject, target, {})
            for resource_id in self._known_resources(request.org, target.type):
                resource = Entity(target.type, resource_id, target.properties)
                path = self.mapping.resource_path(resource)
                decision = self.core.engine.check(replace(request, resource=path), snapshot)
                if decision.allowed:
                    keyed.append((resource_id, {"type": target.type, "id": resource_id}))
        query = _query_key(
            "resource", org, subject.type, subject.id, action, target.type, target.properties
        )
        return self._page(query, keyed, body)

    def _known_resources(self, org: str, resource_type: str) -> list[str]:
        """Ids of the resources of `resource_type` that a rule of the org (or the templates)
        names by a literal type and id, sorted: Rolegate keeps no resource inventory."""
        snapshot = self.core.engine.snapshot
        reader = self.mapping.pattern_reader
        found: set[str] = set()
        for domain in grant_domains(snapshot, org):
            for rule in snapshot.rules(domain):
                if rule[0] != "p" or len(rule) != 6:
                    continue
                match = reader.fullmatch(rule[3])
                if match is None:
                    continue
                kind, resource_id = match.group("type"), match.group("id")
                literal = _LITERAL.fullmatch(kind) and _LITERAL.fullmatch(resource_id)
                if literal and unquote(kind) == resource_type:
                    found.add(unquote(resource_id))
        return sorted(found)

    def search_action(self, principal: Principal, org: str | None, body: Any) -> dict[str, Any]:
        body = _object(body, "body")
        parse_context(body)
        subject = parse_entity(body.get("subject"), "subject", max_id_bytes=MAX_NAME_CHARS)
        resource = parse_entity(body.get("resource"), "resource")
        path = validate_text(
            self.mapping.resource_path(resource), "resource", max_length=MAX_RESOURCE_CHARS
        )
        request = self._on_behalf(principal, CheckInput(path, "-", org=org), subject)
        keyed: list[tuple[str, dict]] = []
        if request is not None:
            snapshot = self.core.engine.snapshot
            request = self._with_owner(request, subject, resource, {})
            # Candidates: the actions of every allow rule the subject (or a role granted to it
            # for this request) holds; the engine then decides each on the resource.
            holders = [request.subject, *request.extra_roles]
            actions = sorted(
                {
                    permission.action
                    for holder in holders
                    for permission in effective_permissions(snapshot, holder, request.org)
                    if permission.effect == "allow"
                }
            )
            for action in actions:
                if self.core.engine.check(replace(request, action=action), snapshot).allowed:
                    keyed.append((action, {"name": action}))
        query = _query_key("action", org, subject.type, subject.id, path)
        return self._page(query, keyed, body)


__all__ = [
    "API_PREFIX",
    "ENDPOINTS",
    "SEMANTICS",
    "AuthzenService",
    "Entity",
    "Evaluation",
    "AuthzenMapping",
    "merged_items",
    "metadata",
    "parse_evaluation",
]
