"""Structured logs: one JSON object per line, carrying the request id of the request being served.

    configure_logging("INFO", "json")

Log records of a request (errors, refusals, the access line) carry `request_id`, which the HTTP
layer (`rolegate.api.hooks`) sets from `X-Request-ID` (when well-formed) or generates, and echoes;
a client or gateway that sends `X-Request-ID` finds the same id in the response and in the logs.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
from datetime import UTC, datetime

REQUEST_ID_HEADER = "X-Request-ID"
WORKER_HEADER = "X-Rolegate-Worker"
REVISION_HEADER = "X-Rolegate-Revision"
# Printable, header- and log-safe; long enough for UUIDs, trace ids and gateway ids.
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}")
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "rolegate_request_id", default=None
)

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged as a field.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _line_break_escapes() -> dict[int, str]:
    """Every character a log reader could take as the end of a line or a terminal command: C0/C1
    controls, DEL, and the Unicode line/paragraph separators (`str.splitlines` splits on all)."""
    codes = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
    named = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
    return {code: named.get(code, f"\\u{code:04x}") for code in codes}


_ESCAPES = _line_break_escapes()


def one_line(text: str) -> str:
    """`text` with every line-breaking or control character written as a JSON-style escape, so
    a client-chosen path or header can never start a forged log line."""
    return text.translate(_ESCAPES)


def request_id_from(header: str | None) -> str:
    """The client's request id when well-formed, else a new one (never trusts odd input)."""
    if header and VALID_REQUEST_ID.fullmatch(header):
        return header
    return os.urandom(16).hex()


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", "pid", "request_id", ...extra}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # json.dumps escapes C0 controls itself; the escapes of the others are valid JSON too.
        return one_line(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """`<time> <level> <logger> [<request id>] <message>`, one line per record (tracebacks too)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return one_line(super().format(record))


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(record, "request_id", None) or request_id_var.get() or "-"
        return True


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send every log record to stderr as JSON lines (or plain text with the request id)."""
    if fmt not in LOG_FORMATS:
        from .errors import ConfigError

        raise ConfigError(
            f"ROLEGATE_LOG_FORMAT: expected one of {', '.join(LOG_FORMATS)}, got {fmt!r}"
        )
    if level.upper() not in LOG_LEVELS:
        from .errors import ConfigError

        raise ConfigError(
            f"ROLEGATE_LOG_LEVEL: expected one of {', '.join(LOG_LEVELS)}, got {level!r}"
        )
    handler = logging.StreamHandler(sys.stderr)
    handler._rolegate = True  # type: ignore[attr-defined]
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.addFilter(_RequestIdFilter())
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not getattr(h, "_rolegate", False)] + [handler]
    root.setLevel(level.upper())
