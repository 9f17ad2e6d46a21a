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

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import casbin
from simpleeval import InvalidExpression  # type: ignore[import-untyped]

from ..errors import ConfigError

OWNER_ROLE = "owner"
# Casbin's effects by the names its documentation gives them (the text must match exactly).
ALLOW_AND_DENY = "some(where (p_eft == allow)) && !some(where (p_eft == deny))"
ALLOW_OVERRIDE = "some(where (p_eft == allow))"
EFFECT_NAMES = {
    ALLOW_OVERRIDE: "allow-override",
    "!some(where (p_eft == deny))": "deny-override",
    ALLOW_AND_DENY: "allow-and-deny",
    "priority(p_eft) || deny": "priority",
    "subjectPriority(p_eft) || deny": "subject-priority",
}
DENY_OVERRIDE = ALLOW_AND_DENY  # the fast path's deny rule overrides allow (Casbin: allow-and-deny)
RESOURCE_FUNCTIONS = ("keyMatch", "keyMatch2", "regexMatch", "globMatch")
# What Rolegate sends for each request field, by name.
REQUEST_VALUES = ("sub", "dom", "obj", "act", "owner")
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
    # For Casbin's own enforcer (models the fast path does not serve):
    request_fields: tuple[str, ...] = ("sub", "dom", "obj", "act", "owner")
    has_roles: bool = True  # the model has a role definition (`g`)
    # Evaluating only the rules of the request's org, `*` and the pattern domains that match it
    # gives exactly Casbin's answer (see `_org_scoped`); otherwise every rule is evaluated.
    org_scoped: bool = True
    effect: str = "allow-and-deny"


def load_model(path: Path | str) -> casbin.model.Model:
    """Parse model.conf with Casbin; a file Casbin cannot use, or whose requests Rolegate
    cannot fill, is a ConfigError (refused at start, never a failure on the first check)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model file not found: {path}")
    model = casbin.model.Model()
    try:
        model.load_model(str(path))
        _ = model["r"]["r"], model["p"]["p"], model["e"]["e"], model["m"]["m"]
    except Exception as exc:  # Casbin raises bare exceptions for malformed models
        raise ConfigError(f"{path}: not a usable Casbin model ({exc})") from None
    unknown = [token for token in model["r"]["r"].tokens if token[2:] not in REQUEST_VALUES]
    if unknown:
        names = ", ".join(token[2:] for token in unknown)
        raise ConfigError(
            f"{path}: request field(s) {names} unknown; Rolegate sends sub, dom, obj, act "
            "and owner (by name, in any order)"
        )
    problem = _casbin_refusal(path, model)
    if problem is not None:
        raise ConfigError(f"{path}: Casbin refuses this model ({problem})")
    return model


def _casbin_refusal(path: Path, model: casbin.model.Model) -> str | None:
    """Why Casbin's own enforcer cannot decide with this model (None: it can)."""
    effect = model["e"]["e"].value
    if effect not in EFFECT_NAMES:
        return f"unsupported policy effect {effect.replace('_', '.')!r}"
    try:
        enforcer = casbin.Enforcer(str(path))
    except Exception as exc:
        return str(exc) or type(exc).__name__
    try:
        enforcer.enforce(*("" for _ in model["r"]["r"].tokens))
    except (InvalidExpression, SyntaxError, RuntimeError) as exc:
        # unknown functions or names, a matcher that is no expression, a non-boolean result
        return str(exc) or type(exc).__name__
    except Exception:  # noqa: S110 - a function refusing empty values (ipMatch) is no refusal
        pass
    return None


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


_EQUALITY = re.compile(r"^[rp]_\w+ == [rp]_\w+$")
_G_CALL = re.compile(r"\bg\(([^()]*)\)")


def _role_definitions(model: casbin.model.Model) -> dict[str, str]:
    if "g" not in model.model:
        return {}
    return {key: _normalise(assertion.value) for key, assertion in model["g"].items()}


def _org_scoped(model: casbin.model.Model, request: tuple[str, ...], effect: str) -> bool:
    """Whether only the rules of the request's org, of `*` and of the pattern domains whose
    links apply there can change Casbin's answer.

    Provably so when: `p`'s second field is the domain (rules are filed by it), links are
    `g = _, _, _` (or absent) and every `g(...)` call passes `r.dom` (Casbin then reads only the
    links of domains its keyMatch maps onto the org), and a top-level conjunct `p.dom == r.dom`
    (or with `|| p.dom == "*"`) comes before any term that could raise (rules of other domains
    are then never evaluated further), and the effect does not rank rules across domains.
    """
    roles = _role_definitions(model)
    if roles not in ({}, {"g": "_, _, _"}) or "r_dom" not in request:
        return False
    if tuple(model["p"]["p"].tokens)[1:2] != ("p_dom",) or effect == "subject-priority":
        return False
    matcher = _normalise(model["m"]["m"].value)
    for call in _G_CALL.finditer(matcher):
        arguments = [argument.strip() for argument in call.group(1).split(",")]
        if len(arguments) != 3 or arguments[2] != "r_dom":
            return False
    if re.search(r"\bg\(", matcher) and not _G_CALL.search(matcher):
        return False  # g( with nested calls: not read here
    for term in _split_conjuncts(model["m"]["m"].value):
        if term in _DOMAIN_TERMS:
            return True
        if not _EQUALITY.match(term):
            return False
    return False


def classify(model: casbin.model.Model) -> ModelShape:
    """Decide whether the fast evaluator computes exactly what Casbin computes for this model."""
    request = tuple(model["r"]["r"].tokens)
    policy = tuple(model["p"]["p"].tokens)
    effect = EFFECT_NAMES.get(model["e"]["e"].value, "unsupported")
    roles = _role_definitions(model)
    casbin_shape = ModelShape(
        False,
        "",
        request_fields=tuple(token[2:] for token in request),
        has_roles=bool(roles),
        org_scoped=_org_scoped(model, request, effect),
        effect=effect,
    )

    def served_by_casbin(reason: str) -> ModelShape:
        return dataclasses.replace(casbin_shape, reason=reason)

    if request not in REQUEST_FIELDS:
        return served_by_casbin(
            f"request definition {request} is not (sub, dom, obj, act[, owner])"
        )
    if policy != POLICY_FIELDS:
        return served_by_casbin(f"policy definition {policy} is not (sub, dom, obj, act, eft)")
    if not roles:
        return served_by_casbin("the model has no role definition")
    if roles != {"g": "_, _, _"}:
        return served_by_casbin("role definition is not a single `g = _, _, _`")
    if effect not in ("allow-override", "allow-and-deny"):
        return served_by_casbin(
            f"policy effect {effect} (`{model['e']['e'].value.replace('_', '.')}`): the fast "
            "path evaluates allow-override and allow-and-deny"
        )

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
            return served_by_casbin(f"matcher term {term!r} is not one the fast path knows")
        order.append(next(name for name in found if name not in order))
    missing = {"domain", "action", "subject", "resource"} - set(found)
    if missing:
        return served_by_casbin(f"matcher lacks a {', '.join(sorted(missing))} term")
    if order.index("resource") < max(order.index("domain"), order.index("action")):
        return served_by_casbin(
            "the resource term comes before the domain or action term in the matcher"
        )
    owner = bool(found["subject"])
    has_owner_field = len(request) == 5
    if owner and not has_owner_field:
        return served_by_casbin("matcher uses r.owner but the request has no owner field")
    return dataclasses.replace(
        casbin_shape,
        fast=True,
        reason=f"policy effect {effect}, every matcher term recognised",
        resource_function=str(found["resource"]),
        template_domain=bool(found["domain"]),
        owner_role=owner,
        deny_override=effect == "allow-and-deny",
        has_owner_field=has_owner_field,
        subject_before_resource=order.index("subject") < order.index("resource"),
    )
