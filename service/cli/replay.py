"""`rolegate replay CANDIDATE_DIR`: which recorded decisions would the candidate policy flip?

Reads the decision log (the `decision_log` table of the store's database, or a JSON-lines file
with `--log`) one record at a time and re-decides each with the candidate policy through the
same engine `rolegate serve` uses (`rolegate.policy.replay`). Exit 1 with `--fail-on` when a
flip of that kind exists, 2 on bad input.
"""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import click

from ..audit.decision_log import format_time
from ..config import Settings
from ..core import validate_org
from ..engine import Engine
from ..errors import ConfigError, InvalidRequest, PolicyError
from ..store.decisions import DecisionRows

FORMATS = click.Choice(["table", "json", "markdown"])
_RELATIVE = re.compile(r"^(\d+)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_when(value: str | None, name: str, *, now: datetime | None = None) -> str | None:
    """An ISO 8601 date/time or a duration ago (`7d`, `12h`, `30m`) as the log's time text."""
    if not value:
        return None
    relative = _RELATIVE.match(value.strip())
    if relative:
        ago = timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
        return format_time(((now or datetime.now(UTC)) - ago).timestamp())
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            "expected an ISO 8601 date or time, or a duration ago such as 7d, 12h or 30m",
            param_hint=name,
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return format_time(moment.timestamp())


def load_candidate(settings: Settings, directory: Path) -> Callable[[str | None], Engine]:
    """A factory of engines (one per default role) over the linted candidate directory."""
    from ..policy.lint import lint_policy_dir
    from .policy import _shape

    report = lint_policy_dir(
        directory,
        resource_function=_shape(settings).resource_function,
        default_role=settings.default_role,
    )
    if not report.ok:
        shown = "; ".join(str(issue) for issue in report.errors[:5])
        raise PolicyError(f"candidate {directory}: {report.summary()}: {shown}")
    rules = [item.rule for item in report.rules]

    def make(default_role: str | None) -> Engine:
        engine = Engine.from_model_file(settings.model_path, default_role=default_role)
        engine.load(0, rules)
        return engine

    return make


# --------------------------------------------------------------------------- record sources


def _in_range(record: Any, org: str | None, since: str | None, until: str | None) -> bool:
    if not isinstance(record, dict):
        return True  # counted as unreadable by the replay
    if org is not None and record.get("org") != org:
        return False
    at = record.get("time")
    if since is None and until is None:
        return True
    if not isinstance(at, str):
        return False
    return not ((since is not None and at < since) or (until is not None and at > until))


def file_records(path: Path, *, org, since, until, limit, progress=None) -> Iterator[Any]:
    """Decoded lines of a decision-log file (None for an undecodable line), filtered."""
    taken = 0
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the decision log: {exc.strerror}") from exc
    with handle:
        for raw in handle:
            if progress is not None:
                progress(len(raw))
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            if not _in_range(record, org, since, until):
                continue
            yield record
            taken += 1
            if limit is not None and taken >= limit:
                return


def table_count(rows: DecisionRows, *, org, since, until, limit) -> int:
    return rows.count(org=org, since=since, until=until, limit=limit)


def table_records(rows: DecisionRows, *, org, since, until, limit) -> Iterator[Any]:
    """Records of the `decision_log` table, oldest first, streamed from the database."""
    for text in rows.records(org=org, since=since, until=until, limit=limit):
        try:
            yield json.loads(text)
        except ValueError:
            yield None


def _open_log_table(settings: Settings) -> DecisionRows:
    rows = DecisionRows.open_existing(settings.database_url)
    if rows is None:
        raise ConfigError(
            "no decision_log table in the store's database: record decisions with "
            "ROLEGATE_DECISION_LOG_DB=1, or replay a log file with --log FILE"
        )
    return rows


# --------------------------------------------------------------------------- the command


def _render(report, output: str) -> str:
    from ..policy.replay import render_markdown, render_table

    if output == "json":
        return json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
    if output == "markdown":
        return render_markdown(report)
    return render_table(report)


@click.command("replay")
@click.argument(
    "candidate",
    metavar="CANDIDATE_DIR",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
)
@click.option("--org", default=None, help="Only this org's decisions.")
@click.option("--since", default=None, help="ISO 8601 time, or a duration ago (7d, 12h, 30m).")
@click.option("--until", default=None, help="ISO 8601 time, or a duration ago.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N records.")
@click.option(
    "--format", "output", type=FORMATS, default="table", show_default=True, help="Output format."
)
@click.option(
    "--fail-on",
    type=click.Choice(["flip", "grant", "revoke"]),
    default=None,
    help="Exit 1 when a decision flips (any, to allow, to deny).",
)
@click.option(
    "--log",
    "log_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A decision-log file (JSON lines) instead of the database table.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a tty].")
def replay_command(candidate, org, since, until, limit, output, fail_on, log_file, progress):
    """Re-decide recorded decisions with the policy in CANDIDATE_DIR; report what flips."""
    from ..policy.replay import candidate_decider, replay

    if org is not None:
        try:
            validate_org(org)
        except InvalidRequest as exc:
            raise click.BadParameter(exc.message, param_hint="--org") from None
    since_at, until_at = parse_when(since, "--since"), parse_when(until, "--until")
    settings = Settings.from_env()
    decide = candidate_decider(load_candidate(settings, candidate))
    show_progress = sys.stderr.isatty() if progress is None else progress
    filters = {"org": org, "since": since_at, "until": until_at, "limit": limit}
    # Not on a terminal: a hidden bar (click prints only its label, here into the void).
    bar_file: TextIO = sys.stderr if show_progress else io.StringIO()
    if log_file is not None:
        if not log_file.is_file():
            raise ConfigError(f"{log_file}: no such decision-log file")
        label = f"Replaying {log_file}"
        with click.progressbar(length=log_file.stat().st_size, label=label, file=bar_file) as bar:
            records = file_records(log_file, progress=bar.update, **filters)
            report = replay(records, decide, candidate=str(candidate))
    else:
        log_rows = _open_log_table(settings)
        try:
            length = table_count(log_rows, **filters)
            label = "Replaying the decision log"
            with click.progressbar(length=length, label=label, file=bar_file) as bar:
                records = table_records(log_rows, **filters)
                report = replay(records, decide, candidate=str(candidate), progress=bar.update)
        finally:
            log_rows.dispose()
    click.echo(_render(report, output), nl=False)
    sys.exit(1 if report.fails(fail_on) else 0)


COMMANDS = (replay_command,)
