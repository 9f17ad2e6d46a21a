"""The OpenAPI document describes exactly the routes the application serves, and is valid 3.1."""

from __future__ import annotations

from openapi_spec_validator import validate

from rolegate.api import create_app


def served_operations(app) -> set[tuple[str, str]]:
    operations = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        path = "/".join(
            "{" + part[1:].split(":")[-1] if part.startswith("{") else part
            for part in path.split("/")
        )
        automatic = {"OPTIONS"} if getattr(rule, "provide_automatic_options", True) else set()
        for method in rule.methods - {"HEAD"} - automatic:
            operations.add((path.rstrip("/") or "/", method.lower()))
    return operations


def documented_operations(document) -> set[tuple[str, str]]:
    return {(path, method) for path, item in document["paths"].items() for method in item}


def test_document_matches_routes(core):
    app = create_app(core=core)
    document = app.test_client().get("/openapi.json").get_json()
    served = served_operations(app)
    documented = documented_operations(document)
    assert served - documented == set(), "routes missing from /openapi.json"
    assert documented - served == set(), "documented routes that do not exist"


def test_document_is_valid_openapi_31(core):
    document = create_app(core=core).test_client().get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    validate(document)


def _concrete(path: str) -> str:
    return path.replace("{org}", "acme").replace("{subject}", "bob").replace("{path}", "x")


def test_every_405_carries_the_documented_methods_in_allow(core):
    app = create_app(core=core)
    client = app.test_client()
    document = client.get("/openapi.json").get_json()
    for path, item in document["paths"].items():
        url = _concrete(path.replace("{key_id}", "0123456789abcdef"))
        documented = {method.upper() for method in item} | {"OPTIONS"}
        if "GET" in documented:
            documented.add("HEAD")
        undeclared = "TRACE" if "PATCH" in documented else "PATCH"
        response = client.open(url, method=undeclared)
        assert response.status_code == 405, (path, response.status_code)
        assert response.get_json()["error"]["code"] == "method_not_allowed"
        assert set(response.headers["Allow"].split(", ")) == documented, path
        if "options" not in item:  # forward-auth decides OPTIONS like any proxied method
            options = client.open(url, method="OPTIONS")
            assert set(options.headers["Allow"].split(", ")) == documented, path


def test_bulk_does_not_collide_with_a_member_route(core):
    client = create_app(core=core).test_client()
    options = client.open("/v1/orgs/acme/members/bulk", method="OPTIONS")
    assert set(options.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    put = client.put("/v1/orgs/acme/members/bulk", json={"roles": ["viewer"]})
    assert put.status_code == 405 and put.headers["Allow"] == "OPTIONS, POST"


def test_security_schemes_and_constraints_are_declared(core):
    document = create_app(core=core).test_client().get("/openapi.json").get_json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "type": "http", "scheme": "ApiKey"}
    assert schemes["apikey"]["name"] == "X-API-Key"
    check = document["components"]["schemas"]["Check"]
    assert check["additionalProperties"] is False
    assert check["properties"]["resource"]["minLength"] == 1
    assert check["properties"]["org"]["pattern"] == r"^(?!roles$)[a-z0-9][a-z0-9_-]{0,62}$"
    member = document["paths"]["/v1/orgs/{org}/members/{subject}"]["put"]
    subject = next(p for p in member["parameters"] if p["name"] == "subject")["schema"]
    assert subject["maxLength"] == 255
    console = document["paths"]["/console/orgs/{org}"]["get"]["responses"]
    assert "400" in console


def test_patterns_agree_with_the_server_validators():
    import re

    from rolegate.admin import check_subject
    from rolegate.api.openapi import subject_schema, text_schema
    from rolegate.core import validate_text
    from rolegate.errors import InvalidRequest

    def accepted(check, value) -> bool:
        try:
            check(value)
        except InvalidRequest:
            return False
        return True

    text = re.compile(text_schema()["pattern"])
    subject = re.compile(subject_schema()["pattern"])
    for value in [
        "bob", "team/ops", "a b", "a #b", "a#b", "#a", " a", "a ", "a,b", 'a"b', "a(b", "a[b",
        "a\u200bb", "a\tb", "a\x7fb", "a\u0085b", "*", "apikey:x", "ü", "a\u00a0b", "日本",
    ]:  # fmt: skip
        assert bool(text.search(value)) == accepted(lambda v: validate_text(v, "x"), value), value
        if value != "*":  # `*` passes this check, and is refused as a role name (subject_is_role)
            assert bool(subject.search(value)) == accepted(check_subject, value), value
    assert not subject.search("*")
