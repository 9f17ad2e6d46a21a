"""The original request behind a gateway: which resource path it names, which action it means.

Pure functions shared by the forward-auth endpoint and the Flask extension:

    request_path("/docs/a/%2e%2e//b?x=1")        # "/docs/b"
    action_for("PATCH", method_actions(()))       # "update"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote_to_bytes

from .errors import Forbidden, InvalidRequest

DEFAULT_METHOD_ACTIONS: Mapping[str, str] = {
    "GET": "read",
    "HEAD": "read",
    "POST": "create",
    "PUT": "update",
    "PATCH": "update",
    "DELETE": "delete",
}
DOT_SEGMENTS = (".", "..")
# Header values stay printable ASCII: anything else (and "%" itself) is percent-encoded UTF-8.
_HEADER_SAFE = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) != "%")


def method_actions(overrides: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The default method → action map with `overrides` (METHOD, action) applied."""
    return {**DEFAULT_METHOD_ACTIONS, **{method.upper(): action for method, action in overrides}}


def action_for(method: str, actions: Mapping[str, str]) -> str:
    """The action a request method means; a method with no action is refused (403)."""
    action = actions.get(method.upper())
    if action is None:
        raise Forbidden(
            f"no action is mapped to the method {method!r} (see ROLEGATE_FORWARD_AUTH_ACTIONS)",
            code="unmapped_method",
        )
    return action


def request_path(target: str) -> str:
    """The path of a raw request target: query dropped, percent-decoded once, dots resolved.

    `target` is as a WSGI server or header hands it over (latin-1 code points for bytes).
    """
    if not target.startswith("/"):
        raise InvalidRequest("the forwarded URI must be a path starting with '/'")
    path = target.partition("?")[0].partition("#")[0]
    try:
        decoded = unquote_to_bytes(path.encode("latin-1")).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise InvalidRequest("the forwarded URI is not UTF-8 once percent-decoded") from None
    return resolve_path(decoded)


def resolve_path(path: str) -> str:
    """Drop `;` path parameters, merge repeated slashes, resolve `.` and `..` (not above root).

    `/a;x/b` is `/a/b` and `..;x` is `..`, as Tomcat, Jetty and Spring read them: a deny rule on
    `/a/*` cannot be stepped around with `/a;x/...` in front of such an upstream.
    """
    segments = [segment.partition(";")[0] for segment in path.split("/")[1:]]
    resolved: list[str] = []
    for segment in segments:
        if segment == "..":
            if resolved:
                resolved.pop()
        elif segment not in ("", "."):
            resolved.append(segment)
    result = "/" + "/".join(resolved)
    if resolved and segments[-1] in ("", *DOT_SEGMENTS):
        result += "/"
    return result


def mounted(path: str, strip_prefix: str, mount: str) -> str:
    """`path` without `strip_prefix` (a path outside it is refused), then under `mount`."""
    if strip_prefix:
        if path == strip_prefix:
            path = "/"
        elif path.startswith(strip_prefix + "/"):
            path = path[len(strip_prefix) :]
        else:
            raise Forbidden(
                f"{path!r} is outside ROLEGATE_FORWARD_AUTH_STRIP_PREFIX ({strip_prefix!r})",
                code="outside_prefix",
            )
    return mount + path if mount else path


def header_value(text: str) -> str:
    """`text` as a header value: printable ASCII unchanged, anything else percent-encoded."""
    return quote(text, safe=_HEADER_SAFE)
