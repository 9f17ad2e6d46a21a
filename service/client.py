"""A Python client for a Rolegate server (stdlib only: http.client with kept-alive connections).

    from rolegate.client import RolegateClient

    rolegate = RolegateClient("http://rolegate:8000", token=user_jwt)
    if rolegate.check("/projects/42", "update").allowed:
        ...

A timeout, a refused connection or a 5xx raises `RolegateUnavailable` (never a silent allow);
with `deny_on_error=True` checks answer a deny instead, with `.error` saying why. 400, 401 and
403 raise `BadRequest`, `Unauthorized` and `Forbidden`, each carrying the server's error code.
"""

from __future__ import annotations

import copy
import http.client
import json
import queue
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_IDLE_CONNECTIONS = 16
# A kept-alive connection the server has closed fails on first use: retried once, fresh.
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class RolegateClientError(Exception):
    """A request Rolegate refused or could not answer; `code` is the server's error code."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "error"):
        super().__init__(
            message if status is None else f"Rolegate answered {status} {code}: {message}"
        )
        self.message = message
        self.status = status
        self.code = code


class RolegateUnavailable(RolegateClientError):
    """No decision: timeout, connection refused or reset, a 5xx, or an unreadable answer."""


class BadRequest(RolegateClientError):
    """400: the check itself is malformed (empty resource, unknown field, ...)."""


class Unauthorized(RolegateClientError):
    """401: the credential is missing, invalid or expired."""


class Forbidden(RolegateClientError):
    """403: refused before deciding (e.g. `org_mismatch`); a deny is a result, not this."""


_ERROR_BY_STATUS: dict[int, type[RolegateClientError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One decision; `reason` when `explain` was asked, `error` for a deny_on_error deny."""

    allowed: bool
    decision_id: str | None
    reason: dict[str, Any] | None = None
    revision: int | None = None
    error: RolegateUnavailable | None = None


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    port: int
    https: bool
    base_path: str


def _target(base_url: str) -> _Target:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
    https = parts.scheme == "https"
    return _Target(
        parts.hostname, parts.port or (443 if https else 80), https, parts.path.rstrip("/")
    )


def _authorization(token: str | None, api_key: str | None) -> str | None:
    if token is not None and api_key is not None:
        raise ValueError("pass token or api_key, not both")
    if token is not None:
        return f"Bearer {token}"
    if api_key is not None:
        return f"ApiKey {api_key}"
    return None


def check_body(
    resource: str, action: str, owner: str | None, org: str | None, explain: bool
) -> dict[str, Any]:
    body: dict[str, Any] = {"resource": resource, "action": action}
    if owner is not None:
        body["owner"] = owner
    if org is not None:
        body["org"] = org
    if explain:
        body["explain"] = True
    return body


def _result(payload: Mapping[str, Any]) -> CheckResult:
    return CheckResult(
        allowed=payload["allowed"] is True,
        decision_id=payload["decision_id"],
        reason=payload.get("reason"),
        revision=payload.get("revision"),
    )


def _error_for(status: int, text: str) -> RolegateClientError:
    try:
        error = json.loads(text)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", text[:200] or f"HTTP {status}"
    kind = _ERROR_BY_STATUS.get(status)
    if kind is None:
        kind = RolegateUnavailable if status >= 500 else RolegateClientError
    return kind(message, status=status, code=code)


class _ConnectionPool:
    """Idle kept-alive connections, shared by the threads using one client."""

    def __init__(self, target: _Target, timeout: float):
        self.target = target
        self.timeout = timeout
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue()

    def take(self) -> tuple[http.client.HTTPConnection, bool]:
        """A connection and whether it was used before."""
        try:
            return self._idle.get_nowait(), True
        except queue.Empty:
            return self.fresh(), False

    def fresh(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.target.https else http.client.HTTPConnection
        return kind(self.target.host, self.target.port, timeout=self.timeout)

    def give_back(self, connection: http.client.HTTPConnection) -> None:
        if self._idle.qsize() < MAX_IDLE_CONNECTIONS:
            self._idle.put(connection)
        else:
            connection.close()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


class RolegateClient:
    """Decisions from a Rolegate server for the caller named by `token` (JWT) or `api_key`."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        api_key: str | None = None,
        timeout: float = 2.0,
        deny_on_error: bool = False,
    ):
        self.base_url = base_url
        self.timeout = timeout
        self.deny_on_error = deny_on_error
        self._authorization = _authorization(token, api_key)
        self._pool = _ConnectionPool(_target(base_url), timeout)

    def with_authorization(self, authorization: str | None) -> RolegateClient:
        """The same server and connections, asking with this `Authorization` header value
        (e.g. the caller's own `Bearer ...`, forwarded). Closing either closes the shared pool."""
        sibling = copy.copy(self)  # shares the connection pool
        sibling._authorization = authorization
        return sibling

    # -- decisions ----------------------------------------------------------------------------

    def check(
        self,
        resource: str,
        action: str,
        *,
        owner: str | None = None,
        org: str | None = None,
        explain: bool = False,
    ) -> CheckResult:
        body = check_body(resource, action, owner, org, explain)
        try:
            return _result(self._post("/v1/check", body))
        except RolegateUnavailable as error:
            if self.deny_on_error:
                return CheckResult(allowed=False, decision_id=None, error=error)
            raise

    def check_batch(self, checks: Iterable[Mapping[str, Any]]) -> list[CheckResult]:
        """Decisions for check objects (`{"resource", "action", "owner"?, "org"?, "explain"?}`),
        in the order given, all against one policy revision."""
        items = [dict(check) for check in checks]
        try:
            payload = self._post("/v1/check/batch", {"checks": items})
            results = [_result(item) for item in payload["results"]]
        except RolegateUnavailable as error:
            if self.deny_on_error:
                return [CheckResult(allowed=False, decision_id=None, error=error) for _ in items]
            raise
        if len(results) != len(items):
            raise RolegateUnavailable(
                f"the batch answer has {len(results)} results for {len(items)} checks"
            )
        return results

    def plan(self, action: str, template: str, org: str | None = None) -> dict[str, Any]:
        """`POST /v1/plan`: the condition under which the caller may `action` on the rows of
        `template` (e.g. `/documents/:id`), the server's answer as is (`orgs`, `condition`...).
        Errors always raise, whatever `deny_on_error` says (422: not expressible as a plan)."""
        body: dict[str, Any] = {"action": action, "resource": template}
        if org is not None:
            body["org"] = org
        return self._post("/v1/plan", body)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> RolegateClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- transport ----------------------------------------------------------------------------

    def _post(self, path: str, body: Any) -> Any:
        status, text = self._exchange(path, json.dumps(body).encode())
        if status != 200:
            raise _error_for(status, text)
        try:
            return json.loads(text)
        except ValueError:
            raise RolegateUnavailable(
                f"the body is not JSON: {text[:200]!r}", status=200, code="invalid_response"
            ) from None

    def _exchange(self, path: str, data: bytes) -> tuple[int, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        url = self._pool.target.base_path + path
        for attempt in (1, 2):
            connection, reused = self._pool.take() if attempt == 1 else (self._pool.fresh(), False)
            try:
                connection.request("POST", url, body=data, headers=headers)
                response = connection.getresponse()
                text = response.read().decode("utf-8", "replace")
            except _STALE_CONNECTION as exc:
                connection.close()
                if reused and attempt == 1:
                    continue
                raise self._unavailable(exc) from exc
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                raise self._unavailable(exc) from exc
            if response.will_close:
                connection.close()
            else:
                self._pool.give_back(connection)
            return response.status, text
        raise AssertionError("unreachable")

    def _unavailable(self, exc: Exception) -> RolegateUnavailable:
        if isinstance(exc, TimeoutError):
            why = f"no answer within {self.timeout} s"
        else:
            why = f"{type(exc).__name__}: {exc}"
        return RolegateUnavailable(f"Rolegate at {self.base_url} is unavailable ({why})")


__all__ = [
    "BadRequest",
    "CheckResult",
    "Forbidden",
    "RolegateClient",
    "RolegateClientError",
    "RolegateUnavailable",
    "Unauthorized",
]
