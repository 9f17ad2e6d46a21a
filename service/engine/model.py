"""Reading a Casbin model and deciding whether the fast evaluator understands it.

Casbin parses model.conf; this module only classifies the parsed matcher and effect. The fast
path is taken when every conjunct of the matcher is one of the shapes below (field names as in
the shipped model.conf); anything else runs through Casbin's own enforcer.

    domain:   p.dom == r.dom || p.dom == "*"      (or p.dom == r.dom)
    action:   r.act == p.act                       (either order)
    resource: keyMatch(r.obj, p.obj) | keyMatch2 | regexMatch | globMatch | r.obj == p.obj
    subject:  g(r.sub, p.sub, r.dom)
              [|| (r.owner == r.sub && g("owner", p.sub, r.dom))]

The resource term must come after the domain and action terms (Casbin stops at the first false
term, which decides when a broken pattern raises); the subject term may come before or after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import casbin

from ..errors import ConfigError

OWNER_ROLE = "owner"
DENY_OVERRIDE = "some(where (p_eft == allow)) && !some(where (p_eft == deny))"
ALLOW_OVERRIDE = "some(where (p_eft == allow))"
RESOURCE_FUNCTIONS = ("keyMatch", "keyMatch2", "regexMatch", "globMatch")
REQUEST_FIELDS = (
    ("r_sub", "r_dom", "r_obj", "r_act"),
    ("r_sub", "r_dom", "r_obj", "r_act", "r_owner"),
)
POLICY_FIELDS = ("p_sub", "p_dom", "p_obj", "p_act", "p_eft")

_DOMAIN_TERMS = {
    '(p_dom == r_dom || p_dom == "*")': True,
    '(r_dom == p_dom || p_dom == "*")': True,
    "p_dom == r_dom": False,
    "r_dom == p_dom": False,
}
_ACTION_TERMS = {"r_act == p_act", "p_act == r_act"}
_SUBJECT_TERMS = {
    "g(r_sub, p_sub, r_dom)": False,
    '(g(r_sub, p_sub, r_dom) || (r_owner == r_sub && g("owner", p_sub, r_dom)))': True,
    '(g(r_sub, p_sub, r_dom) || (r_sub == r_owner && g("owner", p_sub, r_dom)))': True,
}
_RESOURCE_TERM = re.compile(r"^(keyMatch2|keyMatch|regexMatch|globMatch)\(r_obj, p_obj\)$")


@dataclass(frozen=True)
class ModelShape:
    """What the fast evaluator needs to know about a model, or why it cannot evaluate it."""

    fast: bool
    reason: str
    resource_function: str = "keyMatch2"
    template_domain: bool = True
    owner_role: bool = False
    deny_override: bool = True
    has_owner_field: bool = False
    # Casbin evaluates the matcher left to right and stops at the first false term, so a broken
    # resource pattern raises only when the terms before it held. True: the subject term comes
    # before the resource term (only rules of the subject's roles are evaluated).
    subject_before_resource: bool = False


def load_model(path: Path | str) -> casbin.model.Model:
    """Parse model.conf with Casbin; a missing or broken file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model file not found: {path}")
    model = casbin.model.Model()
    try:
        model.load_model(str(path))
        _ = model["r"]["r"], model["p"]["p"], model["e"]["e"], model["m"]["m"]
    except Exception as exc:  # Casbin raises bare exceptions for malformed models
        raise ConfigError(f"{path}: not a usable Casbin model ({exc})") from None
    return model


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip())


def _split_conjuncts(matcher: str) -> list[str]:
    """Split at top-level `&&` (outside parentheses and quotes)."""
    terms, depth, start, quote = [], 0, 0, False
    i = 0
    while i < len(matcher):
        char = matcher[i]
        if char == '"':
            quote = not quote
        elif not quote and char == "(":
            depth += 1
        elif not quote and char == ")":
            depth -= 1
        elif not quote and depth == 0 and matcher.startswith("&&", i):
            terms.append(_normalise(matcher[start:i]))
            start = i + 2
            i += 1
        i += 1
    terms.append(_normalise(matcher[start:]))
    return terms


def classify(model: casbin.model.Model) -> ModelShape:
    """Decide whether the fast evaluator computes exactly what Casbin computes for this model."""
    request = tuple(model["r"]["r"].tokens)
    policy = tuple(model["p"]["p"].tokens)
    if request not in REQUEST_FIELDS:
        return ModelShape(
            False, f"request definition {request} is not (sub, dom, obj, act[, owner])"
        )
    if policy != POLICY_FIELDS:
        return ModelShape(False, f"policy definition {policy} is not (sub, dom, obj, act, eft)")
    if list(model["g"].keys()) != ["g"] or _normalise(model["g"]["g"].value) != "_, _, _":
        return ModelShape(False, "role definition is not a single `g = _, _, _`")
    effect = _normalise(model["e"]["e"].value)
    if effect not in (DENY_OVERRIDE, ALLOW_OVERRIDE):
        return ModelShape(False, f"policy effect {effect!r} is not allow- or deny-override")

    found: dict[str, object] = {}
    order: list[str] = []
    for term in _split_conjuncts(model["m"]["m"].value):
        if term in _DOMAIN_TERMS and "domain" not in found:
            found["domain"] = _DOMAIN_TERMS[term]
        elif term in _ACTION_TERMS and "action" not in found:
            found["action"] = True
        elif term in _SUBJECT_TERMS and "subject" not in found:
            found["subject"] = _SUBJECT_TERMS[term]
        elif term == "r_obj == p_obj" and "resource" not in found:
            found["resource"] = "equal"
        elif (match := _RESOURCE_TERM.match(term)) and "resource" not in found:
            found["resource"] = match.group(1)
        else:
            return ModelShape(False, f"matcher term {term!r} is not one the fast path knows")
        order.append(next(name for name in found if name not in order))
    missing = {"domain", "action", "subject", "resource"} - set(found)
    if missing:
        return ModelShape(False, f"matcher lacks a {', '.join(sorted(missing))} term")
    if order.index("resource") < max(order.index("domain"), order.index("action")):
        return ModelShape(
            False, "the resource term comes before the domain or action term in the matcher"
        )
    owner = bool(found["subject"])
    has_owner_field = len(request) == 5
    if owner and not has_owner_field:
        return ModelShape(False, "matcher uses r.owner but the request has no owner field")
    return ModelShape(
        True,
        "all matcher terms recognised",
        resource_function=str(found["resource"]),
        template_domain=bool(found["domain"]),
        owner_role=owner,
        deny_override=effect == DENY_OVERRIDE,
        has_owner_field=has_owner_field,
        subject_before_resource=order.index("subject") < order.index("resource"),
    )
