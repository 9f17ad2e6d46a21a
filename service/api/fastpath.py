"""A lean WSGI path for `POST /v1/check` and `POST /v1/check/batch`, in front of the Flask app.

    app.wsgi_app = FastPath(app, core, request_hooks)

Flask's request context, routing and response object cost about half of a single check's time
(bench/README.md, issue 12). This path answers the plain form of the two decision requests
itself and hands everything else to Flask unchanged. It calls the very functions the Flask
route and hooks call (`RequestHooks`, `Rolegate.authenticate`, `decode_json`, `check_answer` /
`batch_answer`, the error mapping of `errors`), so status, body, headers, log lines, metrics and
decision listeners are the same; tests/test_fastpath.py compares the two paths request by request.

Plain means: method `POST`, the exact path, a JSON content type from `JSON_TYPES`, a decimal
`Content-Length` of at most 9 digits, no `Transfer-Encoding`, no cookie (Flask would open a
session), a host Flask's router accepts (no `SERVER_NAME`/`TRUSTED_HOSTS`), no
listener on Flask's request signals, and an app whose hooks, error handlers, routes and JSON
provider are the ones Rolegate registered (checked once, at the first request; see
`_flask_is_stock`). The body is read after authenticating, by Werkzeug's reader with the app's
`MAX_CONTENT_LENGTH` (413 beyond it, 400 for a client gone mid-body), as the route reads it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Request, Response, signals
from flask.json.provider import DefaultJSONProvider
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_host, get_input_stream

from ..core import Rolegate
from ..errors import RolegateError
from . import decisions, errors
from .context import decode_json
from .hooks import RequestHooks

log = logging.getLogger("rolegate.api")

Answer = Callable[[Rolegate, Any, Any], dict[str, Any]]

# path -> (answer function, Flask endpoint, Flask view it stands in for)
ROUTES: dict[str, tuple[Answer, str, Callable[..., Any]]] = {
    "/v1/check": (decisions.check_answer, "decisions.check", decisions.check),
    "/v1/check/batch": (decisions.batch_answer, "decisions.check_batch", decisions.check_batch),
}
# Content types Flask's `request.is_json` accepts, in their common spellings; others go to Flask.
JSON_TYPES = frozenset(
    {
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=utf-8",
        "application/json; charset=UTF-8",
        "application/json;charset=UTF-8",
    }
)
MAX_LENGTH_DIGITS = 9
MAX_REMEMBERED_HOSTS = 64
_SIGNALS = (
    signals.request_started,
    signals.request_finished,
    signals.request_tearing_down,
    signals.got_request_exception,
    signals.appcontext_pushed,
    signals.appcontext_popped,
    signals.appcontext_tearing_down,
)
_STATUS_LINES: dict[int, str] = {}


def status_line(status: int) -> str:
    """Werkzeug's status line (`400 BAD REQUEST`)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        phrase = HTTP_STATUS_CODES.get(status, "UNKNOWN").upper()
        line = _STATUS_LINES[status] = f"{status} {phrase}"
    return line


class FastPath:
    """WSGI middleware: the decision endpoints answered without Flask, the rest by Flask."""

    def __init__(self, app: Flask, core: Rolegate, hooks: RequestHooks):
        self.flask_app = app
        self.next_app = app.wsgi_app
        self.core = core
        self.hooks = hooks
        self.active: bool | None = None  # decided at the first request (hooks are final then)
        self._routable_hosts: set[str] = set()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        route = ROUTES.get(environ.get("PATH_INFO", ""))
        if route is None or environ.get("REQUEST_METHOD") != "POST":
            return self.next_app(environ, start_response)
        if not self._plain(environ):
            return self.next_app(environ, start_response)
        return self._answer(route, environ, start_response)

    # -- deciding whether the request is plain ---------------------------------------------

    def _plain(self, environ: dict[str, Any]) -> bool:
        """Whether this path may answer the request (else Flask does)."""
        if environ.get("CONTENT_TYPE") not in JSON_TYPES:
            return False
        declared = environ.get("CONTENT_LENGTH", "")
        if not (declared.isascii() and declared.isdigit() and len(declared) <= MAX_LENGTH_DIGITS):
            return False
        if "HTTP_TRANSFER_ENCODING" in environ or "HTTP_COOKIE" in environ:
            return False
        app = self.flask_app
        config = app.config
        if config.get("SERVER_NAME") or config.get("TRUSTED_HOSTS") is not None:
            return False
        if type(app.json) is not DefaultJSONProvider or not self._host_routable(environ):
            return False
        if any(signal.receivers for signal in _SIGNALS):
            return False  # someone listens to Flask's request signals (an APM agent, a test)
        if self.active is None:
            self.active = _flask_is_stock(app, self.hooks)
            app._got_first_request = True  # as Flask would set it
        return self.active

    def _host_routable(self, environ: dict[str, Any]) -> bool:
        """Whether Flask's URL adapter accepts the request's host: Werkzeug's `Map.bind` refuses
        a name IDNA cannot encode (400). Hosts seen to pass are remembered (a few)."""
        header = environ.get("HTTP_HOST")
        if header is not None and header in self._routable_hosts:
            return True
        try:
            name = get_host(environ).lower().partition(":")[0]
            name.encode("idna").decode("ascii")
        except Exception:
            return False
        if header is not None and len(self._routable_hosts) < MAX_REMEMBERED_HOSTS:
            self._routable_hosts.add(header)
        return True

    # -- answering --------------------------------------------------------------------------

    def _answer(self, route, environ, start_response) -> list[bytes]:
        answer, endpoint, _view = route
        hooks = self.hooks
        request_id, id_token, audit_token, started = hooks.begin(
            environ.get("HTTP_X_REQUEST_ID"), environ.get("REMOTE_ADDR")
        )
        try:
            challenge = None
            try:
                principal = self.core.authenticate(
                    environ.get("HTTP_AUTHORIZATION"), environ.get("HTTP_X_API_KEY")
                )
                # Werkzeug's own reader, after authenticating as the route does: an
                # unauthenticated client that stalls in its body holds no thread.
                limit = self.flask_app.config["MAX_CONTENT_LENGTH"]
                raw = get_input_stream(environ, max_content_length=limit).read()
                document = answer(self.core, principal, decode_json(raw))
                status = 200
            except RolegateError as error:
                status, code, message = errors.refusal(error)
                document = errors.error_document(code, message)
                challenge = errors.challenge_for(status, code)
            except HTTPException as error:  # the body: 413 too large, 400 client gone
                status, code, message = errors.http_refusal(error)
                document = errors.error_document(code, message)
            except Exception:
                status, code, message = errors.unexpected()
                document = errors.error_document(code, message)
            body = self._encode(document)
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            if challenge is not None:
                headers.append(("WWW-Authenticate", challenge))
            seconds = time.perf_counter() - started
            headers.extend(hooks.headers(request_id))
            hooks.record("POST", environ["PATH_INFO"], endpoint, status, challenge or "", seconds)
        finally:
            hooks.end(id_token, audit_token)
        start_response(status_line(status), headers)
        return [body]

    def _encode(self, document: dict[str, Any]) -> bytes:
        """`DefaultJSONProvider.response`'s text: compact unless debug, one newline."""
        provider = self.flask_app.json
        compact = getattr(provider, "compact", None)  # DefaultJSONProvider's attribute
        if (compact is None and self.flask_app.debug) or compact is False:
            text = provider.dumps(document, indent=2)
        else:
            text = provider.dumps(document, separators=(",", ":"))
        return f"{text}\n".encode()


def _nonempty(table: dict) -> dict:
    return {key: value for key, value in table.items() if value}


def _flask_is_stock(app: Flask, hooks: RequestHooks) -> bool:
    """True when Flask would do nothing for the decision routes beyond what this path does:
    only Rolegate's hooks and error handlers, the stock request/response/session classes, and
    the decision URLs routed to the decision views."""
    begin, finish, end = hooks.flask_hooks
    handlers = {
        (blueprint, code, kind): handler
        for blueprint, by_code in app.error_handler_spec.items()
        for code, by_kind in by_code.items()
        for kind, handler in by_kind.items()
    }
    expected = {(None, None, kind) for kind in (RolegateError, HTTPException, Exception)}
    checks = {
        "before_request": _nonempty(app.before_request_funcs) == {None: [begin]},
        "after_request": _nonempty(app.after_request_funcs) == {None: [finish]},
        "teardown_request": _nonempty(app.teardown_request_funcs) == {None: [end]},
        "url_value_preprocessors": not _nonempty(app.url_value_preprocessors),
        "error handlers": set(handlers) == expected
        and all(handler.__module__ == errors.__name__ for handler in handlers.values()),
        "classes": app.request_class is Request
        and app.response_class is Response
        and type(app.session_interface) is SecureCookieSessionInterface,
        "routing": not app.url_map.host_matching and not app.subdomain_matching,
        "routes": all(
            _routed(app, path, endpoint, view) for path, (_, endpoint, view) in ROUTES.items()
        ),
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        log.warning("decision fast path off (the Flask app differs: %s)", ", ".join(failed))
    return not failed


def _routed(app: Flask, path: str, endpoint: str, view: Callable[..., Any]) -> bool:
    try:
        matched = app.url_map.bind("localhost").match(path, "POST")
    except HTTPException:
        return False
    return matched == (endpoint, {}) and app.view_functions.get(endpoint) is view
