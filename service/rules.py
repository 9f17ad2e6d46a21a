"""Rules as plain tuples, shared by the engine, the store and the policy tools.

A rule is `(ptype, v0, v1, ...)` exactly as Casbin stores it:
- `("p", subject_or_role, org_or_star, resource_pattern, action, "allow" | "deny")`
- `("g", user_or_role, role, org_or_star)`
Tuples keep millions of rules small and hashable; these helpers give the positions names.
"""

from __future__ import annotations

from collections.abc import Iterable

Rule = tuple[str, ...]

TEMPLATE_DOMAIN = "*"
POLICY_FIELDS = ("subject", "org", "resource", "action", "effect")
GROUPING_FIELDS = ("member", "role", "org")
FIELDS_BY_PTYPE = {"p": POLICY_FIELDS, "g": GROUPING_FIELDS}
EFFECTS = ("allow", "deny")


def rule_domain(rule: Rule) -> str:
    """The org (domain) a rule belongs to: `*` for templates."""
    if rule[0] == "p":
        return rule[2]
    if rule[0] == "g":
        return rule[3]
    raise ValueError(f"unknown rule type {rule[0]!r}")


def format_rule(rule: Rule) -> str:
    """Casbin's line form: `p, editor, *, /projects/*, update, allow`."""
    return ", ".join(rule)


def sort_key(rule: Rule) -> tuple:
    """Canonical order: by org (templates first), then g before p, then values."""
    domain = rule_domain(rule)
    return (domain != TEMPLATE_DOMAIN, domain, rule[0] != "g", rule[1:])


def domains_of(rules: Iterable[Rule]) -> set[str]:
    return {rule_domain(rule) for rule in rules}
