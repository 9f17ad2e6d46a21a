"""Request helpers shared by the blueprints: the core, the caller, the JSON body."""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, request

from ..core import Rolegate
from ..errors import InvalidRequest, UnsupportedMediaType
from ..identity import Principal


def get_core() -> Rolegate:
    return current_app.extensions["rolegate"]


def caller() -> Principal:
    """The authenticated caller of this request (401/400/503 errors raise)."""
    return get_core().authenticate(
        request.headers.get("Authorization"), request.headers.get("X-API-Key")
    )


MAX_INTEGER_DIGITS = 64  # revisions, limits and ids need 19; longer numbers are only an attack


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _NumberTooLong
    return int(text)


def _refuse_constant(name: str) -> Any:
    raise _NotJson(name)


class _NumberTooLong(ValueError):
    pass


class _NotJson(ValueError):
    pass


def json_body() -> Any:
    """The request's JSON document; 415 unless JSON, 400 when malformed, 413 when too large.

    Integers longer than MAX_INTEGER_DIGITS and the non-JSON constants NaN/Infinity are refused
    here, in the one parser every endpoint uses (Python would otherwise raise deep in `int()`).
    """
    if not request.is_json:
        raise UnsupportedMediaType("expected a JSON body (Content-Type: application/json)")
    return decode_json(request.get_data(cache=True))


def decode_json(raw: bytes) -> Any:
    """`raw` as a JSON document, under the limits of `json_body` (400 `InvalidRequest`)."""
    try:
        return json.loads(raw, parse_int=_parse_int, parse_constant=_refuse_constant)
    except _NumberTooLong:
        raise InvalidRequest(f"body: an integer longer than {MAX_INTEGER_DIGITS} digits") from None
    except _NotJson as exc:
        raise InvalidRequest(f"body: {exc} is not a JSON value") from None
    except UnicodeDecodeError:
        raise InvalidRequest("body: not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"body: malformed JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise InvalidRequest("body: JSON nested too deeply") from None
    except ValueError:  # any other conversion limit of the parser: still the client's input
        raise InvalidRequest("body: a value that cannot be read") from None
