"""One `--format table|json|csv` for every command, and the renderers behind it.

@format_option()                      # adds --format (default: table)
def command(..., output: str):
    emit(document, output)            # JSON as is; table/csv from the document's rows
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Sequence
from typing import Any

import click

FORMATS = ("table", "json", "csv")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# The first list of objects found under these keys is the table of a document.
_ROW_KEYS = ("members", "results", "api_keys", "rules", "subjects", "permissions", "decisions")


def format_option(default: str = "table", extra: Sequence[str] = (), aliases: Sequence[str] = ()):
    """`--format` with table|json|csv (plus `extra` formats; `aliases` such as the old `text`,
    accepted and read as `table`)."""
    choices = click.Choice([*FORMATS, *extra, *aliases])

    def normalise(_ctx, _param, value: str) -> str:
        return "table" if value in aliases else value

    return click.option(
        "--format",
        "output",
        type=choices,
        default=default,
        show_default=True,
        callback=normalise,
        help="Output format (`table` for people, `json`/`csv` for tools).",
    )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return " ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def render(header: Sequence[str], rows: Sequence[Sequence[Any]], output: str, document: Any) -> str:
    """`document` as JSON, or `header` + `rows` as CSV (spreadsheet-safe) or a text table."""
    if output == "json":
        return json.dumps(document, indent=2, ensure_ascii=False)
    cells = [[_cell(value) for value in row] for row in rows]
    if output == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for row in [list(header), *cells]:
            writer.writerow(["'" + c if c.startswith(_FORMULA_START) else c for c in row])
        return buffer.getvalue().rstrip("\n")
    widths = [len(name) for name in header]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(name.ljust(width) for name, width in zip(header, widths, strict=True)).rstrip(),
        "  ".join("-" * width for width in widths),
    ]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    return "\n".join(lines)


def document_table(document: Any) -> tuple[list[str], list[list[Any]]]:
    """A table for any JSON-ready document: its first list of objects, else key/value rows."""
    if isinstance(document, list) and all(isinstance(item, dict) for item in document):
        return _rows_of(document)
    if isinstance(document, dict):
        for key in _ROW_KEYS:
            items = document.get(key)
            if isinstance(items, list) and all(isinstance(item, dict) for item in items):
                return _rows_of(items)
        return ["field", "value"], [[key, value] for key, value in document.items()]
    return ["value"], [[document]]


def _rows_of(items: list[dict]) -> tuple[list[str], list[list[Any]]]:
    header: list[str] = []
    for item in items:
        header += [key for key in item if key not in header]
    return header, [[item.get(key) for key in header] for item in items]


def emit(document: Any, output: str) -> None:
    """Print `document` in `output` format (table/csv derived by `document_table`)."""
    header, rows = document_table(document) if output != "json" else ([], [])
    click.echo(render(header, rows, output, document))


def terminal_width(default: int = 100) -> int:
    return shutil.get_terminal_size((default, 24)).columns


__all__ = ["FORMATS", "document_table", "emit", "format_option", "render", "terminal_width"]
