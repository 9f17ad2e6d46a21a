"""Decision replay: re-decide recorded decisions with a candidate policy, report what flips.

Pure and streaming: `replay` reads the records one at a time (any iterable of decoded decision
log records) and keeps only counters and, per flip group, a few examples, so a million records
replay in bounded memory. Deciding is the engine's (`reads.decide`); this module only compares.

A record is replayed when it is format `v` 2 with every field of the check input (subject, org,
resource, action, owner, token_roles, default_role) and the recorded answer (allowed, rule).
Anything else is refused and counted by reason (`older_format`, `newer_format`, `incomplete`,
`unreadable`), never guessed at: an older record lacks the owner and the token roles, so its
decision cannot be reproduced. Shadow records (`shadow: true`) are not decisions and are skipped.

Flips are grouped by (direction, org, who, action, pattern): `grant` (recorded deny, candidate
allow) groups by the candidate's allowing rule, `revoke` (recorded allow, candidate deny) by the
candidate's deny rule when one decided, else by the recorded allowing rule that no longer
grants. `who` and `pattern` are that rule's subject (a role or a subject) and resource pattern.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..apikeys import SUBJECT_PREFIX as API_KEY_PREFIX
from ..audit.decision_log import FORMAT_VERSION
from ..core import role_subject_problem
from ..engine import CheckRequest, Decision, Engine, reads
from ..rules import Rule, format_rule

DIRECTIONS = ("grant", "revoke")
FAIL_ON = ("flip", "grant", "revoke")
MAX_EXAMPLES = 3
REFUSAL_REASONS = ("older_format", "newer_format", "incomplete", "unreadable")
_TEXT_FIELDS = ("subject", "org", "resource", "action", "owner")


@dataclass(frozen=True, slots=True)
class Recorded:
    """One replayable record: the check input and the recorded answer."""

    request: CheckRequest
    default_role: str | None
    allowed: bool
    rule: str | None
    time: str | None
    decision_id: str | None


class Refused(ValueError):
    """A record replay cannot re-decide faithfully; `reason` is one of REFUSAL_REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _is_mapping(value: Any) -> bool:
    return type(value) is dict or isinstance(value, Mapping)  # decoded JSON: the fast test


def parse_record(record: Any) -> Recorded:
    """The replayable form of a decoded record; raises Refused (with a reason) otherwise."""
    if not _is_mapping(record):
        raise Refused("unreadable", "not a JSON object")
    version = record.get("v")
    if version is None or (isinstance(version, int) and version < FORMAT_VERSION):
        raise Refused("older_format", f"format {version or 1}: no owner and token roles")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise Refused("newer_format", f"format {version!r} is newer than this Rolegate")
    for name in _TEXT_FIELDS:
        if not isinstance(record.get(name), str):
            raise Refused("incomplete", f"{name}: missing")
    roles = record.get("token_roles")
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise Refused("incomplete", "token_roles: missing")
    default_role = record.get("default_role", ...)
    if default_role is not None and not isinstance(default_role, str):
        raise Refused("incomplete", "default_role: missing")
    allowed = record.get("allowed")
    if not isinstance(allowed, bool):
        raise Refused("incomplete", "allowed: missing")
    rule = record.get("rule")
    return Recorded(
        request=CheckRequest(
            subject=record["subject"],
            org=record["org"],
            resource=record["resource"],
            action=record["action"],
            owner=record["owner"],
            extra_roles=tuple(roles),
        ),
        default_role=default_role,
        allowed=allowed,
        rule=rule if isinstance(rule, str) else None,
        time=record.get("time") if isinstance(record.get("time"), str) else None,
        decision_id=record.get("decision_id")
        if isinstance(record.get("decision_id"), str)
        else None,
    )


# --------------------------------------------------------------------------- the report


GroupKey = tuple[str, str, str, str, str]  # direction, org, who, action, pattern


@dataclass
class FlipGroup:
    """Flips sharing (direction, org, who, action, pattern), with the first few examples."""

    direction: str
    org: str
    who: str
    action: str
    pattern: str
    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "org": self.org,
            "who": self.who,
            "action": self.action,
            "pattern": self.pattern,
            "count": self.count,
            "examples": self.examples,
        }


@dataclass
class ReplayReport:
    """Counters and flip groups of one replay."""

    candidate: str = ""
    read: int = 0
    replayed: int = 0
    unchanged: int = 0
    shadow_skipped: int = 0
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REFUSAL_REASONS, 0))
    groups: dict[GroupKey, FlipGroup] = field(default_factory=dict)

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())

    def flips(self, direction: str | None = None) -> int:
        return sum(
            group.count
            for group in self.groups.values()
            if direction is None or group.direction == direction
        )

    def fails(self, fail_on: str | None) -> bool:
        """Whether `--fail-on` (flip, grant, revoke) is met."""
        if fail_on is None:
            return False
        return self.flips(None if fail_on == "flip" else fail_on) > 0

    def sorted_groups(self) -> list[FlipGroup]:
        """Largest groups first, then by key (deterministic)."""
        return sorted(
            self.groups.values(),
            key=lambda g: (-g.count, g.direction, g.org, g.who, g.action, g.pattern),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "read": self.read,
            "replayed": self.replayed,
            "unchanged": self.unchanged,
            "flips": {"total": self.flips(), **{d: self.flips(d) for d in DIRECTIONS}},
            "refused": {"total": self.refused_total, **self.refused},
            "shadow_skipped": self.shadow_skipped,
            "groups": [group.to_dict() for group in self.sorted_groups()],
        }


# --------------------------------------------------------------------------- replaying


def _rule_fields(text: str | None) -> tuple[str, str] | None:
    """(subject, resource) of a `p` rule in line form; None when it is not one."""
    if not text:
        return None
    parts = [part.strip() for part in text.split(",")]
    return (parts[1], parts[3]) if len(parts) == 6 and parts[0] == "p" else None


def flip_key(recorded: Recorded, candidate: Decision) -> GroupKey:
    """The group of a flip (see the module doc)."""
    request = recorded.request
    if candidate.allowed:
        direction, deciding = "grant", _rule_text(candidate.rule)
    else:
        direction = "revoke"
        denied_by = candidate.rule if candidate.rule and candidate.rule[-1] == "deny" else None
        deciding = _rule_text(denied_by) if denied_by else recorded.rule
    fields = _rule_fields(deciding) or (request.subject, request.resource)
    return (direction, request.org, fields[0], request.action, fields[1])


def _rule_text(rule: Rule | None) -> str | None:
    return format_rule(rule) if rule else None


def _example(recorded: Recorded, candidate: Decision) -> dict[str, Any]:
    request = recorded.request
    return {
        "time": recorded.time,
        "decision_id": recorded.decision_id,
        "subject": request.subject,
        "resource": request.resource,
        "owner": request.owner or None,
        "token_roles": list(request.extra_roles),
        "recorded": {"allowed": recorded.allowed, "rule": recorded.rule},
        "candidate": {
            "allowed": candidate.allowed,
            "rule": _rule_text(candidate.rule),
            "path": " -> ".join(candidate.path) or None,
            "error": candidate.error,
        },
    }


Decide = Callable[[CheckRequest, str | None], Decision]


def candidate_decider(make_engine: Callable[[str | None], Engine]) -> Decide:
    """decide(request, default_role) with one candidate engine per default role in the log."""
    engines: dict[str | None, Engine] = {}

    def decide(request: CheckRequest, default_role: str | None) -> Decision:
        engine = engines.get(default_role)
        if engine is None:
            engine = engines[default_role] = make_engine(default_role)
        # A subject the candidate makes a role name would be refused (403), never decided.
        problem = role_subject_problem(
            engine.snapshot, request.subject, api_key=request.subject.startswith(API_KEY_PREFIX)
        )
        if problem is not None:
            return Decision(False, engine.revision, error=f"subject_is_role: {problem}")
        return reads.decide(engine, request)

    return decide


def replay(
    records: Iterable[Any],
    decide: Decide,
    *,
    candidate: str = "",
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Re-decide every record with `decide` (see `candidate_decider`); the flips, grouped.

    `records`: decoded records (a record that could not be decoded: anything not a mapping,
    counted as `unreadable`). `progress(n)` is called with the records read since its last call.
    """
    report = ReplayReport(candidate=candidate)
    pending = 0
    for record in records:
        report.read += 1
        pending += 1
        if progress is not None and pending >= 1000:
            progress(pending)
            pending = 0
        if _is_mapping(record) and record.get("shadow") is True:
            report.shadow_skipped += 1
            continue
        try:
            recorded = parse_record(record)
        except Refused as refusal:
            report.refused[refusal.reason] += 1
            continue
        decision = decide(recorded.request, recorded.default_role)
        report.replayed += 1
        if decision.allowed == recorded.allowed:
            report.unchanged += 1
            continue
        key = flip_key(recorded, decision)
        group = report.groups.get(key)
        if group is None:
            group = report.groups[key] = FlipGroup(*key)
        group.count += 1
        if len(group.examples) < MAX_EXAMPLES:
            group.examples.append(_example(recorded, decision))
    if progress is not None and pending:
        progress(pending)
    return report


# --------------------------------------------------------------------------- rendering


def _summary_lines(report: ReplayReport) -> list[str]:
    refused = report.refused_total
    lines = [
        f"Replayed {report.replayed} of {report.read} recorded decisions against "
        f"{report.candidate}: {report.flips()} flip(s) ({report.flips('grant')} grant, "
        f"{report.flips('revoke')} revoke), {report.unchanged} unchanged.",
    ]
    if refused:
        reasons = ", ".join(f"{n} {reason}" for reason, n in report.refused.items() if n)
        lines.append(
            f"Refused {refused} record(s) that cannot be re-decided faithfully ({reasons})."
        )
    if report.shadow_skipped:
        lines.append(f"Skipped {report.shadow_skipped} shadow record(s).")
    return lines


def _table_rows(report: ReplayReport) -> list[list[str]]:
    rows = []
    for group in report.sorted_groups():
        first = group.examples[0] if group.examples else {}
        rows.append(
            [
                group.direction,
                group.org,
                group.who,
                group.action,
                group.pattern,
                str(group.count),
                f"{first.get('subject')} {first.get('resource')}",
                (first.get("recorded") or {}).get("rule") or "(no rule)",
                (first.get("candidate") or {}).get("rule") or "(no rule)",
            ]
        )
    return rows


TABLE_HEADER = (
    "flip",
    "org",
    "who",
    "action",
    "pattern",
    "count",
    "example",
    "recorded rule",
    "candidate rule",
)


def render_table(report: ReplayReport) -> str:
    rows = _table_rows(report)
    lines = _summary_lines(report)
    if not rows:
        return "\n".join(lines) + "\n"
    widths = [len(name) for name in TABLE_HEADER]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

    def line(cells) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    table = [line(TABLE_HEADER), line(["-" * w for w in widths]), *map(line, rows)]
    return "\n".join([*table, "", *lines]) + "\n"


def _markdown_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "'").replace("\n", " ")


def render_markdown(report: ReplayReport) -> str:
    lines = ["## Decision replay", "", *_summary_lines(report), ""]
    rows = _table_rows(report)
    if rows:
        lines.append("| " + " | ".join(TABLE_HEADER) + " |")
        lines.append("|" + "---|" * len(TABLE_HEADER))
        lines += ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


__all__ = [
    "FAIL_ON",
    "FORMAT_VERSION",
    "FlipGroup",
    "Recorded",
    "Refused",
    "ReplayReport",
    "candidate_decider",
    "flip_key",
    "parse_record",
    "render_markdown",
    "render_table",
    "replay",
]
