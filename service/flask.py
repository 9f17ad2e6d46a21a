"""A Flask extension that asks Rolegate before a view runs, with the caller's own token.

    from rolegate.flask import Rolegate

    app.config["ROLEGATE_URL"] = "http://rolegate:8000"
    rolegate = Rolegate(app)                       # or Rolegate() + rolegate.init_app(app)
    rolegate.protect("/admin/*", action="manage")  # a whole route group

    @app.put("/projects/<project_id>")
    @rolegate.require("update", "/projects/{project_id}")
    def update_project(project_id): ...

The caller's `Authorization` header (Bearer JWT or ApiKey) is forwarded. Refusals answer in
Rolegate's JSON error shape: 401 (no or bad credential), 403 (denied), 400 (a check Rolegate
calls malformed) and 503 when Rolegate cannot decide (never an allow). Settings: `ROLEGATE_URL`,
`ROLEGATE_TIMEOUT` (seconds, default 2.0), `ROLEGATE_DENY_ON_ERROR` (default False: 503).
The decision is in `flask.g.rolegate_decision` while the view runs.
"""

from __future__ import annotations

import functools
import inspect
import string
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, Response, current_app, g, jsonify, request

from .client import (
    BadRequest,
    Forbidden,
    RolegateClient,
    RolegateClientError,
    RolegateUnavailable,
    Unauthorized,
)
from .errors import RolegateError
from .forwarding import DEFAULT_METHOD_ACTIONS, action_for, resolve_path

EXTENSION_KEY = "rolegate_client"


def template_fields(template: str) -> list[tuple[str, str | None]]:
    """(literal text, field name or None) pieces of a `{name}` template; nothing fancier."""
    pieces = []
    for literal, field, spec, conversion in string.Formatter().parse(template):
        if field is not None and (not field.isidentifier() or spec or conversion):
            raise ValueError(f"{template!r}: fields must be plain {{name}}, got {{{field}}}")
        pieces.append((literal, field))
    return pieces


def fill(pieces: list[tuple[str, str | None]], values: dict) -> str:
    return "".join(
        literal + ("" if field is None else str(values[field])) for literal, field in pieces
    )


def _accepts(view: Callable, names: set[str]) -> set[str]:
    """The names in `names` the view cannot receive as keyword arguments."""
    parameters = inspect.signature(view).parameters.values()
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return set()
    return names - {parameter.name for parameter in parameters}


@dataclass(frozen=True, slots=True)
class Protection:
    """A path pattern: `/admin/*` is /admin and everything under it; otherwise exact."""

    prefix: str
    exact: bool
    action: str | None
    resource: str | None

    @classmethod
    def parse(cls, pattern: str, action: str | None, resource: str | None) -> Protection:
        exact = not pattern.endswith("/*")
        prefix = pattern if exact else pattern[:-2]
        if not pattern.startswith("/") or "*" in prefix:
            raise ValueError(f"{pattern!r}: expected /a/path or /a/path/* (one trailing *)")
        return cls(prefix or "/", exact, action, resource)

    def covers(self, path: str) -> bool:
        if self.exact:
            return path == self.prefix
        return self.prefix == "/" or path == self.prefix or path.startswith(self.prefix + "/")


def error(status: int, code: str, message: str) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = f'Bearer error="{code}"'
    return response


_REFUSALS: tuple[tuple[type[RolegateClientError], int], ...] = (
    (Unauthorized, 401),
    (Forbidden, 403),
    (BadRequest, 400),
)


class Rolegate:
    def __init__(self, app: Flask | None = None):
        self.protections: list[Protection] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        url = app.config.get("ROLEGATE_URL")
        if not url:
            raise RuntimeError("set app.config['ROLEGATE_URL'] (e.g. 'http://rolegate:8000')")
        app.extensions[EXTENSION_KEY] = RolegateClient(
            url,
            timeout=float(app.config.get("ROLEGATE_TIMEOUT", 2.0)),
            deny_on_error=bool(app.config.get("ROLEGATE_DENY_ON_ERROR", False)),
        )
        app.before_request(self._guard_protected_paths)

    # -- the two ways to protect --------------------------------------------------------------

    def require(self, action: str, template: str) -> Callable[[Callable], Callable]:
        """Decorator: ask for `action` on `template` filled from the view's URL arguments."""
        pieces = template_fields(template)
        names = {field for _, field in pieces if field is not None}

        def decorate(view: Callable) -> Callable:
            missing = _accepts(view, names)
            if missing:
                raise TypeError(
                    f"{view.__name__} has no argument(s) {sorted(missing)} for {template!r}"
                )

            @functools.wraps(view)
            def guarded(*args, **kwargs):
                refusal = self.refusal(action, fill(pieces, kwargs))
                return refusal if refusal is not None else view(*args, **kwargs)

            return guarded

        return decorate

    def protect(self, pattern: str, *, action: str | None = None, resource: str | None = None):
        """Every request under `pattern` asks first: for `action` (default: the method's, GET
        is read, DELETE is delete...) on `resource` (default: the normalised request path)."""
        self.protections.append(Protection.parse(pattern, action, resource))

    # -- asking -------------------------------------------------------------------------------

    def refusal(self, action: str, resource: str) -> Response | None:
        """None when the caller may `action` on `resource`, else the error response to send."""
        authorization = request.headers.get("Authorization")
        if not authorization:
            return error(
                401, "missing_token", "missing credentials: expected an Authorization header"
            )
        client = current_app.extensions[EXTENSION_KEY].with_authorization(authorization)
        try:
            result = client.check(resource, action)
        except RolegateUnavailable as exc:
            current_app.logger.warning("rolegate: no decision for %s %s: %s", action, resource, exc)
            return error(503, "rolegate_unavailable", "the authorization service did not answer")
        except RolegateClientError as exc:
            for kind, status in _REFUSALS:
                if isinstance(exc, kind):
                    return error(status, exc.code, exc.message)
            current_app.logger.error("rolegate: unexpected answer: %s", exc)
            return error(503, "rolegate_unavailable", "the authorization service did not answer")
        g.rolegate_decision = result
        if not result.allowed:
            return error(403, "forbidden", f"not allowed to {action} {resource}")
        return None

    def _guard_protected_paths(self) -> Response | None:
        try:
            path = resolve_path(request.path)
        except RolegateError as exc:
            return error(exc.http_status, exc.code, exc.message)
        for protection in self.protections:
            if not protection.covers(path):
                continue
            try:
                action = protection.action or action_for(request.method, DEFAULT_METHOD_ACTIONS)
            except RolegateError as exc:
                return error(exc.http_status, exc.code, exc.message)
            refusal = self.refusal(action, protection.resource or path)
            if refusal is not None:
                return refusal
        return None


__all__ = ["Rolegate"]
