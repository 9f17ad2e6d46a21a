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


def json_body() -> Any:
    """The request's JSON document; 415 unless JSON, 400 when malformed, 413 when too large."""
    if not request.is_json:
        raise UnsupportedMediaType("expected a JSON body (Content-Type: application/json)")
    raw = request.get_data(cache=True)
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise InvalidRequest("body: not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"body: malformed JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise InvalidRequest("body: JSON nested too deeply") from None
