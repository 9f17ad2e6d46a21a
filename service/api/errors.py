"""One JSON error shape for every failure: `{"error": {"code", "message"}}`.

Typed errors carry their own status; Werkzeug's HTTP errors keep theirs (a 405 with the `Allow`
header RFC 9110 requires, listing the methods the URL serves); anything else is logged and
answered with a generic 500 (no stack trace, no detail leaves the process).
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ..errors import AuthenticationError, RolegateError, StoreUnavailable

log = logging.getLogger("rolegate.api")

HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_document(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def challenge_for(status: int, code: str) -> str | None:
    """The `WWW-Authenticate` value of a refusal (401 only)."""
    return f'Bearer error="{code}"' if status == 401 else None


def error_response(status: int, code: str, message: str):
    response = jsonify(error_document(code, message))
    response.status_code = status
    challenge = challenge_for(status, code)
    if challenge is not None:
        response.headers["WWW-Authenticate"] = challenge
    return response


def refusal(error: RolegateError) -> tuple[int, str, str]:
    """(status, code, public message) of a typed error; refusals and 5xx go to the log."""
    if isinstance(error, AuthenticationError) or error.http_status >= 500:
        log.info("request refused: %s %s", error.code, error.message)
    return error.http_status, error.code, public_message(error)


def http_refusal(error: HTTPException) -> tuple[int, str, str]:
    """(status, code, message) of a Werkzeug HTTP error (413 body too large, 404, ...)."""
    status = error.code or 500
    return status, HTTP_CODES.get(status, "http_error"), error.description or error.name


UNEXPECTED = (500, "internal_error", "internal error; the request was not allowed")


def unexpected() -> tuple[int, str, str]:
    """Inside `except`: log the exception with its traceback; (status, code, message)."""
    log.exception("unexpected error")
    return UNEXPECTED


def allow_header(methods) -> str:
    """`Allow` for a 405: the URL's methods, with HEAD beside GET and OPTIONS (Flask answers
    both for every route)."""
    names = {method.upper() for method in methods} | {"OPTIONS"}
    if "GET" in names:
        names.add("HEAD")
    return ", ".join(sorted(names))


# The driver's words name the database host, port and user: they go to the log, not the client.
STORE_UNAVAILABLE_MESSAGE = "the policy store is unavailable; retry later"


def public_message(error: RolegateError) -> str:
    """What a client is told about `error` (store failures without their database details)."""
    if isinstance(error, StoreUnavailable):
        return STORE_UNAVAILABLE_MESSAGE
    return error.message


def init_app(app: Flask) -> None:
    @app.errorhandler(RolegateError)
    def rolegate_error(error: RolegateError):
        return error_response(*refusal(error))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        status, code, message = http_refusal(error)
        response = error_response(status, code, message)
        if isinstance(error, MethodNotAllowed):
            response.headers["Allow"] = allow_header(error.valid_methods or ())
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        return error_response(*unexpected())
