"""Typed errors. Only the edges (HTTP handlers, CLI) turn them into statuses and exit codes."""

from __future__ import annotations


class RolegateError(Exception):
    """Base error: a stable `code`, a human `message`, an HTTP status and a CLI exit code."""

    code = "error"
    http_status = 500
    exit_code = 2

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status

    def to_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class ConfigError(RolegateError):
    """The configuration cannot work (missing key, unreadable file, contradictory settings)."""

    code = "config_error"


class InvalidRequest(RolegateError):
    code = "invalid_request"
    http_status = 400


class AuthenticationError(RolegateError):
    """The caller's credentials are missing or not acceptable (always 401)."""

    code = "invalid_token"
    http_status = 401


class KeyServerUnavailable(RolegateError):
    code = "key_server_unavailable"
    http_status = 503


class Forbidden(RolegateError):
    code = "forbidden"
    http_status = 403


class NotFound(RolegateError):
    code = "not_found"
    http_status = 404


class Conflict(RolegateError):
    code = "conflict"
    http_status = 409


class PayloadTooLarge(RolegateError):
    code = "payload_too_large"
    http_status = 413


class UnsupportedMediaType(RolegateError):
    code = "unsupported_media_type"
    http_status = 415


class ServiceUnavailable(RolegateError):
    code = "unavailable"
    http_status = 503


class StoreUnavailable(ServiceUnavailable):
    code = "store_unavailable"


class PolicyError(RolegateError):
    """A policy file or rule set that cannot be used; `location` is `file:line` when known."""

    code = "invalid_policy"
    http_status = 400

    def __init__(self, message: str, *, location: str | None = None, code: str | None = None):
        self.location = location
        super().__init__(f"{location}: {message}" if location else message, code=code)
