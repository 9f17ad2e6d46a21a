"""Engine inputs and outputs: plain immutable values, no transport."""

from __future__ import annotations

from dataclasses import dataclass

from ..rules import Rule, format_rule


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """May `subject` do `action` on `resource` in `org`? `owner` is the resource's owner id."""

    subject: str
    org: str
    resource: str
    action: str
    owner: str = ""
    extra_roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer and why: the rule that decided and the role path from the subject to it.

    `rule` is the deny rule that fired, or for an allow the matching rule reached by the shortest
    role path; None when no rule matched (or when evaluation failed, see `error`).
    """

    allowed: bool
    revision: int
    rule: Rule | None = None
    path: tuple[str, ...] = ()
    error: str | None = None

    @property
    def reason(self) -> dict:
        """JSON-ready explanation."""
        if self.error:
            return {"summary": "denied: the policy could not be evaluated", "error": self.error}
        if self.rule is None:
            return {"summary": "no rule matched"}
        verb = "allowed" if self.allowed else "denied"
        return {
            "summary": f"{verb} by {format_rule(self.rule)}",
            "rule": format_rule(self.rule),
            "effect": self.rule[5] if self.rule[0] == "p" and len(self.rule) > 5 else None,
            "path": " -> ".join(self.path),
        }
