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
        for method in rule.methods - {"HEAD", "OPTIONS"}:
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
